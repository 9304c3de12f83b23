"""fp16 in the graph: weights and activations cast to float16, numerically fragile ops kept in fp32.

TensorRT 11 (and 10.x strongly typed networks) run each layer in the type the graph gives it, so this is
where fp16 is decided. A naive cast of every op overflows (attention masks of -3.4e38, sums of squares in
normalisations) or loses the small differences Softmax and exp/pow depend on: these ops stay fp32, with
Casts around them; model inputs and outputs keep their types. Float constants beyond fp16's range are
clamped to +-65504 by ONNX Runtime's converter, which does the rewriting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from kiln.errors import ExportError
from kiln.quiet import quiet

# normalisations, Softmax, reductions, exp/pow and friends: fp32 keeps them finite and accurate
FRAGILE_OPS = ("LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization",
               "RMSNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
               "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceL1",
               "ReduceLogSumExp", "ReduceProd", "ReduceMax", "ReduceMin", "Exp", "Log", "Pow", "Sqrt",
               "Reciprocal", "Erf", "CumSum", "Range")
# Control flow stays fp32 whole: the converter would put the Casts of nodes inside an If/Loop/Scan body into the
# main graph, where the body cannot see them (an invalid model). Blocked, the body keeps its types and the Casts
# go around the control-flow node itself.
CONTROL_FLOW_OPS = ("If", "Loop", "Scan")


def to_fp16(src: Path, dst: Path, keep_nodes: tuple[str, ...] = ()) -> dict:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    keep = [n.name for n in model.graph.node if n.name and any(p == n.name or p in n.name for p in keep_nodes)]
    try:
        with quiet():
            half = convert_float_to_float16(model, keep_io_types=True,
                                            op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FRAGILE_OPS) | set(CONTROL_FLOW_OPS)),
                                            node_block_list=keep)
    except Exception as exc:  # the converter raises plain exceptions on graphs it cannot type
        raise ExportError(f"fp16 conversion failed: {type(exc).__name__}: {str(exc)[:300]}",
                          hint="keep the failing node in fp32 with --keep-fp32 NAME, or use fp32") from None
    reconnect_empty_resize_parameters(half)
    onnx.save(half, str(dst))
    _check_loads(dst, half)
    kept = sorted({n.op_type for n in half.graph.node if n.op_type in FRAGILE_OPS + CONTROL_FLOW_OPS})
    counts = count_types(half)
    return {"pass": "fp16 casts", "tool": "onnxruntime.transformers.float16", "kept_fp32_ops": kept,
            "kept_fp32_nodes": keep, "casts": sum(1 for n in half.graph.node if n.op_type == "Cast"), **counts}


def _check_loads(path: Path, model: onnx.ModelProto) -> None:
    """The fp16 graph must load: the converter keeps a control-flow node's body fp32, but a body that reads tensors
    of the main graph the converter cast to fp16 sees the wrong type. Said in one line, with what to do."""
    import re

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's own exception types
        text = " ".join(str(exc).split())
        node = re.search(r"Node \(([^)]+)\) Op \((\w+)\)", text)
        flow = sorted({n.op_type for n in model.graph.node if n.op_type in CONTROL_FLOW_OPS})
        where = f"at node {node.group(1)} ({node.group(2)})" if node else ""
        why = (f": its {'/'.join(flow)} bodies read main-graph tensors that fp16 casting changed" if flow else "")
        raise ExportError(f"the fp16 graph is invalid {where}{why} ({re.sub(r'.*?failed:', '', text)[:160]})",
                          hint="use --precision fp32 for this model on this target, or keep the node in fp32 with "
                               "--keep-fp32 NAME") from None


def reconnect_empty_resize_parameters(model: onnx.ModelProto) -> int:
    """Resize's roi and scales given as empty constants (opset 11-12 converters' "not given") reach Resize through
    the converter's Casts, where shape inference can no longer see they are empty and refuses the graph ("Either
    `sizes` or `scales` must be provided"). Each is wired to an empty fp32 initializer again; returns how many."""
    from onnx import numpy_helper

    producers = {out: node for node in model.graph.node for out in node.output}
    fixed = 0
    for node in model.graph.node:
        if node.op_type != "Resize":
            continue
        for index in (1, 2):
            if index >= len(node.input) or not node.input[index]:
                continue
            source = producers.get(node.input[index])
            while source is not None and source.op_type == "Cast":
                source = producers.get(source.input[0])
            value = next((a.t for a in source.attribute if a.name == "value"), None) if source is not None and \
                source.op_type == "Constant" else None
            if value is not None and list(value.dims) == [0] and node.input[index] != source.output[0]:
                name = f"{node.input[index]}_kiln_empty"
                if name not in {i.name for i in model.graph.initializer}:
                    model.graph.initializer.append(numpy_helper.from_array(np.zeros(0, np.float32), name))
                node.input[index] = name
                fixed += 1
    return fixed


def count_types(model: onnx.ModelProto) -> dict:
    """How many weights are stored in each float type (what the engine will load)."""
    names = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}
    counts: dict[str, int] = {}
    for init in model.graph.initializer:
        if init.data_type in names:
            key = names[init.data_type]
            counts[key] = counts.get(key, 0) + 1
    return {"weights_by_type": counts}
