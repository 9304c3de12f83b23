"""OpenVINO failures that must reach the user as one line naming what failed (real OpenVINO, real graphs
that it cannot convert or compile)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from kiln.errors import ExportError

pytest.importorskip("openvino", reason="the openvino extra is not installed")


def _save(tmp_path, nodes, inputs, outputs, opsets=(("", 17),)):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    return path


def test_unconvertible_operator_is_named_with_its_nodes(tmp_path):
    from kiln.backends.openvino.convert import convert_onnx

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["r"], name="relu0"),
                            helper.make_node("Frobnicate", ["r"], ["y"], name="frob_node", domain="com.example")],
                 [x], [y], opsets=(("", 17), ("com.example", 1)))
    with pytest.raises(ExportError) as err:
        convert_onnx(path)
    message = str(err.value)
    assert "com.example.Frobnicate" in message and "frob_node" in message and "\n" not in message
    assert "relu0" not in message
    assert "onnxruntime" in err.value.hint


def test_if_with_branches_of_different_rank_fails_at_compile_naming_the_node(tmp_path):
    """ONNX Runtime runs this graph; OpenVINO 2026.4's CPU plugin refuses an If whose output rank is dynamic."""
    from kiln.backends.openvino.convert import convert_onnx
    from kiln.backends.openvino.session import compile_model

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    flat = helper.make_graph([helper.make_node("Constant", [], ["s"], value=helper.make_tensor("v", TensorProto.INT64,
                                                                                                 [1], [-1])),
                              helper.make_node("Reshape", ["x", "s"], ["e"])], "else", [],
                             [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    path = _save(tmp_path, [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=flat,
                                             name="branchy_if")], [x, cond], [y])
    import onnxruntime as ort

    assert ort.InferenceSession(str(path)).run(None, {"x": np.ones((2, 4), np.float32),
                                                      "c": np.array(False)})[0].shape == (8,)
    model = convert_onnx(path)
    xml = tmp_path / "model.xml"
    import openvino as ov

    ov.save_model(model, str(xml))
    with pytest.raises(ExportError) as err:
        compile_model(xml, {"device": "CPU", "config": {}})
    message = str(err.value)
    assert "If operation with dynamic rank" in message and "\n" not in message
    assert not message.startswith("OpenVINO cannot compile the model for CPU: Exception from")
