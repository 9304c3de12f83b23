"""What every Q/DQ producer shares (ONNX Runtime's static int8, the TensorRT int8/fp8 graph): the quantizer's input
preparation, its calibration-data protocol, --keep-fp32 matching, and the float graph the quantizer read, kept for the
fallback search. Runtime-agnostic: it uses onnxruntime.quantization as a tool, whatever the target."""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import onnx

from kiln.calibration import Samples
from kiln.errors import ExportError
from kiln.passes.loadable import load_error
from kiln.passes.tensor_names import plain_tensor_names

T = TypeVar("T")


def matching_nodes(model: onnx.ModelProto, patterns: tuple[str, ...]) -> list[str]:
    """The graph's node names that the user's --keep-fp32 patterns name (matching_names)."""
    return matching_names([n.name for n in model.graph.node if n.name], patterns)


def matching_names(names: list[str], patterns: tuple[str, ...]) -> list[str]:
    """The names a --keep-fp32 pattern names: the node of exactly that name where there is one, else every name
    containing it (a scope such as `layer.3/`). Exact first, so that a unit name from report.md passed back keeps
    that unit and not also its neighbours whose names extend it (tf2onnx's `conv1d_16/ExpandDims` beside
    `conv1d_16`)."""
    present = set(names)
    exact = {p for p in patterns if p in present}
    scopes = [p for p in patterns if p not in present]
    return [n for n in names if n in exact or any(p in n for p in scopes)]


class CalibrationReader:
    """ORT's CalibrationDataReader protocol over our samples. Samples of several shapes (an OCR model's pages, audio
    clips of different lengths) come grouped by shape, and `stride` says how many the quantizer may read at once: its
    histogram calibrators stack one read's activations into one array, which fails on mixed shapes, and merge the
    histograms of successive reads. The first read sets the histogram's bin width and later reads add bins of that
    width, so the group holding the largest input values is read first (a near-silent clip first would make the
    bins tiny and their number huge)."""

    def __init__(self, samples: Samples, input_names: set[str]):
        feeds = [{k: v for k, v in f.items() if k in input_names} for f in samples.feeds]
        peak: dict[tuple, float] = {}
        for feed in feeds:
            peak[_shapes(feed)] = max(peak.get(_shapes(feed), 0.0), _largest(feed))
        # stable: within a shape, the samples keep their order
        self._feeds = sorted(feeds, key=lambda f: (-peak[_shapes(f)], _shapes(f)))
        groups = Counter(_shapes(f) for f in feeds)
        self.shape_groups = len(groups)
        self.stride = math.gcd(*groups.values()) if len(groups) > 1 else None
        self._index, self._end = 0, len(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._index, self._end = start_index, min(end_index, len(self._feeds))

    def get_next(self):
        if self._index >= self._end:
            return None
        self._index += 1
        return self._feeds[self._index - 1]

    def rewind(self):
        self._index, self._end = 0, len(self._feeds)

    def strided(self) -> dict:
        """The quantizer's extra option that makes it read one shape group (or a divisor of it) at a time."""
        return {"CalibStridedMinMax": self.stride} if self.stride else {}


def _shapes(feed: dict) -> tuple:
    return tuple((name, tuple(value.shape)) for name, value in sorted(feed.items()))


def _largest(feed: dict) -> float:
    """The largest finite |value| over a feed's float inputs (0 where it has none)."""
    values = [np.abs(v[np.isfinite(v)]).max(initial=0.0) for v in feed.values()
              if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.size]
    return float(max(values, default=0.0))


def has_external_data(model_path: Path) -> bool:
    return model_path.with_name(model_path.name + ".data").exists()


def _onnxruntime_tools_without_torch() -> None:
    """Register the package `onnxruntime.tools` without running its __init__, which imports torch whenever torch is
    installed (for a PyTorch export helper the quantizer never calls): 2.8 s of an ONNX source's int8 export on an AMD
    EPYC Zen 3, the bulk of it for a small model. Its modules (symbolic_shape_infer, ...) import as usual."""
    import sys
    import types

    if "onnxruntime.tools" in sys.modules:
        return
    import onnxruntime

    package = types.ModuleType("onnxruntime.tools")
    package.__path__ = [str(Path(onnxruntime.__file__).parent / "tools")]
    package.__package__ = "onnxruntime.tools"
    sys.modules["onnxruntime.tools"] = package


def prepare_for_quantization(src: Path, dst: Path) -> None:
    """ORT's recommended pre-processing (symbolic shape inference, basic optimisation) before calibration."""
    import contextlib

    from onnxruntime.quantization.shape_inference import quant_pre_process

    _onnxruntime_tools_without_torch()

    src, dst = src.resolve(), dst.resolve()
    external = has_external_data(src)
    # When symbolic shape inference gives up (it does on MiniLM), ORT saves its partial model as
    # sym_shape_infer_temp.onnx plus a 90 MB external-data file in the working directory: run it in a
    # scratch one so nothing lands in the user's folder.
    with tempfile.TemporaryDirectory(prefix="kiln-shape-") as scratch, contextlib.chdir(scratch):
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=False, save_as_external_data=external)
        except Exception:  # symbolic shape inference fails on some graphs; ONNX shape inference is enough then
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True, save_as_external_data=external)


def quantize_loadable(quantize: Callable[[], T], prepared: Path, dst: Path, what: str, hint: str) -> tuple[T, int]:
    """Run `quantize` (it reads `prepared` and writes `dst`) until ONNX Runtime loads what it wrote. The quantizer's
    suffixed tensor names can clash with a graph's own (tf2onnx: "Duplicate definition of name"): then `prepared`'s
    internal tensors are renamed plainly and it quantizes once more. Returns its result and how many tensors were
    renamed; a graph still refused is an ExportError naming `what`."""
    result = quantize()
    refused = load_error(dst)
    renamed = plain_tensor_names(prepared, prepared) if refused else 0
    if renamed:
        result = quantize()
        refused = load_error(dst)
    if refused:
        raise ExportError(f"{what} wrote a graph ONNX Runtime refuses: {refused}", hint=hint)
    return result, renamed


def keep_copy(model: Path, copy: Path | None) -> None:
    """Copy a model (and its external data) out of a temporary folder: the float graph the fallback search restores
    units from is the one the quantizer read, node for node."""
    if copy is None:
        return
    import shutil

    shutil.copyfile(model, copy)
    data = model.with_name(model.name + ".data")
    if data.exists():
        shutil.copyfile(data, copy.with_name(model.name + ".data"))
