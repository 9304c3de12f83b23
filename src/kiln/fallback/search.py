"""Which units to keep in high precision: the fewest, cheapest ones that bring the tuning split within budget.

The algorithm (see ../shared/research/mixed_precision.md, section 7), deterministic for deterministic evaluations:
1. all units low: within budget, done (nothing kept);
2. sensitivity, scored by the sweep's continuous error: for a top-1 budget, each unit restored alone on top of the
   all-low graph (NNCF's "revert one group" score, which sees the unit's interaction with the rest); for a
   continuous budget, each unit quantized alone on the all-high graph (the error it adds, free of the other units'
   noise); a unit whose restore does not help, or that adds no error, is not a candidate;
3. order by sensitivity per unit of cost (FLOPs kept in high precision, plus a boundary term per unit), the
   best buy first;
4. keep the first k of that order for k = 1, 2, 4, 8, ... until one passes, then bisect between the last failing
   and the first passing k (O(log n) evaluations, not n);
5. step back: drop each kept unit in turn, costliest first, where the budget still holds without it (on a
   continuous budget, with half the slack the prefix point left).
A wall-clock deadline bounds steps 2-5; when it passes, the best passing point found so far is the answer, and the
result says the search was cut short.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from kiln.passes.qdq_units import Unit


@dataclass(frozen=True)
class Point:
    kept: tuple[str, ...]  # unit names in high precision
    distance: float  # how far from the reference (lower is better): the budget's own metric
    passed: bool
    summary: dict = field(default_factory=dict)  # the metrics the budget reads, for the report's curve

    def to_dict(self) -> dict:
        return {"kept": len(self.kept), "kept_units": list(self.kept), "distance": self.distance,
                "passed": self.passed, **self.summary}


@dataclass
class SearchResult:
    chosen: Point | None  # the point shipped: passing and cheapest found; None when nothing passed
    best: Point  # the closest point (the answer when nothing passed)
    curve: list[Point]
    sensitivity: dict[str, float]  # error each unit adds alone, or recovers when restored alone (`alone`)
    order: list[str]
    evaluations: int
    timed_out: bool
    seconds: float
    alone: str = "restore"  # how sensitivity was measured: "restore" (recovered) or "quantize" (error added)

    def to_dict(self) -> dict:
        return {"chosen": self.chosen.to_dict() if self.chosen else None, "best": self.best.to_dict(),
                "curve": [p.to_dict() for p in self.curve], "sensitivity": self.sensitivity,
                "sensitivity_by": f"each unit {self.alone}d alone", "order": self.order,
                "evaluations": self.evaluations, "timed_out": self.timed_out, "seconds": round(self.seconds, 2)}


class _Deadline(Exception):
    pass


def search(units: list[Unit], evaluate: Callable[[tuple[str, ...]], Point], seconds: float,
           report: Callable[[str], None] = lambda text: None,
           sweep: Callable[[tuple[str, ...]], Point] | None = None,
           step_back_share: float | None = None, alone: str = "restore") -> SearchResult:
    """Run the search; `evaluate(kept)` measures the graph with those units restored on the tuning split, `sweep`
    (default: evaluate) scores it for the one-unit-at-a-time sensitivity sweep (lower is better; a continuous
    error on a few tuning samples in practice, see TuningEvaluator.sweep); `alone`: "restore" (each unit high on the
    all-low graph) or "quantize" (each unit low on the all-high graph), see TuningEvaluator.alone.
    `step_back_share`: the distance a point passes at; given, step-back keeps half of what the prefix point left of
    it (`_step_back`)."""
    start = time.perf_counter()
    cost = unit_costs(units)
    names = [u.name for u in units]
    seen: dict[tuple[str, ...], Point] = {}
    on_curve: list[tuple[str, ...]] = []  # the all-low point, the prefixes tried and the step-back trials
    timed_out = False

    def measure(kept: list[str] | tuple[str, ...], *, required: bool = False, curve: bool = True) -> Point:
        key = tuple(sorted(kept, key=names.index))
        if key not in seen:
            if not required and time.perf_counter() - start > seconds:
                raise _Deadline
            seen[key] = evaluate(key)
        if curve and key not in on_curve:
            on_curve.append(key)
        return seen[key]

    low = measure((), required=True)
    sweep = sweep or evaluate
    sensitivity: dict[str, float] = {}
    order: list[str] = []
    chosen = low if low.passed else None
    try:
        if chosen is None:
            def swept(kept: tuple[str, ...]) -> float:
                return (sweep(kept) if sweep is not evaluate else measure(kept, curve=False)).distance

            quantize = alone == "quantize"
            base = swept(tuple(names) if quantize else ())
            for index, name in enumerate(names):
                if time.perf_counter() - start > seconds:
                    raise _Deadline
                sensitivity[name] = (swept(tuple(n for n in names if n != name)) - base if quantize
                                     else base - swept((name,)))
                if index % 8 == 7:
                    report(f"{index + 1}/{len(names)} units scored")
            order = _ranked(names, sensitivity, cost)
            chosen = prefix_search(order, measure, report)
            if chosen is not None:
                chosen = _step_back(chosen, cost, lambda kept: measure(kept, curve=False), report, step_back_share)
                measure(chosen.kept)  # on the curve: the point shipped
    except _Deadline:
        timed_out = True
        if not order and sensitivity:  # scored part of the units: rank what was scored
            order = _ranked([n for n in names if n in sensitivity], sensitivity, cost)
        passing = [p for p in seen.values() if p.passed]
        chosen = min(passing, key=lambda p: (sum(cost[n] for n in p.kept), p.distance)) if passing else None
    best = chosen or min(seen.values(), key=lambda p: (p.distance, len(p.kept)))
    curve = sorted((seen[key] for key in on_curve), key=lambda p: (len(p.kept), p.distance))
    return SearchResult(chosen, best, curve, sensitivity, order, len(seen), timed_out, time.perf_counter() - start,
                        alone)


def unit_costs(units: list[Unit]) -> dict[str, float]:
    """What keeping a unit in high precision costs: its FLOPs, plus one median unit's FLOPs for the boundary it
    creates (the quantize/dequantize and layout conversions around a float island cost about as much whatever the
    unit's size). Without that term, per-FLOP ranking fills the head of the order with tiny units whose recovery is
    noise (EfficientNet-Lite0 on OpenVINO: 21 one-by-one convolutions and pools kept, slower than all float, where
    the stem convolution alone bought most of the budget)."""
    flops = sorted(max(u.flops, 1) for u in units)
    boundary = flops[len(flops) // 2] if flops else 1
    return {u.name: max(u.flops, 1) + boundary for u in units}


def _ranked(names: list[str], sensitivity: dict[str, float], cost: dict[str, float]) -> list[str]:
    """Units that matter (their error, or what restoring them recovers), by sensitivity per unit of cost; then the
    rest, cheapest first (restoring every unit gives the float graph back, so the order always ends at a point that
    passes if any does)."""
    helping = sorted((n for n in names if sensitivity[n] > 0), key=lambda n: (-sensitivity[n] / cost[n], names.index(n)))
    rest = sorted((n for n in names if sensitivity[n] <= 0), key=lambda n: (cost[n], names.index(n)))
    return helping + rest


def prefix_search(order: list[str], measure, report) -> Point | None:
    """Keep the first k units of `order`: doubling k until a pass, then bisection below it. `measure(kept)` returns
    the Point of that set; None when even the whole order does not pass."""
    if not order:
        return None
    failing, passing = 0, None
    k = 1
    while True:
        k = min(k, len(order))
        point = measure(order[:k])
        report(f"k={k}: {'within budget' if point.passed else 'over budget'}")
        if point.passed:
            passing = (k, point)
            break
        failing = k
        if k == len(order):
            return None
        k *= 2
    while passing[0] - failing > 1:
        middle = (failing + passing[0]) // 2
        point = measure(order[:middle])
        report(f"k={middle}: {'within budget' if point.passed else 'over budget'}")
        if point.passed:
            passing = (middle, point)
        else:
            failing = middle
    return passing[1]


def _step_back(point: Point, cost: dict[str, float], measure, report, share: float | None) -> Point:
    """Drop kept units, costliest first, wherever the budget still holds without them with half the slack the prefix
    point left: step-back tries many points near the limit and would keep whichever passes by the luck of the tuning
    samples (MiniLM's TensorRT graph, 32 tuning sentences: 15 units at tuning cosine 0.9935 stepped back to 6 at
    0.9907, 0.978 on the evaluation set against a 0.98 budget). Holding each drop to the prefix point's own distance
    was too strict (28 of 36 units kept instead of 19)."""
    limit = (point.distance + share) / 2 if share is not None else float("inf")
    for name in sorted(point.kept, key=lambda n: -cost[n]):
        if len(point.kept) <= 1:
            break
        trial = measure(tuple(n for n in point.kept if n != name))
        if trial.passed and trial.distance <= limit:
            report(f"dropped {name}: still within budget")
            point = trial
    return point
