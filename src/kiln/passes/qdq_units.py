"""Units of a Q/DQ graph, and the graph with chosen units back in float.

A unit is what a backend runs as one low-precision kernel: a node that reads a DequantizeLinear output (a Conv,
MatMul, Gemm, or an Add/Concat the quantizer also wrapped), together with the element-wise nodes fused into it (a
Relu or Clip whose only input is that node's quantized output). Every quantized node belongs to exactly one unit,
so restoring every unit gives the float graph back. A unit is named after its first node: the name the user passes
to `--keep-fp32`.

Restoring a unit rewires its nodes' inputs from DequantizeLinear outputs to the float tensors behind them: the
Q node's input for activations, the original float initializer for weights and biases (looked up in the float
graph by the quantizer's `_quantized` suffix, else dequantized). The unit's own output stays quantized where a
quantized neighbour reads it: the boundary a float island between int8 neighbours needs. Q/DQ nodes nobody reads
any more are removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

FUSED = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish")
FUSED_WITH_CONSTANT = ("Add", "Mul")  # a bias or a scale: one varying input, the other a constant
QUANT_SUFFIX = "_quantized"


@dataclass(frozen=True)
class Unit:
    name: str  # the first node's name
    nodes: tuple[str, ...]  # node names, first the compute node, then what is fused into it
    op_type: str
    flops: int = 0  # high-precision cost estimate (FLOPs of its nodes in the float graph)


def _index(graph: onnx.GraphProto):
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return producers, consumers


def _dq_behind(name: str, producers: dict) -> tuple[onnx.NodeProto | None, onnx.NodeProto | None]:
    """(the DequantizeLinear a tensor comes from, the Cast in between or None): a node kept in fp32 in a graph whose
    rest is fp16 (an fp32 island, fallback/islands.py) reads its DQ's fp16 output through a Cast to fp32."""
    node = producers.get(name)
    cast = None
    if node is not None and node.op_type == "Cast" and node.input[0] in producers:
        cast, node = node, producers[node.input[0]]
    return (node, cast) if node is not None and node.op_type == "DequantizeLinear" else (None, None)


def _reads_dq(node: onnx.NodeProto, producers: dict) -> bool:
    return any(_dq_behind(i, producers)[0] is not None for i in node.input)


def _producer(name: str, producers: dict) -> onnx.NodeProto | None:
    """The node a tensor comes from, looking through a Q -> DQ pair (and a Cast after it); None for constants and
    graph inputs."""
    node = _dq_behind(name, producers)[0] or producers.get(name)
    if node is not None and node.op_type == "DequantizeLinear":
        q = producers.get(node.input[0])
        return producers.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
    return node


def find_units(qdq: onnx.ModelProto, flops: dict[str, int] | None = None) -> list[Unit]:
    """The units of a Q/DQ graph, in graph order. A quantized element-wise node joins the unit of the node it reads
    (looking through Q/DQ) when it reads nothing else that varies and is that node's only reader: a bias Add, a
    Relu, a Clip, as the backends fuse them."""
    producers, consumers = _index(qdq.graph)
    quantized = [n for n in qdq.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear", "Cast")
                 and _reads_dq(n, producers)]  # a Cast after a DQ is an fp32 island's boundary, not a kernel
    in_unit = {n.name for n in quantized}
    head: dict[str, str] = {}
    for node in quantized:
        head[node.name] = node.name
        if node.op_type not in FUSED + FUSED_WITH_CONSTANT:
            continue
        sources = [_producer(i, producers) for i in node.input if i]
        varying = [s for s in sources if s is not None]
        if len(varying) != 1 or (node.op_type in FUSED_WITH_CONSTANT and len(sources) < 2):
            continue
        source = varying[0]
        readers = consumers.get(source.output[0], [])
        direct = len(readers) == 1 and (readers[0] is node or readers[0].op_type == "QuantizeLinear")
        if source.name in in_unit and direct:
            head[node.name] = head.get(source.name, source.name)
    members: dict[str, list[str]] = {}
    for node in quantized:
        members.setdefault(head[node.name], []).append(node.name)
    ops = {n.name: n.op_type for n in qdq.graph.node}
    costs = flops or {}
    return [Unit(name, tuple(names), ops.get(name, "?"), sum(costs.get(n, 0) for n in names))
            for name, names in members.items() if name in ops]


def float_weights(*models: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Initializers by name, the first model's winning: the exported graph's original weights before the graph the
    quantizer read (whose biases bias correction moved, and whose fused Conv+BN weights only it has)."""
    found: dict[str, onnx.TensorProto] = {}
    for model in reversed(models):
        found.update({t.name: t for t in model.graph.initializer})
    return found


def restore_units(qdq: onnx.ModelProto, units: list[Unit], floats: dict[str, onnx.TensorProto]) -> onnx.ModelProto:
    """A copy of `qdq` with every node of `units` reading float inputs (weights from `floats`, by the quantizer's
    names); dead Q/DQ nodes and weights removed."""
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    graph = model.graph
    if not units:
        return model
    producers, _ = _index(graph)
    inits = {t.name: t for t in graph.initializer}
    wanted = {name for unit in units for name in unit.nodes}
    added: dict[str, str] = {}
    casts: dict[str, list[onnx.NodeProto]] = {}  # new Casts of float activations into an island, by first reader
    for node in graph.node:
        if node.name not in wanted:
            continue
        for index, name in enumerate(node.input):
            if name in inits and name in floats and _differs(inits[name], floats[name]):
                node.input[index] = added.setdefault(name, _copy_of(floats[name], graph, inits[name].data_type))
                continue  # a bias corrected for int8 (TensorRT's are float, read directly): the unit takes the original
            dq, cast = _dq_behind(name, producers)
            if dq is None:
                continue
            to = next(a.i for a in cast.attribute if a.name == "to") if cast is not None else None
            source = dq.input[0]
            q = producers.get(source)
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[index] = q.input[0] if cast is None else _cast_into(q.input[0], to, node, added, casts)
            elif source in inits:
                node.input[index] = added.setdefault(f"{name}/{to}", _float_weight(dq, inits, floats, graph, to))
    if casts:
        ordered = []
        for node in graph.node:
            ordered += casts.get(node.name, []) + [node]
        del graph.node[:]
        graph.node.extend(ordered)
    float_graph_outputs(graph, wanted)
    return without_dead_nodes(model)


def _cast_into(value: str, to: int, reader: onnx.NodeProto, added: dict, casts: dict) -> str:
    """`value` (the float tensor a Q node read) cast to `to` for an fp32 island's node: one Cast per tensor and type,
    placed before its first reader."""
    key = f"{value}/cast/{to}"
    if key not in added:
        added[key] = f"{value}_kiln_cast{to}"
        casts.setdefault(reader.name, []).append(onnx.helper.make_node("Cast", [value], [added[key]], to=to,
                                                                       name=f"{added[key]}_node"))
    return added[key]


def float_graph_outputs(graph: onnx.GraphProto, wanted: set[str] | None = None) -> list[str]:
    """A graph output the quantizer wrapped in Q -> DQ is its producer's float value again (an Identity of the Q's
    input; the Q is then dead): after a restored node in `wanted`, or after any node when `wanted` is None. Returns
    the outputs freed."""
    producers, _ = _index(graph)
    outputs = {o.name for o in graph.output}
    freed = []
    for index, node in enumerate(graph.node):
        if node.op_type != "DequantizeLinear" or node.output[0] not in outputs:
            continue
        q = producers.get(node.input[0])
        source = producers.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        if source is not None and (wanted is None or source.name in wanted):
            graph.node[index].CopyFrom(onnx.helper.make_node("Identity", [q.input[0]], [node.output[0]],
                                                             name=f"{node.name}_kiln_float"))
            freed.append(node.output[0])
    return freed


def _differs(a: onnx.TensorProto, b: onnx.TensorProto) -> bool:
    """Whether `b` (a float graph's tensor) holds other values than `a`, compared in `a`'s type."""
    values = numpy_helper.to_array(a)
    return a.dims != b.dims or not np.array_equal(values, numpy_helper.to_array(b).astype(values.dtype))


def _in_type(values: np.ndarray, name: str, data_type: int) -> onnx.TensorProto:
    """A float tensor in the graph's type there: a graph whose float part is fp16 (TensorRT's) gets fp16 weights."""
    return numpy_helper.from_array(values.astype(onnx.helper.tensor_dtype_to_np_dtype(data_type)), name)


def _copy_of(tensor: onnx.TensorProto, graph: onnx.GraphProto, data_type: int) -> str:
    name = f"{tensor.name}_kiln_float"
    if not any(t.name == name for t in graph.initializer):
        graph.initializer.append(_in_type(numpy_helper.to_array(tensor), name, data_type))
    return name


def _float_weight(dq: onnx.NodeProto, inits: dict, floats: dict, graph: onnx.GraphProto,
                  data_type: int | None = None) -> str:
    """The float tensor behind a DequantizeLinear of a constant, as a new initializer: the float graph's original when
    the quantizer's name leads back to it (a bias's DQ output may carry the original name itself), else the
    dequantized values. In the scale's type (what DequantizeLinear writes), or `data_type` (an island's Cast)."""
    source = dq.input[0]
    scale_type = inits[dq.input[1]].data_type
    data_type = data_type or scale_type
    name = f"{source}_kiln_float" if data_type == scale_type else f"{source}_kiln_float{data_type}"
    if any(t.name == name for t in graph.initializer):
        return name
    original = source[:-len(QUANT_SUFFIX)] if source.endswith(QUANT_SUFFIX) else None
    if original in floats:
        graph.initializer.append(_in_type(numpy_helper.to_array(floats[original]), name, data_type))
        return name
    q = numpy_helper.to_array(inits[source]).astype(np.float32)
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
    zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float32) if len(dq.input) > 2 and dq.input[2] in inits \
        else np.zeros_like(scale)
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if scale.ndim and q.ndim:
        shape = [1] * q.ndim
        shape[axis % q.ndim] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    graph.initializer.append(_in_type((q - zero) * scale, name, data_type))
    return name


def without_dead_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove nodes whose outputs nobody reads (repeatedly: a dead DQ makes its Q dead), then unused initializers."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in read for o in n.output if o)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {i for n in graph.node for i in n.input} | outputs
    kept = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    alive = {o for n in graph.node for o in n.output} | {i.name for i in graph.input} | {t.name for t in kept}
    stale = [v for v in graph.value_info if v.name not in alive]
    for value in stale:
        graph.value_info.remove(value)
    return model
