"""scikit-learn models of the conformance corpus: trained on datasets scikit-learn ships, converted by skl2onnx.

Deterministic (fixed seeds), written once per folder. The evaluation rows are held out from training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _data(name: str):
    from sklearn.datasets import load_digits, load_iris

    X, y = (load_iris if name.startswith("iris") else load_digits)(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order].astype(np.float32), y[order]
    held = 24
    return X[held:], y[held:], X[:held]


def _estimator(name: str):
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name.startswith("iris_logreg"):
        return LogisticRegression(max_iter=500)
    if name == "digits_rf":
        return RandomForestClassifier(n_estimators=20, max_depth=8, random_state=0)
    if name == "digits_pca_mlp":
        return make_pipeline(StandardScaler(), PCA(n_components=32, random_state=0),
                             MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=0))
    raise KeyError(name)


def write_model(name: str, folder: Path) -> Path:
    path = folder / f"{name}.onnx"
    if path.is_file():
        return path
    from skl2onnx import to_onnx

    X, y, _ = _data(name)
    model = _estimator(name).fit(X, y)
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    options = None if name.endswith("zipmap") else {id(final): {"zipmap": False}}
    onx = to_onnx(model, X[:1], target_opset=17, options=options)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onx.SerializeToString())
    return path


def eval_features(name: str) -> np.ndarray:
    return _data(name)[2]
