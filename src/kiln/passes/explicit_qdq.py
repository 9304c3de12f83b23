"""Explicit quantization for TensorRT: symmetric Q/DQ pairs where TensorRT fuses them.

TensorRT 11 has no INT8 calibrator: an int8 or fp8 engine comes from QuantizeLinear/DequantizeLinear nodes
in the graph. TensorRT wants them symmetric (zero point 0), per output channel on weights, and on the inputs
of the layers it runs in low precision (Conv, MatMul, Gemm), not around Softmax or normalisations, where
they would force precision changes it cannot fuse. Activation scales are calibrated on CPU with ONNX
Runtime over the calibration set; the resulting graph runs on ONNX Runtime too, which gives the graph's
accuracy before any GPU is involved.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import onnx

from kiln.calibration import Samples
from kiln.errors import ExportError
from kiln.passes.calibration_ranges import cache_option, ranges_file
from kiln.passes.opset import PER_CHANNEL_QDQ, at_least
from kiln.passes.qdq_common import (CalibrationReader, keep_copy, matching_nodes, prepare_for_quantization,
                                    quantize_loadable)
from kiln.passes.qdq_units import find_units, float_graph_outputs, restore_units, without_dead_nodes
from kiln.quiet import quiet
from kiln.signature import default_opset

QDQ_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# Activations TensorRT fuses into the preceding Conv: Q/DQ after them lets the int8 Conv write int8 output.
# Measured on EfficientNet-Lite0 (graph on ONNX Runtime): Q/DQ on Conv/Gemm inputs only, 34 % top-1
# agreement with fp32; with Clip (ReLU6) included, 85 %.
FUSED_ACTIVATIONS = ("Relu", "Clip")


def quantize_for_tensorrt(src: Path, dst: Path, calibration: Samples, kind: str = "int8",
                          keep_fp32: tuple[str, ...] = (), prepared_copy: Path | None = None) -> dict:
    """kind int8: int8 symmetric activations (percentile ranges) and per-channel weights; kind fp8: the same
    ranges and layout in float8 e4m3fn."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(src), load_external_data=False)
    excluded = matching_nodes(model, keep_fp32)
    inputs = {i.name for i in model.graph.input}
    # int8 amax: the 99.99th percentile of |x| (MiniLM minimum cosine 0.70 with MinMax -> 0.957;
    # EfficientNet top-1 agreement 87.5 % -> 89.3 %). fp8 reuses the same ranges, rescaled to e4m3's 448
    # (ONNX Runtime's own float8 path, calibrated by distribution, gave 9 % agreement on EfficientNet).
    op_types = list(QDQ_OPS + FUSED_ACTIVATIONS)
    kept_ranges = ranges_file(src, calibration, {"method": "percentile", "percentile": 99.99, "symmetric": True,
                                                 "op_types": op_types})
    with tempfile.TemporaryDirectory(prefix="kiln-qdq-") as tmp:
        prepared, graph = Path(tmp) / "prepared.onnx", Path(tmp) / "upgraded.onnx"
        conversion = (at_least(src, graph, 19, "float8 Q/DQ") if kind == "fp8"
                      else at_least(src, graph, PER_CHANNEL_QDQ, "per-channel int8 Q/DQ"))
        graph = graph if conversion else src
        with quiet():
            prepare_for_quantization(graph, prepared)
        prepared_model = onnx.load(str(prepared), load_external_data=False)
        excluded += activation_matmuls(prepared_model)
        slow = convs_without_fast_fp8(prepared_model) if kind == "fp8" else []
        excluded += [name for name in slow if name not in excluded]

        def quantize() -> CalibrationReader:
            reader = CalibrationReader(calibration, inputs)
            try:
                with quiet():
                    quantize_static(
                        str(prepared), str(dst), reader, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                        reduce_range=False, calibrate_method=CalibrationMethod.Percentile,
                        op_types_to_quantize=op_types, nodes_to_exclude=excluded,
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": True, "CalibPercentile": 99.99,
                                       "DefaultTensorType": onnx.TensorProto.FLOAT, "AddQDQPairToWeight": False,
                                       "QuantizeBias": False,  # TensorRT: int32 bias DQ is not accepted
                                       # and so no weight scale is raised for an int32 bias (the adjustment also
                                       # fails on a Gemm bias of shape [1, N], as skl2onnx writes it)
                                       "QDQDisableWeightAdjustForInt32Bias": True, **reader.strided(),
                                       # kept for the fallback search: a unit restored to float needs its Relu/Clip
                                       "QDQKeepRemovableActivations": prepared_copy is not None},
                        **cache_option(kept_ranges, prepared, op_types))
            except Exception as exc:  # the quantizer raises bare Exceptions and assertion errors
                raise ExportError(f"{kind} Q/DQ quantization failed: {type(exc).__name__}: {str(exc)[:300]}",
                                  hint="exclude the failing node with --keep-fp32 NAME, or use fp16") from None
            return reader

        reader, renamed = quantize_loadable(
            quantize, prepared, dst, f"{kind} Q/DQ quantization",
            hint="keep the node it names out of low precision with --keep-fp32 NAME, or use fp16")
        keep_copy(prepared, prepared_copy)
    freed = float_outputs(dst)
    quantized = onnx.load(str(dst))
    if kind == "fp8":
        int8_to_fp8(quantized)
        # excluded, they still read the Q/DQ the quantizer put on the activation before them: read it float
        quantized = restore_units(quantized, [u for u in find_units(quantized) if u.name in slow], {})
        onnx.save(quantized, str(dst))
    return {"pass": f"{kind} explicit Q/DQ", "tool": "onnxruntime.quantization (QDQ, symmetric)",
            "op_types": op_types, "weights": f"{kind} symmetric, per channel",
            "activations": f"{kind} symmetric per tensor, amax = 99.99th percentile over {len(calibration)} "
                           "calibration samples" + (" (e4m3: scale = amax / 448)" if kind == "fp8" else ""),
            "calibration_samples": len(calibration), "calibration_shapes": reader.shape_groups, "kept_fp32": excluded,
            "float_outputs": freed,
            **({"fp8_without_fast_kernels": slow} if kind == "fp8" else {}), "opset": default_opset(quantized),
            "opset_conversion": conversion, "internal_tensors_renamed": renamed, **qdq_structure(quantized)}


def float_outputs(path: Path) -> list[str]:
    """Each graph output's Q/DQ pair, in place, becomes an Identity of the float value (qdq_units.float_graph_outputs,
    as a restored unit's output does): ONNX Runtime's QDQ quantizer quantizes the outputs of
    Conv/MatMul/Gemm, and for the last one that rounds the model's own output (a classifier's logits) with nothing
    after it computing in low precision. TensorRT's placement guide says the same: Q/DQ on the inputs of weighted
    layers, not on their outputs. EfficientNet-Lite0's TensorRT fp8 graph: top-1 agreement 65.5 % -> 69.6 % plain,
    and 87.5 % -> 100 % with every unit restored (e4m3 keeps 3 mantissa bits of each logit). ONNX Runtime's own
    static int8 graph keeps the pair: on CPU it lets the last Gemm fuse into QGemm (without it, EfficientNet-Lite0
    measured 3.4 ms against 2.3 ms p50 in one run, with the same top-1). Returns the outputs freed."""
    model = onnx.load(str(path), load_external_data=False)
    freed = float_graph_outputs(model.graph)
    if freed:
        onnx.save(without_dead_nodes(model), str(path))
    return freed


# DequantizeLinear writes the type of its scale, and fp16 scales need opset 19
FP16_QDQ = 19


def rest_in_fp16(path: Path, feeds: list[dict], keep_fp32: tuple[str, ...] = (), islands: tuple[str, ...] = ()) -> dict:
    """The float part of a Q/DQ graph in fp16, rewritten in place. A strongly typed TensorRT network runs each layer
    in the type the graph gives it, so an int8 graph whose rest is fp32 runs its normalisations, activations,
    residual adds and attention in fp32 on the GPU; ModelOpt's ONNX quantizer casts the rest to fp16 for that reason
    (`high_precision_dtype`). Scales become fp16, so DequantizeLinear feeds the int8 layer fp16 and the units the
    fallback search restores run in fp16. Fragile ops, nodes beyond fp16's range on `feeds`, `keep_fp32` and the
    fp32 `islands` found by search (fallback/islands.py) stay fp32 behind Casts (`to_fp16`). A graph that cannot be converted keeps its fp32 rest, untouched, and says why."""
    from kiln.passes.half_precision import to_fp16

    with tempfile.TemporaryDirectory(prefix="kiln-qdq16-") as tmp:
        upgraded, half = Path(tmp) / "upgraded.onnx", Path(tmp) / "half.onnx"
        try:
            conversion = at_least(path, upgraded, FP16_QDQ, "fp16 Q/DQ scales")
            details = to_fp16(upgraded if conversion else path, half, keep_fp32, feeds, islands)
        except ExportError as exc:
            return {"pass": "none: the rest stays fp32", "why": str(exc)}
        shutil.move(half, path)
    return {**details, "pass": "the rest in fp16 (Q/DQ scales fp16)", "opset_conversion": conversion}


FP8_MAX = 448.0  # largest finite float8 e4m3fn


def int8_to_fp8(model: onnx.ModelProto) -> None:
    """Turn a symmetric int8 Q/DQ graph into float8 e4m3fn with the same ranges: scale * 127 / 448,
    zero points float8 zeros, weights re-rounded to e4m3 (saturating)."""
    import ml_dtypes
    import numpy as np
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    rescaled: set[str] = set()
    replace: dict[str, onnx.TensorProto] = {}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale_name = node.input[1]
        if scale_name not in rescaled:
            scale = numpy_helper.to_array(inits[scale_name]).astype(np.float32)
            if node.op_type == "DequantizeLinear" and node.input[0] in inits:  # int8 weights -> fp8 weights
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
                shape = [1] * q.ndim
                if scale.ndim:
                    shape[axis] = -1
                new_scale = scale * 127.0 / FP8_MAX
                w = np.clip(q * scale.reshape(shape) / new_scale.reshape(shape), -FP8_MAX, FP8_MAX)
                replace[node.input[0]] = numpy_helper.from_array(w.astype(ml_dtypes.float8_e4m3fn), node.input[0])
            replace[scale_name] = numpy_helper.from_array(scale * np.float32(127.0 / FP8_MAX), scale_name)
            rescaled.add(scale_name)
        if len(node.input) > 2 and node.input[2] in inits and node.input[2] not in replace:
            zero = numpy_helper.to_array(inits[node.input[2]])
            replace[node.input[2]] = numpy_helper.from_array(np.zeros(zero.shape, ml_dtypes.float8_e4m3fn),
                                                             node.input[2])
    for i, init in enumerate(model.graph.initializer):
        if init.name in replace:
            model.graph.initializer[i].CopyFrom(replace[init.name])
    for value in list(model.graph.value_info):  # int8 types recorded by shape inference are stale now
        if value.type.tensor_type.elem_type == onnx.TensorProto.INT8:
            model.graph.value_info.remove(value)


def convs_without_fast_fp8(model: onnx.ModelProto) -> list[str]:
    """Convolutions TensorRT has no fast fp8 kernels for, left without Q/DQ under fp8: grouped and depthwise ones
    (TensorRT 10.12 release notes, NVIDIA/TensorRT#4524: "no optimized FP8 Convolutions for Group Convolutions and
    Depthwise Convolutions") and an image stem of at most 4 input channels (NVIDIA/TensorRT#3987: ResNet's first
    convolution had no fp8 implementation). Quantized, they would run the same float kernel behind extra
    reformats and lose accuracy for nothing (EfficientNet-Lite0: top-1 agreement 51.8 % -> 66.7 % without them)."""
    shapes = {i.name: list(i.dims) for i in model.graph.initializer}
    slow = []
    for node in model.graph.node:
        if node.op_type != "Conv" or not node.name or len(node.input) < 2 or node.input[1] not in shapes:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        weight = shapes[node.input[1]]
        if group != 1 or (len(weight) > 1 and weight[1] <= 4):
            slow.append(node.name)
    return slow


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMuls of two activations (attention scores, probabilities x values): kept float, so no Q/DQ pair
    sits at a Softmax and attention keeps its precision."""
    weights = {i.name for i in model.graph.initializer}
    weights |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name and n.input[1] not in weights]


def qdq_structure(model: onnx.ModelProto) -> dict:
    """Where the Q/DQ pairs are: counts, quantized op types, and whether any touches a Softmax."""
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    quantized_ops: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type in QDQ_OPS and any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
                                        for i in n.input):
            quantized_ops[n.op_type] = quantized_ops.get(n.op_type, 0) + 1
    softmax_touched = sum(
        1 for n in model.graph.node if n.op_type == "Softmax" and (
            any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input)
            or any(c.op_type == "QuantizeLinear" for o in n.output for c in consumers.get(o, []))))
    return {"quantize_nodes": sum(n.op_type == "QuantizeLinear" for n in model.graph.node),
            "dequantize_nodes": sum(n.op_type == "DequantizeLinear" for n in model.graph.node),
            "quantized_ops": quantized_ops, "softmax_with_qdq": softmax_touched}
