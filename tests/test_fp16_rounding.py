"""The fp16 bound's graph (passes/fp16_rounding.py): fp32 arithmetic with every fp16 tensor rounded where it is
written, checked against numpy doing the same steps in fp16 on a small graph with an fp16 initializer, an fp16
Constant and Casts at the edges."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from kiln.passes.fp16_rounding import rounded_everywhere


def _half_graph() -> onnx.ModelProto:
    scale = numpy_helper.from_array(np.array([1.0009765625, 3.14159], np.float16), "scale")
    shift = numpy_helper.from_array(np.array([1e-3, -2.5], np.float16), "shift")
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16, name="in"),
             helper.make_node("Mul", ["h", "scale"], ["m"], name="mul"),
             helper.make_node("Constant", [], ["c"], value=shift, name="const"),
             helper.make_node("Add", ["m", "c"], ["a"], name="add"),
             helper.make_node("Mul", ["a", "a"], ["sq"], name="square"),
             helper.make_node("Cast", ["sq"], ["y"], to=TensorProto.FLOAT, name="out")]
    graph = helper.make_graph(nodes, "half", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 2])], [scale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_every_fp16_tensor_is_rounded_once_where_it_is_written():
    model = _half_graph()
    rounded = rounded_everywhere(model)
    onnx.checker.check_model(rounded, full_check=True)
    typed = onnx.shape_inference.infer_shapes(rounded)
    halves = [v.name for v in typed.graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT16]
    rounds = [n.output[0] for n in rounded.graph.node if n.name.endswith("_kiln_round")]
    assert sorted(halves) == sorted(rounds) and len(rounds) == 5  # h, m, c, a, sq: only the rounding Casts are fp16
    x = np.array([[1.2345678, -0.3333333], [100.01, 7e-5], [3.0e3, -1.0e-2], [0.1, 2.0]], np.float32)
    got = ort.InferenceSession(rounded.SerializeToString()).run(None, {"x": x})[0]
    h = x.astype(np.float16)  # each step in fp32, its result rounded to fp16 (one rounding per written tensor)
    m = (h.astype(np.float32) * np.array([1.0009765625, 3.14159], np.float16).astype(np.float32)).astype(np.float16)
    a = (m.astype(np.float32) + np.array([1e-3, -2.5], np.float16).astype(np.float32)).astype(np.float16)
    with np.errstate(over="ignore"):
        expected = (a.astype(np.float32) * a.astype(np.float32)).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(got, expected)
    assert np.isinf(got[2, 0]) and not np.isinf(got).all()  # 3000 squared is beyond fp16, as on a GPU


def test_a_graph_without_fp16_has_nothing_to_round():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "f32",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    assert rounded_everywhere(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])) is None
