"""The recipe ladder's dynamic-int8 rung per unit: dynamic int8 with the MatMuls that cost the most accuracy in float.

On an x86 CPU without VNNI ONNX Runtime's int8 kernels run with 7-bit weights, and plain dynamic int8 can miss a
budget that the searched static graph holds only by keeping so much in float that it is no faster than float
(MiniLM, AMD EPYC Zen 3, `--min-cosine 0.99`: dynamic int8 at tuning cosine min 0.9912 against the 0.995 the margin
asks; the static graph with 34 of 58 units float at the speed of fp32; the export shipped fp32). The static search has
already ranked every unit by the error it adds alone; its order, restricted to the nodes dynamic quantization
touches, ranks these too (on that MiniLM graph both orders put the FFN output projections, which read GELU's outputs,
first). Prefixes of that order are quantized again (about a second each) and scored on the tuning split: doubling k
until one passes, then bisecting, so a few dynamic quantizations, not one per unit.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import onnx

from kiln.backends.onnxruntime.quantize import DYNAMIC_OPS, quantize_dynamic_int8
from kiln.config import QuantizationPlan
from kiln.fallback.search import Point, prefix_search


def dynamic_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes ONNX Runtime's dynamic quantizer turns int8 (a MatMul only with a constant weight)."""
    constants = {i.name for i in model.graph.initializer}
    return {n.name for n in model.graph.node if n.name and n.op_type in DYNAMIC_OPS
            and (n.op_type != "MatMul" or (len(n.input) > 1 and n.input[1] in constants))}


def search_dynamic(src: Path, dst: Path, quant: QuantizationPlan, order: list[str], score: Callable[[Path], Point],
                   progress: Callable[[str], None] = lambda text: None) -> dict | None:
    """Write to `dst` the dynamic-int8 graph of `src` with the fewest leading units of `order` (among the nodes
    dynamic quantization touches) kept float whose `score` passes; returns what was kept and the points tried, or
    None when plain dynamic int8 already passes, when `order` names none of those nodes, or when no prefix passes."""
    candidates = [name for name in order if name in dynamic_nodes(onnx.load(str(src), load_external_data=False))]
    tried: dict[tuple[str, ...], Point] = {}
    with tempfile.TemporaryDirectory(prefix="kiln-dynamic-") as tmp:
        def measure(kept) -> Point:
            kept = tuple(kept)
            if kept not in tried:
                graph = Path(tmp) / f"k{len(kept)}.onnx"
                quantize_dynamic_int8(src, graph, quant, exclude=kept)
                tried[kept] = Point(kept, *_scored(score(graph)))
            return tried[kept]

        if not candidates or measure(()).passed:
            return None
        chosen = prefix_search(candidates, measure, lambda text: progress(f"dynamic int8, {text}"))
    if chosen is None:
        return None
    quantize_dynamic_int8(src, dst, quant, exclude=chosen.kept)  # again, where it ships (external data names)
    curve = sorted(tried.values(), key=lambda p: len(p.kept))
    return {"kept_fp32": list(chosen.kept), "units": len(candidates), "evaluations": len(tried),
            "curve": [p.to_dict() for p in curve], "order": "the static search's, among the nodes dynamic int8 touches"}


def _scored(point: Point) -> tuple[float, bool, dict]:
    return point.distance, point.passed, point.summary
