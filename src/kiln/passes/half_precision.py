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
from kiln.passes.loadable import load_error
from kiln.passes.qdq_common import matching_nodes
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


# Ops that move or select values without arithmetic. A node kept in fp32 keeps the moves its output flows through, so
# that it hands its readers an fp32 tensor: a Relu or Transpose left in fp16 between two fp32 nodes rounds it (Basic
# Pitch's 45 arithmetic nodes all in fp32 still missed cosine 0.9975 that way).
MOVES = frozenset({"Shape", "Reshape", "Transpose", "Concat", "Slice", "Unsqueeze", "Squeeze", "Gather", "GatherND",
                   "GatherElements", "Flatten", "Expand", "Tile", "Split", "Identity", "Cast", "CastLike", "Pad",
                   "Equal", "Where", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Size",
                   "ConstantOfShape", "Constant", "DepthToSpace", "SpaceToDepth", "MaxPool", "Relu", "ArgMax",
                   "ArgMin", "TopK", "NonZero", "ScatterND", "ScatterElements", "Abs", "Neg", "Sign", "Dropout"})


# Activations beyond this stay fp32: fp16's largest finite value is 65504, and a quarter of it leaves room for
# inputs larger than the measured ones (int16-scaled audio squared in a spectrogram reaches 1e9).
FP16_SAFE = 65504.0 / 4


def out_of_range_nodes(model: onnx.ModelProto, feeds: list[dict], limit: float = FP16_SAFE) -> dict[str, float]:
    """Main-graph nodes that read or write a float tensor whose magnitude exceeds `limit` on `feeds` (measured by
    running the fp32 graph with every float tensor exposed), with that magnitude: fp16 would turn them into Inf."""
    import onnxruntime as ort
    from onnx import helper

    typed = onnx.shape_inference.infer_shapes(model)
    floats = {v.name for v in list(typed.graph.value_info) + list(typed.graph.output) + list(typed.graph.input)
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    exposed = [o for n in model.graph.node for o in n.output if o in floats]
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                              for name in exposed if name not in known)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    peak: dict[str, float] = {}
    for names, values in _probe_runs(probe, options, feeds):
        for name, value in zip(names, values):
            if name in floats and value.size:
                finite = np.abs(value[np.isfinite(value)]) if value.dtype.kind == "f" else np.abs(value)
                peak[name] = max(peak.get(name, 0.0), float(finite.max()) if finite.size else 0.0)
    for name, value in feeds[0].items() if feeds else ():
        if value.dtype.kind == "f" and value.size:
            peak[name] = max(peak.get(name, 0.0), float(np.abs(value).max()))
    flagged = {}
    for node in model.graph.node:
        big = max((peak.get(t, 0.0) for t in list(node.input) + list(node.output)), default=0.0)
        if node.name and big > limit:
            flagged[node.name] = big
    return flagged


def _probe_runs(probe: onnx.ModelProto, options, feeds: list[dict]):
    """Yields (output names, values) of the probe graph, one feed at a time; a graph ONNX Runtime cannot load or run
    is a one-line ExportError (a Q/DQ graph it refuses, seen on Basic Pitch's Transpose), never a runtime traceback."""
    import onnxruntime as ort

    from kiln.exporters.graph import ort_reason

    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        inputs = {i.name for i in session.get_inputs()}
        for feed in feeds:
            yield names, session.run(names, {k: v for k, v in feed.items() if k in inputs})
    except Exception as exc:  # ORT's own exception types
        raise ExportError(f"ONNX Runtime cannot run the graph to measure what fp16 would overflow: {ort_reason(exc)}",
                          hint="use --precision fp32 for this model on this target") from None


def name_nodes(model: onnx.ModelProto) -> None:
    """Only named nodes can be kept out of fp16: unnamed ones get `kiln_<op>_<index>`."""
    for index, node in enumerate(model.graph.node):
        node.name = node.name or f"kiln_{node.op_type}_{index}"


def blocked_ops() -> set[str]:
    """Op types the fp16 graph always keeps in fp32: the converter's own list, fragile ops, control flow."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    return set(DEFAULT_OP_BLOCK_LIST) | set(FRAGILE_OPS) | set(CONTROL_FLOW_OPS)


def fp16_groups(model: onnx.ModelProto, skip: set[str]) -> list[list[str]]:
    """The nodes the fp16 graph computes in fp16 (named by `name_nodes`; less `skip`), grouped: each node with
    arithmetic of its own, followed by the moves its output flows through (MOVES); a move with no such producer
    (reading a graph input) is a group of its own. The island search's units, and what `--keep-fp32 NAME` keeps."""
    blocked = blocked_ops()
    producers = {o: n for n in model.graph.node for o in n.output}
    group_of: dict[str, list[str]] = {}
    groups: list[list[str]] = []
    for node in model.graph.node:
        if node.op_type in blocked or node.name in skip or node.domain not in ("", "ai.onnx"):
            continue
        source = next((producers[i].name for i in node.input if i in producers and producers[i].name in group_of), None)
        if node.op_type in MOVES and source is not None:
            group_of[source].append(node.name)
            group_of[node.name] = group_of[source]
        else:
            groups.append([node.name])
            group_of[node.name] = groups[-1]
    return groups


def with_following_moves(model: onnx.ModelProto, names: set[str]) -> set[str]:
    """`names` and, for each that heads a group (fp16_groups), the moves after it: `--keep-fp32 NAME` of a unit the
    island search reports keeps the same nodes the search kept, not only the unit's first node."""
    if not names:
        return set()
    return set(names) | {n for group in fp16_groups(model, set()) if group[0] in names for n in group[1:]}


def to_fp16(src: Path, dst: Path, keep_nodes: tuple[str, ...] = (), feeds: list[dict] | None = None,
            islands: tuple[str, ...] = ()) -> dict:
    """`src` with fp16 casts at `dst`; the nodes `keep_nodes` names (the user's `--keep-fp32`: matching_nodes, with
    the moves after them), nodes named exactly in `islands` (found by the fp32-island search), fragile ops, control
    flow and (given `feeds`) nodes whose activations exceed fp16's range stay fp32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    name_nodes(model)
    wanted = with_following_moves(model, set(matching_nodes(model, keep_nodes))) | set(islands)
    keep = [n.name for n in model.graph.node if n.name in wanted]
    ranged = out_of_range_nodes(model, feeds) if feeds else {}
    keep += [name for name in ranged if name not in keep]
    try:
        with quiet():
            half = convert_float_to_float16(model, keep_io_types=True, op_block_list=sorted(blocked_ops()),
                                            node_block_list=keep)
    except Exception as exc:  # the converter raises plain exceptions on graphs it cannot type
        raise ExportError(f"fp16 conversion failed: {type(exc).__name__}: {str(exc)[:300]}",
                          hint="keep the failing node in fp32 with --keep-fp32 NAME, or use fp32") from None
    collapsed = collapse_cast_pairs(half)
    body_casts = cast_outer_references(half)
    reconnect_empty_resize_parameters(half)
    sort_topologically(half.graph)
    onnx.save(half, str(dst))
    refused = load_error(dst)
    if refused:
        raise ExportError(f"the fp16 graph is invalid: {refused}", hint="keep the node it names in fp32 with "
                          "--keep-fp32 NAME, or use --precision fp32 for this model on this target")
    kept = sorted({n.op_type for n in half.graph.node if n.op_type in FRAGILE_OPS + CONTROL_FLOW_OPS})
    counts = count_types(half)
    return {"pass": "fp16 casts", "tool": "onnxruntime.transformers.float16", "kept_fp32_ops": kept,
            "kept_fp32_nodes": keep, "kept_fp32_out_of_range": {k: round(v, 1) for k, v in ranged.items()},
            "range_samples": len(feeds or ()), "fp16_round_trips_removed": collapsed,
            "control_flow_body_casts": body_casts, "casts": sum(1 for n in half.graph.node if n.op_type == "Cast"), **counts}


def sort_topologically(graph: onnx.GraphProto) -> None:
    """Nodes in an order where each reads only what came before: the converter appends the Casts of graph inputs
    after their readers, which ONNX Runtime and TensorRT's parser sort for themselves but the ONNX checker (and
    tools that walk the graph once) refuse. Stable: among nodes ready together, the original order wins."""
    import heapq

    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    readers: dict[int, list[int]] = {}
    waiting = []
    for i, node in enumerate(nodes):
        needs = {producer[name] for name in _reads(node) if name in producer and producer[name] != i}
        waiting.append(len(needs))
        for j in needs:
            readers.setdefault(j, []).append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in readers.get(i, []):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes) or order == list(range(len(nodes))):  # a cycle (not ours to fix), or already sorted
        return
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)


def _reads(node: onnx.NodeProto) -> set[str]:
    """The tensors a node reads, with those its control-flow bodies read from the enclosing graph."""
    names = {i for i in node.input if i}
    for attr in node.attribute:
        bodies = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for body in bodies:
            for inner in body.node:
                names |= _reads(inner)
    return names


def cast_outer_references(model: onnx.ModelProto) -> int:
    """A control-flow body stays fp32, but it may read main-graph tensors the converter made fp16 (an If that runs a
    second classifier on the first one's output): each such read gets a Cast to fp32 at the top of the body.
    Returns how many Casts were added."""
    from onnx import helper

    halves = {v.name for v in model.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16}
    halves |= {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    added = 0
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type != onnx.AttributeProto.GRAPH:
                continue
            body = attr.g
            defined = {i.name for i in body.input} | {i.name for i in body.initializer} | \
                      {o for n in body.node for o in n.output}
            outer = sorted({i for n in body.node for i in n.input if i and i not in defined and i in halves})
            for name in outer:
                cast = f"{name}_kiln_fp32"
                for inner in body.node:
                    for k, value in enumerate(inner.input):
                        if value == name:
                            inner.input[k] = cast
                body.node.insert(0, helper.make_node("Cast", [name], [cast], to=onnx.TensorProto.FLOAT,
                                                     name=f"{cast}_node"))
                added += 1
    return added


def collapse_cast_pairs(model: onnx.ModelProto) -> int:
    """Between two nodes kept in fp32 the converter still passes the tensor through fp16 (a Cast to fp16 after the
    first, a Cast back before the second): values beyond 65504 become Inf there, and the rest lose bits for nothing.
    Each such round trip is removed (only the converter's own Casts, whose input is fp32 by construction)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    outputs = {o.name for o in model.graph.output}
    rename: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "Cast" or not node.name.endswith("_cast_to_fp32_node"):
            continue
        first = producers.get(node.input[0])
        if first is not None and first.op_type == "Cast" and first.name.endswith("_cast_to_fp16_node") \
                and node.output[0] not in outputs:
            rename[node.output[0]] = first.input[0]
    if not rename:
        return 0
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    used = {i for n in model.graph.node for i in n.input} | outputs
    keep = [n for n in model.graph.node if not (n.op_type == "Cast" and not set(n.output) & used)]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return len(rename)


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
