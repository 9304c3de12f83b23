"""Convert a graph up to the opset a pass needs, and say so: old converters write opset 9-12, and per-channel
Q/DQ (DequantizeLinear's `axis`) exists from opset 13, float8 from 19. ONNX's version converter rewrites the ops
whose signatures changed; it runs on the graph structure alone, so external weights stay where they are."""

from __future__ import annotations

from pathlib import Path

import onnx

from kiln.errors import ExportError
from kiln.signature import default_opset

PER_CHANNEL_QDQ = 13  # DequantizeLinear/QuantizeLinear gained `axis` in opset 13


def at_least(src: Path, dst: Path, minimum: int, why: str) -> dict | None:
    """`src` converted to opset `minimum` at `dst` when it is older (returns what was done), else None."""
    model = onnx.load(str(src), load_external_data=False)
    current = default_opset(model)
    if current >= minimum:
        return None
    try:
        converted = onnx.version_converter.convert_version(model, minimum)
    except Exception as exc:  # the converter raises plain RuntimeErrors naming the op it has no adapter for
        raise ExportError(f"the graph is opset {current} and {why} needs opset {minimum}; ONNX's version converter "
                          f"failed: {' '.join(str(exc).split())[:240]}",
                          hint="re-export the model at a newer opset, or use --precision fp32") from None
    if src.with_name(src.name + ".data").exists():  # external data resolves relative to the model file
        onnx.external_data_helper.load_external_data_for_model(converted, str(src.parent))
        onnx.save_model(converted, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=dst.name + ".data", size_threshold=1024)
    else:
        onnx.save(converted, str(dst))
    return {"from": current, "to": minimum, "why": why, "tool": f"onnx.version_converter {onnx.__version__}"}
