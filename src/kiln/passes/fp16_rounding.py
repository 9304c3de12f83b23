"""An fp16 graph with every fp16 tensor rounded where it is written: the other reading of what a GPU computes.

ONNX Runtime's CPU check of a TensorRT fp16 graph is optimistic: it runs ops that have no fp16 CPU kernel in fp32,
and drops the fp16 round trips it inserted between them, so a tensor is rounded to fp16 only where the graph has an
explicit Cast or a DequantizeLinear writes fp16. TensorRT rounds each layer's output (it fuses layers, so fewer
tensors than the graph has). This copy computes in fp32 and rounds every tensor the graph types fp16 through a Cast
pair that ONNX Runtime keeps (it removes a pair only when no precision is lost). It rounds more often than TensorRT
(which does not round inside a fused layer), so its figure is usually the lower one: Basic Pitch's searched int8
graph read 0.9910 on ONNX Runtime, 0.9882 with every tensor rounded. Not always: on int8 graphs that are far off
already, the two roundings land apart either way (the corpus's doc-orientation int8 graph: 0.36 and 0.66), and then
the CPU check does not settle the engine's accuracy.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def rounded_everywhere(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of `model` that computes in fp32 and rounds each tensor the original types fp16 right after the node
    that writes it (Cast to fp16, Cast back); None when the graph has no fp16 tensor (nothing to read twice). fp16
    initializers and constants become fp32 with the same values; control-flow bodies stay as they are (the fp16 pass
    keeps them fp32). Graph inputs and outputs keep their types."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    typed = onnx.shape_inference.infer_shapes(copy)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(typed.graph.value_info) + list(typed.graph.output) + list(typed.graph.input)}
    graph = copy.graph
    if TensorProto.FLOAT16 not in types.values() and all(t.data_type != TensorProto.FLOAT16 for t in graph.initializer):
        return None
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.FLOAT16:
            graph.initializer[index].CopyFrom(_as_fp32(tensor))
    nodes = []
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT16:
                attr.t.CopyFrom(_as_fp32(attr.t))
        to_half = node.op_type == "Cast" and _cast_to(node) == TensorProto.FLOAT16
        if to_half:
            next(a for a in node.attribute if a.name == "to").i = TensorProto.FLOAT
        nodes.append(node)
        for k, name in enumerate(node.output):
            if name and (to_half or types.get(name) == TensorProto.FLOAT16):
                node.output[k] = f"{name}_kiln_fp32"
                nodes += [helper.make_node("Cast", [f"{name}_kiln_fp32"], [f"{name}_kiln_fp16"], to=TensorProto.FLOAT16,
                                           name=f"{name}_kiln_round"),
                          helper.make_node("Cast", [f"{name}_kiln_fp16"], [name], to=TensorProto.FLOAT,
                                           name=f"{name}_kiln_back")]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # the fp16 types recorded there are fp32 now
    return copy


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _as_fp32(tensor: onnx.TensorProto) -> onnx.TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)
