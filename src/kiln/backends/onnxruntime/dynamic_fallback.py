"""The recipe ladder's dynamic-int8 rung per unit: dynamic int8 with the nodes that cost the most accuracy in float.

On an x86 CPU without VNNI ONNX Runtime's int8 kernels run with 7-bit weights, and plain dynamic int8 can miss a
budget that the searched static graph holds only by keeping so much in float that it is no faster than float
(MiniLM, AMD EPYC Zen 3, `--min-cosine 0.99`: dynamic int8 at tuning cosine min 0.9912 against the 0.995 the margin
asks; the static graph with 34 of 58 units float at the speed of fp32; the export shipped fp32). The static search has
already ranked its units (for a cosine or error budget by the error each adds alone, per unit of cost); that order,
restricted to the nodes dynamic quantization touches, ranks these too (on that MiniLM graph both orders put the FFN
output projections, which read GELU's outputs, first). Nodes the static search did not rank (it was cut short, or
the static graph named them differently) follow in graph order. Prefixes are quantized again (about a second each)
and scored on the tuning split: doubling k until one passes, then bisecting, within a time limit.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import onnx

from kiln.backends.onnxruntime.quantize import DYNAMIC_OPS, quantize_dynamic_int8
from kiln.config import QuantizationPlan
from kiln.fallback.search import Point, prefix_search


class _OutOfTime(Exception):
    pass


def dynamic_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes ONNX Runtime's dynamic quantizer turns int8 (a MatMul only with a constant weight), in
    graph order."""
    constants = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.name and n.op_type in DYNAMIC_OPS
            and (n.op_type != "MatMul" or (len(n.input) > 1 and n.input[1] in constants))]


def search_dynamic(src: Path, plain: Path, dst: Path, quant: QuantizationPlan, order: list[str],
                   score: Callable[[Path], Point], seconds: float,
                   progress: Callable[[str], None] = lambda text: None) -> dict:
    """`plain`: `src` in dynamic int8, already written. Where it misses the budget (`score`), write to `dst` the
    dynamic-int8 graph of `src` with the fewest leading nodes of the ranking kept float that passes. Returns the
    report's `dynamic_search` block: `kept_fp32` when `dst` was written, else `skipped` saying why."""
    start = time.perf_counter()
    nodes = dynamic_nodes(onnx.load(str(src), load_external_data=False))
    present = set(nodes)
    ranked = [name for name in order if name in present]
    candidates = ranked + [name for name in nodes if name not in set(ranked)]
    record = {"units": len(candidates), "ranked_by_the_static_search": len(ranked)}
    if not candidates:
        return {**record, "skipped": "the graph has no node dynamic int8 quantizes"}
    tried: dict[tuple[str, ...], Point] = {}
    with tempfile.TemporaryDirectory(prefix="kiln-dynamic-") as tmp:
        def measure(kept) -> Point:
            kept = tuple(kept)
            if kept not in tried:
                if kept and time.perf_counter() - start > seconds:
                    raise _OutOfTime
                graph = Path(tmp) / "candidate.onnx"
                if kept:
                    quantize_dynamic_int8(src, graph, quant, exclude=kept)
                point = score(graph if kept else plain)
                tried[kept] = Point(kept, point.distance, point.passed, point.summary)
                for leftover in (graph, graph.with_name(graph.name + ".data")):
                    leftover.unlink(missing_ok=True)
            return tried[kept]

        try:
            chosen = None if measure(()).passed else prefix_search(
                candidates, measure, lambda text: progress(f"dynamic int8, {text}"))
            timed_out = False
        except _OutOfTime:
            passing = [p for p in tried.values() if p.passed and p.kept]
            chosen, timed_out = (min(passing, key=lambda p: len(p.kept)) if passing else None), True
    record.update(evaluations=len(tried), timed_out=timed_out, seconds=round(time.perf_counter() - start, 2),
                  curve=[p.to_dict() for p in sorted(tried.values(), key=lambda p: len(p.kept))])
    if tried[()].passed:
        return {**record, "skipped": "plain dynamic int8 holds the budget"}
    if chosen is None:
        return {**record, "skipped": "no prefix tried holds the budget" + (" (cut short)" if timed_out else "")}
    quantize_dynamic_int8(src, dst, quant, exclude=chosen.kept)  # again, where it ships (external data names)
    return {**record, "kept_fp32": list(chosen.kept)}
