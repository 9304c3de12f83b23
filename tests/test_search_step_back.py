"""The fallback search's step-back on a table of distances (the search's own logic, no model): on a continuous budget
it keeps half the slack the prefix point left, so it does not walk to whichever point passes by the luck of the
tuning samples; without a share (a top-1 rate) any passing drop is taken."""

from __future__ import annotations

import pytest

from kiln.fallback.search import Point, search
from kiln.passes.qdq_units import Unit

SHARE = 0.5
UNITS = [Unit("a", ("a",), "MatMul", 300), Unit("b", ("b",), "MatMul", 100), Unit("c", ("c",), "MatMul", 200)]
# distance by the set of units kept: b then a recover most per FLOP, c does not help; {b} fails, {a, b} passes at
# 0.2; step-back then finds {a} passing at 0.45: inside the share, past half of the slack {a, b} left ((0.2 + 0.5) / 2)
DISTANCE = {(): 2.0, ("a",): 0.45, ("b",): 1.0, ("c",): 2.0, ("a", "b"): 0.2, ("a", "b", "c"): 0.1,
            ("a", "c"): 0.6, ("b", "c"): 1.4}


def _evaluate(kept: tuple[str, ...]) -> Point:
    distance = DISTANCE[tuple(sorted(kept))]
    return Point(kept, distance, distance <= SHARE)


@pytest.mark.parametrize("share, kept", [(SHARE, ("a", "b")), (None, ("a",))])
def test_step_back_holds_half_the_slack_on_continuous_budgets(share, kept):
    result = search(UNITS, _evaluate, seconds=60, step_back_share=share)
    assert result.order[:2] == ["b", "a"]
    assert tuple(sorted(result.chosen.kept)) == kept
    assert result.chosen.passed and not result.timed_out
