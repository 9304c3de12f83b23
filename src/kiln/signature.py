"""The IO signature of an ONNX graph: names, dtypes and shapes with named dynamic dims."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import onnx

_ONNX_TO_NUMPY = {
    onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16", onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.BOOL: "bool",
}

Shape = tuple  # of int (static) | str (named dynamic) | None (unknown)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: Shape

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict) -> "TensorInfo":
        return cls(data["name"], data["dtype"], tuple(data["shape"]))


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def input(self, name: str) -> TensorInfo:
        return next(t for t in self.inputs if t.name == name)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def to_dict(self) -> dict:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, data: dict) -> "Signature":
        return cls(tuple(TensorInfo.from_dict(t) for t in data["inputs"]),
                   tuple(TensorInfo.from_dict(t) for t in data["outputs"]))


# What converters write for "any size": TF and Paddle converters -1 (or 0) as dim_value, others '?', 'None', '-1' or
# an empty string as dim_param, or no value at all. Every one of them is dynamic, never a size.
_ANONYMOUS = {"", "?", "-1", "0", "none", "null", "unk", "unknown", "dynamic"}


def _dims(value: onnx.ValueInfoProto, name_unknown: bool) -> tuple:
    dims: list = []
    for axis, d in enumerate(value.type.tensor_type.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param.strip().lower() not in _ANONYMOUS:
            dims.append(d.dim_param)
        else:  # a dynamic axis without a usable name: inputs get one (data and --input size it), outputs stay unknown
            dims.append(anonymous_dim(value.name, axis, len(value.type.tensor_type.shape.dim)) if name_unknown else None)
    return tuple(dims)


def anonymous_dim(input_name: str, axis: int, rank: int) -> str:
    """The name kiln gives a dynamic axis the model left unnamed (`-1`, `?`, ...): `<input>_batch` for axis 0 of a
    tensor of rank 2 or more (what converters leave unnamed there is the batch), else `<input>_dim<axis>`."""
    clean = re.sub(r"[^A-Za-z0-9_.\-]", "_", input_name)
    clean = clean if re.match(r"[A-Za-z_]", clean) else "in_" + clean
    return f"{clean}_batch" if axis == 0 and rank >= 2 else f"{clean}_dim{axis}"


def _info(value: onnx.ValueInfoProto, name_unknown: bool = False) -> TensorInfo:
    elem = value.type.tensor_type.elem_type
    return TensorInfo(value.name, _ONNX_TO_NUMPY.get(elem, f"onnx:{elem}"), _dims(value, name_unknown))


def read_signature(model: onnx.ModelProto) -> Signature:
    """Inputs (without initializers that old exporters list as inputs) and outputs; see `_dims` for dynamic axes."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = tuple(_info(v, name_unknown=True) for v in model.graph.input if v.name not in initializers)
    return Signature(inputs, tuple(_info(v) for v in model.graph.output))


def numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default (ai.onnx) domain the graph imports; 0 when it imports none."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
