"""How the fallback search isolates a unit (the search's own logic on a table of sweep scores, no model): "quantize"
scores each unit low alone on the all-high graph, the error it adds; "restore" scores each unit high alone on the
all-low graph, the error it takes away. The two can rank differently when the other units' noise moves the
restore-alone score (MiniLM's TensorRT graph); the order must follow the mode the evaluator asks for."""

from __future__ import annotations

import pytest

from kiln.fallback.search import Point, search
from kiln.passes.qdq_units import Unit

UNITS = [Unit("a", ("a",), "MatMul", 100), Unit("b", ("b",), "MatMul", 100), Unit("c", ("c",), "MatMul", 100)]
# sweep score (lower is better) by the set of units kept high. Quantized alone, a adds 0.5, b 0.1, c nothing;
# restored alone on the all-low graph, noise makes b look best (0.9 recovered) and a worse (0.3)
SWEEP = {(): 1.0, ("a",): 0.7, ("b",): 0.1, ("c",): 0.95,
         ("b", "c"): 0.5, ("a", "c"): 0.1, ("a", "b"): 0.0, ("a", "b", "c"): 0.0}
PASSING = {("a",), ("a", "b"), ("a", "c"), ("a", "b", "c")}


def _evaluate(kept: tuple[str, ...]) -> Point:
    key = tuple(sorted(kept))
    return Point(kept, 0.1 if key in PASSING else 2.0, key in PASSING)


@pytest.mark.parametrize("alone, sensitivity, order, chosen", [
    ("quantize", {"a": 0.5, "b": 0.1, "c": 0.0}, ["a", "b", "c"], ("a",)),
    ("restore", {"a": 0.3, "b": 0.9, "c": 0.05}, ["b", "a", "c"], ("a",)),
])
def test_sensitivity_follows_the_isolation_the_evaluator_asks_for(alone, sensitivity, order, chosen):
    swept = []

    def sweep(kept: tuple[str, ...]) -> Point:
        swept.append(tuple(sorted(kept)))
        return Point(kept, SWEEP[tuple(sorted(kept))], False)

    result = search(UNITS, _evaluate, seconds=60, sweep=sweep, alone=alone)
    assert result.sensitivity == pytest.approx(sensitivity)
    assert result.order == order
    assert tuple(sorted(result.chosen.kept)) == chosen
    singles = {("a",), ("b",), ("c",)}
    assert set(swept[1:]) == ({("b", "c"), ("a", "c"), ("a", "b")} if alone == "quantize" else singles)
    assert result.evaluations == (2 if alone == "quantize" else 4)  # the all-low point, then the prefixes tried
