"""scikit-learn's ai.onnx.ml operators written as standard ONNX, for the runtimes that have none of them.

OpenVINO's ONNX frontend and TensorRT's parser build only the default domain, and ONNX Runtime's quantizer sees no
MatMul inside a LinearClassifier. The linear and element-wise ml operators are small formulas in standard ops;
each is rewritten exactly (same outputs, same names) when its attributes are of the form written here, and left
alone otherwise (trees, SVMs, string labels, binary single-row classifiers), so the runtime still says what it
cannot build.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

ML = "ai.onnx.ml"
LINEAR_MODELS = ("LinearClassifier", "LinearRegressor")  # what hides a MatMul from ONNX Runtime's quantizer
TRANSFORMS = {"NONE": None, "SOFTMAX": "Softmax", "LOGISTIC": "Sigmoid"}


class _Writer:
    """Collects the replacement nodes and constants of one ml node, named after it."""

    def __init__(self, node: onnx.NodeProto, opset: int, shapes: dict[str, tuple]):
        self.prefix = node.name or f"{node.op_type}_{node.output[0]}"
        self.opset = opset
        self.shapes = shapes
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []

    def constant(self, name: str, value: np.ndarray) -> str:
        full = f"{self.prefix}/{name}"
        self.constants.append(numpy_helper.from_array(value, full))
        return full

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        out = output or f"{self.prefix}/{op_type}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{self.prefix}/{op_type}_{len(self.nodes)}",
                                           **attrs))
        return out

    def as_float(self, name: str) -> str:
        return self.op("Cast", [name], to=onnx.TensorProto.FLOAT)

    def reduce(self, op_type: str, name: str) -> str:
        """Reduce over the last axis, keeping it: axes as an input from opset 13 (ReduceSum) or 18 (the others)."""
        if self.opset >= (13 if op_type == "ReduceSum" else 18):
            return self.op(op_type, [name, self.constant(f"{op_type}_axes", np.array([-1], np.int64))], keepdims=1)
        return self.op(op_type, [name], axes=[-1], keepdims=1)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _scaler(w: _Writer, node: onnx.NodeProto, a: dict) -> bool:
    offset = np.asarray(a.get("offset", [0.0]), np.float32)
    scale = np.asarray(a.get("scale", [1.0]), np.float32)
    shifted = w.op("Sub", [w.as_float(node.input[0]), w.constant("offset", offset)])
    w.op("Mul", [shifted, w.constant("scale", scale)], node.output[0])
    return True


def _normalizer(w: _Writer, node: onnx.NodeProto, a: dict) -> bool:
    norm = _text(a.get("norm", "MAX"))
    x = w.as_float(node.input[0])
    if norm == "L1":
        denominator = w.reduce("ReduceSum", w.op("Abs", [x]))
    elif norm == "L2":
        denominator = w.op("Sqrt", [w.reduce("ReduceSum", w.op("Mul", [x, x]))])
    elif norm == "MAX":
        denominator = w.reduce("ReduceMax", x)
    else:
        return False
    w.op("Div", [x, denominator], node.output[0])
    return True


def _array_feature_extractor(w: _Writer, node: onnx.NodeProto, a: dict) -> bool:
    """Gather on the last axis; a 1-D table gives [1, k] as ONNX Runtime's kernel does."""
    if node.input[0] not in w.shapes:
        return False  # rank unknown: the output shape would be a guess
    flat = w.op("Reshape", [node.input[1], w.constant("flat", np.array([-1], np.int64))])
    if len(w.shapes[node.input[0]]) == 1:
        gathered = w.op("Gather", [node.input[0], flat], axis=-1)
        w.op("Unsqueeze", [gathered, w.constant("axis0", np.array([0], np.int64))] if w.opset >= 13 else [gathered],
             node.output[0], **({} if w.opset >= 13 else {"axes": [0]}))
    else:
        w.op("Gather", [node.input[0], flat], node.output[0], axis=-1)
    return True


def _linear(w: _Writer, node: onnx.NodeProto, a: dict, rows: int) -> str | None:
    """X @ coefficients^T + intercepts, coefficients stored row-major as [rows, features]. The feature count must be
    known (a binary classifier may store one row for two labels, which the sizes alone cannot tell apart)."""
    coefficients = np.asarray(a.get("coefficients", []), np.float32)
    features = w.shapes.get(node.input[0], (None,))[-1:] or (None,)
    if rows < 1 or not isinstance(features[0], int) or coefficients.size != rows * features[0]:
        return None
    weight = coefficients.reshape(rows, -1).T.copy()
    scores = w.op("MatMul", [w.as_float(node.input[0]), w.constant("coefficients", weight)])
    intercepts = np.asarray(a.get("intercepts", []) or [0.0] * rows, np.float32)
    if intercepts.size != rows:
        return None
    return w.op("Add", [scores, w.constant("intercepts", intercepts)])


def _linear_classifier(w: _Writer, node: onnx.NodeProto, a: dict) -> bool:
    labels = list(a.get("classlabels_ints") or [])
    transform = _text(a.get("post_transform", "NONE"))
    if len(labels) < 2 or transform not in TRANSFORMS or len(node.output) < 2:
        return False  # string labels, binary single-row form, SOFTMAX_ZERO/PROBIT: left for ONNX Runtime
    scores = _linear(w, node, a, len(labels))
    if scores is None:
        return False
    best = w.op("ArgMax", [scores], axis=-1, keepdims=0)
    w.op("Gather", [w.constant("labels", np.asarray(labels, np.int64)), best], node.output[0], axis=0)
    if TRANSFORMS[transform]:
        w.op(TRANSFORMS[transform], [scores], node.output[1], **({"axis": -1} if transform == "SOFTMAX" else {}))
    else:
        w.op("Identity", [scores], node.output[1])
    return True


def _linear_regressor(w: _Writer, node: onnx.NodeProto, a: dict) -> bool:
    if _text(a.get("post_transform", "NONE")) != "NONE":
        return False
    scores = _linear(w, node, a, int(a.get("targets", 1)))
    if scores is None:
        return False
    w.op("Identity", [scores], node.output[0])
    return True


RULES = {"Scaler": _scaler, "Normalizer": _normalizer, "ArrayFeatureExtractor": _array_feature_extractor,
         "LinearClassifier": _linear_classifier, "LinearRegressor": _linear_regressor}


def _shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    """Shapes of the main graph's values as shape inference sees them (dims: int, or None when dynamic)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference rejects some graphs; the declared shapes are still known
        inferred = model
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if value.type.tensor_type.HasField("shape"):
            shapes.setdefault(value.name, tuple(d.dim_value if d.HasField("dim_value") else None
                                                for d in value.type.tensor_type.shape.dim))
    return shapes


def lower_ml_model(model: onnx.ModelProto, only: tuple[str, ...] = ()) -> tuple[onnx.ModelProto, dict]:
    """Rewrite the main graph's lowerable ai.onnx.ml nodes (of the `only` types, if given) in place. Returns
    (model, {lowered, left}). Repeated
    while it lowers something: shape inference stops at ml operators, so a classifier's feature count may only be
    known once the scaler before it is standard ONNX."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not opset:
        model.opset_import.append(helper.make_opsetid("", 17))
        opset = 17
    lowered: list[str] = []
    while True:
        shapes = _shapes(model)
        nodes: list[onnx.NodeProto] = []
        left: list[str] = []
        before = len(lowered)
        for node in model.graph.node:
            if node.domain != ML:
                nodes.append(node)
                continue
            writer = _Writer(node, opset, shapes)
            rule = RULES.get(node.op_type) if not only or node.op_type in only else None
            if rule is not None and rule(writer, node, _attrs(node)):
                nodes.extend(writer.nodes)
                model.graph.initializer.extend(writer.constants)
                lowered.append(f"{node.op_type} {node.name}".strip())
            else:
                nodes.append(node)
                left.append(f"{node.op_type} {node.name}".strip())
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        if len(lowered) == before or not left:
            break
    if lowered and not left:
        kept = [o for o in model.opset_import if o.domain != ML]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    return model, {"lowered": lowered, "left": left}


def lower_ml_ops(src: Path, dst: Path, only: tuple[str, ...] = ()) -> tuple[Path, dict | None]:
    """`src`, or `dst` holding its ai.onnx.ml operators in standard ONNX; the record is None when it had none."""
    head = onnx.load(str(src), load_external_data=False)
    if not any(n.domain == ML and (not only or n.op_type in only) for n in head.graph.node):
        return src, None
    model, record = lower_ml_model(onnx.load(str(src)), only)
    if not record["lowered"]:
        return src, record
    onnx.save(model, str(dst))
    return dst, record
