"""OpenVINO's CPU plugin compiles no operation whose output rank is unknown ("doesn't support Squeeze operation
with dynamic rank"): torch.onnx writes `x.squeeze(d)` as an If on the size of dim d, and a Squeeze with computed
axes has no rank either until the input shapes are known. Where the converted model has such operations, the
inputs are fixed to the export shape (batch axes first left dynamic), which gives every operation a rank; the
artifact then takes that shape only, and the report says so."""

from __future__ import annotations

from kiln.calibration import Feed
from kiln.exporters.shapes import is_batch
from kiln.signature import Signature

MAX_NAMED = 4  # operations named in the report


def dynamic_rank_ops(model) -> list[str]:
    """Operations of an ov.Model with an output of unknown rank, as 'Type name'."""
    return sorted({f"{op.get_type_name()} {op.get_friendly_name()}" for op in model.get_ordered_ops()
                   if op.get_type_name() not in ("Result", "Parameter")
                   and any(o.get_partial_shape().rank.is_dynamic for o in op.outputs())})


def fix_dynamic_ranks(model, signature: Signature, example: Feed | None) -> dict | None:
    """Reshape `model` in place so that no operation has a dynamic rank; None when nothing needed it.
    Returns what was done: the operations, the shapes the inputs now take, and whether batch stayed dynamic."""
    import openvino as ov

    ranks = dynamic_rank_ops(model)
    if not ranks or not example:
        return None
    declared = {t.name: t.shape for t in signature.inputs}

    def shapes(keep_batch: bool) -> dict[str, list]:
        out = {}
        for name, value in example.items():
            if name not in declared or not hasattr(value, "shape"):
                continue
            dims = declared[name]
            out[name] = [-1 if keep_batch and axis < len(dims) and isinstance(dims[axis], str) and is_batch(dims[axis])
                         else size for axis, size in enumerate(value.shape)]
        return out

    names = {n for p in model.inputs for n in p.get_names()}
    for keep_batch in (True, False):
        chosen = {k: v for k, v in shapes(keep_batch).items() if k in names}
        if keep_batch and not any(-1 in v for v in chosen.values()):
            continue  # no batch axis to keep: the all-static attempt below is the same
        model.reshape({k: ov.PartialShape(v) for k, v in chosen.items()})
        if not dynamic_rank_ops(model):
            return {"reason": f"OpenVINO's CPU plugin cannot compile operations of dynamic rank: "
                              f"{', '.join(ranks[:MAX_NAMED])}{' ...' if len(ranks) > MAX_NAMED else ''}",
                    "shapes": {k: [None if d == -1 else d for d in v] for k, v in chosen.items()},
                    "batch_dynamic": keep_batch}
    return None  # still dynamic: compiling says which operation, as before
