"""ai.onnx.ml operators lowered to standard ONNX (passes/ml_ops.py): real scikit-learn models converted by skl2onnx,
run by the real ONNX Runtime before and after; the outputs must be the same, and what cannot be lowered is left."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from kiln.passes.ml_ops import lower_ml_model

pytest.importorskip("skl2onnx")


def _run(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


@functools.cache
def _sklearn_cases():  # trained once for all the cases that read it
    from skl2onnx import to_onnx
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, Normalizer, StandardScaler

    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    Xd, yd = load_diabetes(return_X_y=True)
    Xd = Xd.astype(np.float32)
    no_zipmap = {LogisticRegression: {"zipmap": False}}
    return {
        "multiclass logistic (softmax, L1 normalizer)": (
            to_onnx(LogisticRegression(max_iter=500).fit(X, y), X[:1], target_opset=17, options=no_zipmap), X),
        "L2 normalizer, min-max scaler, opset 13": (
            to_onnx(make_pipeline(Normalizer("l2"), MinMaxScaler(), LogisticRegression(max_iter=500)).fit(X, y), X[:1],
                    target_opset=13, options=no_zipmap), X),
        "max normalizer, standard scaler, opset 11": (
            to_onnx(make_pipeline(Normalizer("max"), StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y),
                    X[:1], target_opset=11, options=no_zipmap), X),
        "binary logistic": (
            to_onnx(LogisticRegression().fit(X, y == 1), X[:1], target_opset=17, options=no_zipmap), X),
        "linear regression": (to_onnx(LinearRegression().fit(Xd, yd), Xd[:1], target_opset=17), Xd),
        "two-target ridge": (to_onnx(Ridge().fit(Xd, np.stack([yd, 2 * yd], 1)), Xd[:1], target_opset=17), Xd),
    }


@pytest.mark.parametrize("case", list(_sklearn_cases()))
def test_lowered_sklearn_models_give_the_same_outputs(case):
    model, data = _sklearn_cases()[case]
    before = _run(model, {model.graph.input[0].name: data})
    lowered, record = lower_ml_model(onnx.load_from_string(model.SerializeToString()))
    onnx.checker.check_model(lowered, full_check=True)
    assert record["lowered"] and not record["left"]
    assert not any(n.domain == "ai.onnx.ml" for n in lowered.graph.node)
    assert all(o.domain != "ai.onnx.ml" for o in lowered.opset_import)
    after = _run(lowered, {model.graph.input[0].name: data})
    assert [o.name for o in lowered.graph.output] == [o.name for o in model.graph.output]
    for b, a in zip(before, after):
        assert b.shape == a.shape and b.dtype == a.dtype
        if b.dtype.kind == "i":
            assert np.array_equal(b, a)  # labels: the same class on every row
        else:
            assert np.abs(b - a).max() <= 1e-6 * max(1.0, np.abs(b).max())


def test_what_cannot_be_lowered_is_left_for_the_runtime():
    """A tree ensemble, and a linear classifier whose feature count is unknown (one row or two for two labels?)."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    tree = to_onnx(DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y), X[:1], target_opset=17,
                   options={"zipmap": False})
    lowered, record = lower_ml_model(tree)
    assert record["lowered"] == [] and len(record["left"]) == 1 and record["left"][0].startswith("TreeEnsemble")
    assert any(o.domain == "ai.onnx.ml" for o in lowered.opset_import)

    node = helper.make_node("LinearClassifier", ["X"], ["label", "scores"], domain="ai.onnx.ml", name="unknown_width",
                            coefficients=[0.5, -0.5, 1.0, 2.0], intercepts=[0.1, 0.2], classlabels_ints=[0, 1],
                            post_transform="LOGISTIC")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, ["n", "f"])],
                              [helper.make_tensor_value_info("label", onnx.TensorProto.INT64, ["n"]),
                               helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, ["n", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    _, record = lower_ml_model(model)
    assert record == {"lowered": [], "left": ["LinearClassifier unknown_width"]}
