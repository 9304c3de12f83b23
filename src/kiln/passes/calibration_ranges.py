"""Activation ranges kept per (float graph, calibration samples, method): ONNX Runtime's calibration is most of a Q/DQ
graph's quantization time (all-MiniLM-L6-v2's TensorRT int8 graph, 100 sentences: 15 of its 17 s on an AMD EPYC Zen 4),
and the int8 and fp8 graphs of one model, a rebuild with another --keep-fp32, a static int8 retry without an
unrangeable node, and the final graph of the SmoothQuant strength a search chose all read the same ranges.

Kept as ONNX Runtime's own calibration cache (`quantize_static(calibration_cache_path=...)`, ONNX Runtime 1.32+) in the
stage cache's folder (`calibration/`, pruned with it), while a run has the cache on (`kept_in`). The key is the float graph's bytes before any opset
conversion (a conversion keeps tensor names and values), the samples' bytes in order, the method and the op types whose
tensors are calibrated, and ONNX Runtime's version. A kept file is used only where it holds a range for every tensor the
quantizer will ask for (a graph whose tensors were renamed to quantize asks for other names); otherwise it is replaced.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import onnx

from kiln.calibration import Samples

LOGIC = 1  # bumped when what a kept range means changes
_FOLDER: ContextVar[Path | None] = ContextVar("kiln_calibration_ranges", default=None)
CALIBRATED_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)


@contextlib.contextmanager
def kept_in(folder: Path | None):
    """Within this block, calibration ranges are read from and written to `folder` (None: neither)."""
    token = _FOLDER.set(folder)
    try:
        yield
    finally:
        _FOLDER.reset(token)


def samples_digest(feeds: tuple) -> str:
    """sha256 over the samples' input names and bytes, in order (the order sets the histograms' bin width)."""
    h = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            value = np.ascontiguousarray(feed[name])
            h.update(f"{name}:{value.dtype}:{value.shape}".encode())
            h.update(value.tobytes())
    return h.hexdigest()


@functools.cache
def _onnxruntime_keeps_ranges() -> bool:
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def ranges_file(graph: Path, samples: Samples, settings: dict) -> Path | None:
    """Where the ranges of `graph` (the float graph as the pass received it) over `samples` with `settings` (method,
    percentile, op types) are kept; None when the cache is off or this ONNX Runtime cannot read a kept range."""
    folder = _FOLDER.get()
    if folder is None or not _onnxruntime_keeps_ranges():
        return None
    import onnxruntime

    from kiln.artifact.cache import make_key
    from kiln.exporters.base import sha256_file

    data = graph.with_name(graph.name + ".data")
    parts = {"graph": sha256_file(graph), "data": sha256_file(data) if data.exists() else None,
             "samples": samples_digest(samples.feeds), "settings": settings, "onnxruntime": onnxruntime.__version__,
             "logic": LOGIC}
    return folder / f"{make_key(parts)}.json"


def calibrated_tensors(model: onnx.ModelProto, op_types: list[str]) -> set[str]:
    """The tensors ONNX Runtime's calibrator ranges: inputs and outputs of `op_types` nodes that are not initializers
    (those of a known non-float type left out; an unknown type counts, so a miss is the worst an error costs)."""
    known = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.input,
                                                              *model.graph.output) if v.type.HasField("tensor_type")}
    constants = {i.name for i in model.graph.initializer}
    return {name for node in model.graph.node if node.op_type in op_types for name in (*node.input, *node.output)
            if name and name not in constants and known.get(name, onnx.TensorProto.FLOAT) in CALIBRATED_TYPES}


def cache_option(kept: Path | None, prepared: Path, op_types: list[str]) -> dict:
    """quantize_static's keyword for `kept`: read where it ranges every tensor `prepared` will ask for, else (re)written
    by this calibration. {} when nothing is kept."""
    if kept is None:
        return {}
    if kept.is_file():
        with contextlib.suppress(OSError):
            os.utime(kept)  # last use: what `kiln cache prune --older-than` reads
        try:
            ranged = set(json.loads(kept.read_text())["data"])
        except (OSError, ValueError, KeyError, TypeError):
            ranged = set()
        if not calibrated_tensors(onnx.load(str(prepared), load_external_data=False), op_types) <= ranged:
            kept.unlink(missing_ok=True)
    kept.parent.mkdir(parents=True, exist_ok=True)
    return {"calibration_cache_path": str(kept)}
