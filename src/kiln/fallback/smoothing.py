"""The SmoothQuant strength of a searched Q/DQ graph, chosen on the tuning split before the per-unit search.

How much of the activations' outlier range moves into the weights decides how far the all-int8 graph starts from the
budget, and so how many units the search must keep in float. The right strength differs by quantizer: on MiniLM,
dynamic int8 (ranges taken at run time) does best at 0.8, the TensorRT graph's static per-tensor Q/DQ at 1.0, where
the search keeps 12 of 36 MatMuls in float against 19 at 0.8. Each candidate is smoothed and quantized on a few
calibration samples and scored on the whole tuning split; the final graph is then made once, from all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx

from kiln.calibration import Samples
from kiln.config import FallbackPlan
from kiln.fallback.tune import whole_graph_scorer

CHOICE_RANGES = 32  # calibration samples each candidate's smoothing and ranges come from


def choose_alpha(reference: Path, source: Path, ranges: Samples, tuning: Samples, plan: FallbackPlan, settings: dict,
                 choices: tuple[float, ...], make_graph: Callable[[Path, Path, Samples, float], None], work: Path,
                 progress=lambda text: None) -> tuple[float, dict]:
    """The candidate whose low-precision graph is closest to the budget on the tuning split (the first among equals).
    `make_graph(source, dst, samples, alpha)` writes the smoothed, quantized graph. Returns (alpha, record)."""
    few = Samples(ranges.feeds[:CHOICE_RANGES], ranges.kind, ranges.description, ranges.synthetic)
    evaluate = whole_graph_scorer(reference, tuning, plan, settings)
    rows, best = {}, None
    for alpha in choices:
        graph = work / f"alpha-{alpha:g}.onnx"
        make_graph(source, graph, few, alpha)
        point = evaluate.score(onnx.load(str(graph)))
        graph.unlink()
        rows[f"{alpha:g}"] = {"distance": round(point.distance, 6), **point.summary}
        progress(f"smoothing alpha {alpha:g}: {point.distance:.3f} of the budget on the tuning split")
        if best is None or point.distance < rows[f"{best:g}"]["distance"]:
            best = alpha
    return best, {"chosen": best, "candidates": rows, "ranges_samples": len(few),
                  "rule": "lowest distance to the budget of the all-low-precision graph on the tuning split"}
