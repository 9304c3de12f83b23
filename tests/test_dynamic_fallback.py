"""The dynamic-int8 rung of ONNX Runtime's `--precision auto` ladder, on a small MatMul chain quantized by the real
ONNX Runtime dynamic quantizer and run by ONNX Runtime: one planted MatMul reads an activation with one channel
1000 times the others (its weight row divided by 1000, so the float graph is unchanged), which per-tensor dynamic
int8 cannot hold. The rung keeps the shortest prefix of the given order (then the nodes it does not name, in graph
order) that brings it within budget and writes that graph; where it writes nothing, it says why."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from kiln.backends.onnxruntime.dynamic_fallback import dynamic_nodes, search_dynamic
from kiln.backends.onnxruntime.quantize import quantize_dynamic_int8
from kiln.config import QuantizationPlan
from kiln.fallback.search import Point

PLAN = QuantizationPlan(mode="dynamic", activations="uint8, per-tensor, dynamic")
FEEDS = [np.random.default_rng(i).standard_normal((1, 8, 32)).astype(np.float32) for i in range(8)]


def _chain(path, planted: bool) -> None:
    rng = np.random.default_rng(0)
    scale = np.ones(64, np.float32)
    if planted:
        scale[5] = 1000.0
    w2 = rng.standard_normal((64, 64)).astype(np.float32) * 0.1
    initializers = [numpy_helper.from_array(rng.standard_normal((32, 64)).astype(np.float32) * 0.2, "w1"),
                    numpy_helper.from_array(scale, "scale"),
                    numpy_helper.from_array(w2 / scale[:, None], "w2"),
                    numpy_helper.from_array(rng.standard_normal((64, 16)).astype(np.float32) * 0.1, "w3")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Mul", ["r", "scale"], ["s"], name="outlier"),
             helper.make_node("MatMul", ["s", "w2"], ["b"], name="planted"),
             helper.make_node("MatMul", ["b", "w3"], ["y"], name="last")]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16])], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _outputs(path) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [session.run(None, {"x": x})[0].ravel() for x in FEEDS]


def _scorer(reference, budget: float = 0.999):
    expected = _outputs(reference)

    def score(path) -> Point:
        worst = min(float(a @ b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-30)
                    for a, b in zip(expected, _outputs(path)))
        return Point((), (1 - worst) / (1 - budget), worst >= budget, {"cosine_min": worst})
    return score


def _float_matmuls(path) -> set[str]:
    return {n.name for n in onnx.load(str(path)).graph.node if n.op_type == "MatMul"}


def _rung(tmp_path, planted: bool, order: list[str], budget: float = 0.999, seconds: float = 60) -> dict:
    _chain(tmp_path / "chain.onnx", planted)
    quantize_dynamic_int8(tmp_path / "chain.onnx", tmp_path / "plain.onnx", PLAN)
    return search_dynamic(tmp_path / "chain.onnx", tmp_path / "plain.onnx", tmp_path / "searched.onnx", PLAN, order,
                          _scorer(tmp_path / "chain.onnx", budget), seconds)


def test_the_planted_matmul_is_kept_float_and_the_rest_is_dynamic_int8(tmp_path):
    rung = _rung(tmp_path, True, ["relu", "first", "planted", "last"])
    assert dynamic_nodes(onnx.load(str(tmp_path / "chain.onnx"))) == ["first", "planted", "last"]
    assert rung["kept_fp32"] == ["first", "planted"], rung  # relu is no dynamic unit
    assert (rung["units"], rung["ranked_by_the_static_search"]) == (3, 3)
    assert [(p["kept"], p["passed"]) for p in rung["curve"]] == [(0, False), (1, False), (2, True)]
    assert rung["curve"][0]["cosine_min"] < 0.99, rung["curve"][0]  # plain dynamic int8 misses by far
    assert _float_matmuls(tmp_path / "searched.onnx") == {"first", "planted"}  # "last" is int8
    assert _scorer(tmp_path / "chain.onnx")(tmp_path / "searched.onnx").summary["cosine_min"] >= 0.999


def test_nodes_the_static_search_did_not_rank_follow_in_graph_order(tmp_path):
    """A static search cut short before it scored a unit leaves no order: the rung still searches, in graph order."""
    rung = _rung(tmp_path, True, [])
    assert rung["kept_fp32"] == ["first", "planted"] and rung["ranked_by_the_static_search"] == 0, rung


def test_the_rung_says_why_it_wrote_nothing(tmp_path):
    """Plain dynamic int8 within budget, or out of time before any prefix: no graph written, and the reason said."""
    held = _rung(tmp_path, False, ["planted", "first"], budget=0.99)
    assert held["skipped"] == "plain dynamic int8 holds the budget" and held["evaluations"] == 1, held
    assert not (tmp_path / "searched.onnx").exists()
    late = _rung(tmp_path, True, ["planted"], seconds=0)
    assert late["skipped"] == "no prefix tried holds the budget (cut short)" and late["timed_out"], late
    assert not (tmp_path / "searched.onnx").exists()
