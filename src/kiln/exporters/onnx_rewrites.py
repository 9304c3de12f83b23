"""What the user can ask kiln to change in an ONNX source before export: inputs bound to constants (`--constant`),
and scikit-learn's ZipMap outputs turned back into the tensors they wrap (`--zipmap-as-tensor`).

Both keep the model's meaning: the source run feeds the constants to the unmodified graph, and the exported graph
(constants bound, then folded) is compared with it like any other export.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from kiln.config import ConstantInput
from kiln.errors import ExportError, UsageError

_NUMPY = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
          onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64, onnx.TensorProto.INT32: np.int32,
          onnx.TensorProto.INT16: np.int16, onnx.TensorProto.INT8: np.int8, onnx.TensorProto.UINT8: np.uint8,
          onnx.TensorProto.BOOL: np.bool_}


def constant_feeds(model: onnx.ModelProto, constants: tuple[ConstantInput, ...], name: str) -> dict[str, np.ndarray]:
    """Each --constant as the array the model's input takes (its dtype, a scalar or a 1-D tensor)."""
    inputs = {v.name: v for v in model.graph.input}
    feeds: dict[str, np.ndarray] = {}
    for constant in constants:
        value = inputs.get(constant.name)
        if value is None:
            raise UsageError(f"--constant {constant.name}: {name} has no input '{constant.name}'",
                             hint=f"its inputs are {', '.join(inputs) or 'none'}")
        tensor = value.type.tensor_type
        dtype = _NUMPY.get(tensor.elem_type)
        if value.type.WhichOneof("value") != "tensor_type" or dtype is None:
            raise UsageError(f"--constant {constant.name}: input '{constant.name}' of {name} is not a numeric tensor",
                             hint="bind only numeric or bool inputs")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        ranked = tensor.HasField("shape")
        if ranked and len(dims) > 1:
            raise UsageError(f"--constant {constant.name}: input '{constant.name}' has rank {len(dims)}; kiln binds "
                             f"scalars and 1-D inputs", hint="feed it as data instead (--eval/--calibration .npz)")
        array = np.asarray(constant.values)
        if ranked and not dims:
            if array.size != 1:
                raise UsageError(f"--constant {constant.name}: input '{constant.name}' is a scalar, given "
                                 f"{array.size} values", hint=f"give one value, e.g. --constant {constant.name}=1")
            array = array.reshape(())
        elif ranked and dims[0] not in (None, array.size):
            raise UsageError(f"--constant {constant.name}: input '{constant.name}' takes {dims[0]} values, given "
                             f"{array.size}", hint="give one value per element, comma-separated")
        elif not ranked and array.size == 1:
            array = array.reshape(())
        typed = array.astype(dtype)
        if not np.array_equal(typed.astype(np.float64), array.astype(np.float64)):
            raise UsageError(f"--constant {constant.name}: {constant} does not fit input '{constant.name}' "
                             f"({np.dtype(dtype).name})", hint=f"give {np.dtype(dtype).name} values")
        feeds[constant.name] = typed
    return feeds


def bind_constants(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> tuple[onnx.ModelProto, dict]:
    """The graph with each bound input turned into an initializer, then constant-folded by onnxscript's optimizer
    (an If whose condition depends only on constants is replaced by its branch; unused weights are dropped)."""
    from onnxscript import optimizer

    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    kept = [v for v in bound.graph.input if v.name not in feeds]
    del bound.graph.input[:]
    bound.graph.input.extend(kept)
    bound.graph.initializer.extend(numpy_helper.from_array(a, n) for n, a in feeds.items())
    before = _control_flow(bound)
    try:
        folded = _without_unused_initializers(optimizer.optimize(bound))
    except Exception as exc:  # the optimizer raises its own and numpy errors on graphs it cannot evaluate
        raise ExportError(f"folding the graph after binding {', '.join(feeds)} failed: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else ''}",
                          hint="feed the input as data instead of --constant") from None
    after = _control_flow(folded)
    return folded, {"bound": {n: a.tolist() for n, a in feeds.items()},
                    "control_flow_folded": sorted(before - after), "control_flow_left": sorted(after),
                    "nodes": {"before": len(model.graph.node), "after": len(folded.graph.node)}}


def _control_flow(model: onnx.ModelProto) -> set[str]:
    """Names of the main graph's If/Loop/Scan nodes (a folded If's inner If, now in the main graph, is new)."""
    return {f"{n.op_type} {n.name}" for n in model.graph.node if n.op_type in ("If", "Loop", "Scan")}


def _without_unused_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop weights no node reads any more (a folded branch's), in subgraphs too: ONNX Runtime warns about each."""
    used: set[str] = set()

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            used.update(node.input)
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    visit(sub)
        used.update(o.name for o in graph.output)

    visit(model.graph)
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model


def is_zipmap_output(model: onnx.ModelProto, output: str) -> bool:
    return any(n.op_type == "ZipMap" and n.domain == "ai.onnx.ml" and output in n.output for n in model.graph.node)


def zipmaps_as_tensors(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Each ZipMap that writes a graph output becomes an Identity of its [N, classes] float input, under the same
    output name: the values ZipMap would have zipped with the class labels, in the model's class order."""
    outputs = {o.name: o for o in model.graph.output}
    rewritten: list[str] = []
    for index, node in enumerate(model.graph.node):
        if node.op_type != "ZipMap" or node.domain != "ai.onnx.ml" or node.output[0] not in outputs:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        classes = len(attrs.get("classlabels_int64s") or attrs.get("classlabels_strings") or [])
        model.graph.node[index].CopyFrom(helper.make_node("Identity", [node.input[0]], [node.output[0]],
                                                          name=node.name or f"zipmap_{index}"))
        outputs[node.output[0]].type.CopyFrom(helper.make_tensor_type_proto(
            onnx.TensorProto.FLOAT, [outputs[node.output[0]].name + "_batch", classes or None]))
        rewritten.append(node.output[0])
    if rewritten and not any(n.domain == "ai.onnx.ml" for n in model.graph.node):
        kept = [o for o in model.opset_import if o.domain != "ai.onnx.ml"]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    return model, rewritten
