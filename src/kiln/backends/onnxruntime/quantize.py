"""int8 with ONNX Runtime's quantization tools, in the layout the target's int8 kernels run fastest.

- static: QDQ, per-channel symmetric int8 weights, activations calibrated on the calibration set
  (uint8 on x86: U8S8 measured 2-3x faster than S8S8 with VNNI).
- dynamic: int8 per-channel weights; activation ranges computed at run time. Embedding tables stay
  fp32 (their per-tensor int8 form cost accuracy on MiniLM for no speed).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

from kiln.calibration import Samples
from kiln.config import QuantizationPlan
from kiln.errors import ExportError, UnsupportedTargetError
from kiln.passes.calibration_ranges import cache_option, ranges_file
from kiln.passes.qdq_common import (CalibrationReader, has_external_data, keep_copy, matching_nodes,
                                     prepare_for_quantization, quantize_loadable)
from kiln.passes.opset import PER_CHANNEL_QDQ, at_least
from kiln.quiet import quiet

STATIC_OPS = ("Conv", "MatMul", "Gemm", "Add", "Mul", "Relu", "Clip", "AveragePool", "GlobalAveragePool",
              "MaxPool", "Concat", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Resize", "Sigmoid")
DYNAMIC_OPS = ("MatMul", "Attention", "Gemm", "LSTM")


def seven_bit_weights() -> bool:
    """ONNX Runtime's int8 kernels on an x86 CPU without VNNI saturate u8 x s8 pair sums at 16 bits; weights in 7 bits
    (ONNX Runtime's reduce_range, its documented remedy) keep every pair sum in range. Measured on this AMD EPYC Zen 3
    (AVX2 only): MiniLM's dynamic int8 missed its cosine 0.99 gate, and EfficientNet-Lite0's static int8 its top-1
    budget, with 8-bit weights."""
    from kiln.backends.onnxruntime.session import int8_kernels_saturate
    from kiln.targets import detect_host

    return int8_kernels_saturate(detect_host())


def quantize_dynamic_int8(src: Path, dst: Path, plan: QuantizationPlan, exclude: tuple[str, ...] = ()) -> dict:
    """`exclude`: node names kept float as well as the user's --keep-fp32 patterns (exact names, for the search)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src), load_external_data=False)
    excluded = matching_nodes(model, plan.keep_fp32)
    excluded += [name for name in exclude if name not in excluded]
    reduce = seven_bit_weights()
    try:
        with quiet():
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce,
                             op_types_to_quantize=list(DYNAMIC_OPS), nodes_to_exclude=excluded,
                             use_external_data_format=has_external_data(src),
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True})
    except Exception as exc:  # the quantizer raises bare Exceptions and assertion errors
        raise ExportError(f"dynamic int8 quantization failed: {type(exc).__name__}: {str(exc)[:300]}",
                          hint="exclude the failing node with --keep-fp32 NAME, or use fp32") from None
    return {"mode": "dynamic", "op_types": list(DYNAMIC_OPS), "per_channel": True, "weight_type": "int8",
            "reduce_range": reduce,
            "kept_fp32": excluded}


MAX_UNRANGEABLE = 8  # tensors without a usable range kept fp32 before giving up


def _consumers_of_unrangeable(exc: Exception, model_path: Path) -> list[str]:
    """The nodes reading a tensor the calibrator found no usable range for ("Unable to get valid quantization
    scale for input 'X'": constant, or infinite like an attention mask), to keep in fp32 and retry."""
    import re

    found = re.search(r"valid quantization scale for input '([^']+)'", str(exc))
    if not found:
        return []
    model = onnx.load(str(model_path), load_external_data=False)
    return [n.name for n in model.graph.node if found.group(1) in n.input and n.name]


def quantize_static_int8(src: Path, dst: Path, plan: QuantizationPlan, calibration: Samples,
                         prepared_copy: Path | None = None) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(src), load_external_data=False)
    excluded = matching_nodes(model, plan.keep_fp32)
    inputs = {i.name for i in model.graph.input}
    if not any(n.op_type in ("Conv", "MatMul", "Gemm") and n.domain in ("", "ai.onnx") for n in model.graph.node):
        found = sorted({f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in model.graph.node})[:6]
        flow = sorted({n.op_type for n in model.graph.node if n.op_type in ("If", "Loop", "Scan")})
        where = (f"its compute is inside {'/'.join(flow)} bodies, which ONNX Runtime's quantizer does not enter" if flow
                 else f"the graph has no Conv, MatMul or Gemm (its ops: {', '.join(found)})")
        raise UnsupportedTargetError(f"static int8 has nothing to quantize here: {where}",
                                     hint="use --precision fp32 for this model (or int8-dynamic where it has MatMuls)")
    activation = QuantType.QUInt8 if plan.activation_type == "uint8" else QuantType.QInt8
    with tempfile.TemporaryDirectory(prefix="kiln-quant-") as tmp:
        prepared, upgraded = Path(tmp) / "prepared.onnx", Path(tmp) / "upgraded.onnx"
        conversion = at_least(src, upgraded, PER_CHANNEL_QDQ, "per-channel int8 Q/DQ")
        with quiet():
            prepare_for_quantization(upgraded if conversion else src, prepared)
        unrangeable: list[str] = []
        kept_ranges = ranges_file(src, calibration, {"method": "minmax", "op_types": sorted(STATIC_OPS)})

        def quantize() -> None:
            while True:
                try:
                    with quiet():
                        quantize_static(
                            str(prepared), str(dst), CalibrationReader(calibration, inputs),
                            quant_format=QuantFormat.QDQ, activation_type=activation, weight_type=QuantType.QInt8,
                            per_channel=True, reduce_range=seven_bit_weights(),
                            calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(STATIC_OPS),
                            nodes_to_exclude=excluded + unrangeable, use_external_data_format=has_external_data(src),
                            extra_options={"WeightSymmetric": True,
                                           "ActivationSymmetric": activation == QuantType.QInt8,
                                           "DefaultTensorType": onnx.TensorProto.FLOAT,
                                           # a unit restored to float needs its Relu/Clip, which the quantizer would
                                           # otherwise drop where the Q after it clamps the same range
                                           "QDQKeepRemovableActivations": plan.fallback is not None},
                            **cache_option(kept_ranges, prepared, list(STATIC_OPS)))
                    return
                except Exception as exc:  # the quantizer raises bare Exceptions and assertion errors
                    consumers = _consumers_of_unrangeable(exc, prepared)
                    if not consumers or len(unrangeable) >= MAX_UNRANGEABLE:
                        raise ExportError(f"static int8 quantization failed: {type(exc).__name__}: {str(exc)[:300]}",
                                          hint="exclude the failing node with --keep-fp32 NAME, or use int8-dynamic") \
                            from None
                    unrangeable.extend(consumers)

        _, renamed = quantize_loadable(quantize, prepared, dst, "static int8 quantization",
                                       hint="keep the node it names in fp32 with --keep-fp32 NAME, or use --precision "
                                            "int8-dynamic or fp32 for this model")
        keep_copy(prepared, prepared_copy)
    return {"mode": "static", "format": "QDQ", "per_channel": True, "weight_type": "int8",
            "activation_type": plan.activation_type, "calibration_method": "MinMax",
            "calibration_samples": len(calibration), "kept_fp32": excluded,
            "kept_fp32_unquantizable": unrangeable, "opset_conversion": conversion,
            "internal_tensors_renamed": renamed}
