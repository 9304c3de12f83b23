"""The search's reading of a top-1 budget: the disagreement rate a graph's error predicts, from every tuning sample's
margin, not only the samples that flipped. Synthetic logits (numpy), so the true rate is known."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.config import AccuracyBudget
from kiln.fallback.tune import expected_disagreement, score_outputs


def _logits(rng, count: int, classes: int = 100) -> np.ndarray:
    return rng.standard_normal((count, classes)) * 2.0


def test_no_error_predicts_no_disagreement_and_a_near_tie_about_half():
    rng = np.random.default_rng(0)
    ref = _logits(rng, 8)
    assert expected_disagreement([ref], [ref.copy()]) == 0.0
    tie = np.zeros((1, 100))
    tie[0, :2] = (8.0, 7.999)  # the runner-up a hair below; the other classes far
    noisy = tie + rng.standard_normal(tie.shape) * 0.5
    assert expected_disagreement([tie], [noisy]) == pytest.approx(0.5, abs=0.05)
    clear = np.zeros((1, 100))
    clear[0, 0] = 8.0
    assert expected_disagreement([clear], [clear + rng.standard_normal(clear.shape) * 0.5]) < 1e-6


def test_on_a_small_split_it_is_closer_to_the_true_rate_than_the_count_of_flips():
    """42 samples per draw, as EfficientNet-Lite0's tuning split, at a rate near a 10 % budget; the true rate from
    20,000 samples of the same noise. Under that noise the union bound reads a little high, never low."""
    rng = np.random.default_rng(1)
    ref = _logits(rng, 20_000)
    got = ref + rng.standard_normal(ref.shape) * 0.1
    true_rate = float(np.mean(ref.argmax(1) != got.argmax(1)))
    assert 0.04 < true_rate < 0.12
    assert true_rate <= expected_disagreement([ref], [got]) < 1.3 * true_rate
    counted, expected = [], []
    for start in range(0, 42 * 100, 42):
        r, g = ref[start:start + 42], got[start:start + 42]
        counted.append(abs(float(np.mean(r.argmax(1) != g.argmax(1))) - true_rate))
        expected.append(abs(expected_disagreement([r], [g]) - true_rate))
    assert np.mean(expected) < 0.75 * np.mean(counted), (np.mean(expected), np.mean(counted))  # 0.022 against 0.033


def test_a_point_passes_a_top1_budget_on_the_expected_rate_within_its_share():
    """It passes when the expected rate is within the share of the slack and the flips counted within the budget."""
    rng = np.random.default_rng(2)
    ref = _logits(rng, 42)
    noisy = ref + rng.standard_normal(ref.shape) * 0.8
    references = [{"logits": r[None]} for r in ref]
    budget = AccuracyBudget(max_top1_disagreement=0.1)
    point = score_outputs(references, [{"logits": g[None]} for g in noisy], ["logits"], budget, share=0.75)
    tuning = point.summary["tuning"]["logits"]
    expected, counted = tuning["top1_expected_disagreement"], 1.0 - tuning["top1_agreement"]
    assert point.distance == pytest.approx(max(expected, 0.75 * counted) / 0.1, rel=0.05)
    assert 0 < expected and point.passed == (expected <= 0.075 and counted <= 0.1)
    same = score_outputs(references, [{"logits": r[None]} for r in ref], ["logits"], budget, share=0.75)
    assert same.passed and same.summary["tuning"]["logits"]["top1_expected_disagreement"] == 0.0


def test_a_confident_sample_that_flips_puts_the_point_over_budget_whatever_the_rate():
    """40 samples with a clear answer (top-1 probability near 1) and no error; one of them flipped: 2.5 % disagreement,
    well inside a 10 % budget, and still over it, because the budget keeps every confident sample. A flip among near
    ties at the same rate passes."""
    rng = np.random.default_rng(3)
    ref = _logits(rng, 40) * 0.1
    ref[np.arange(40), np.arange(40)] = 20.0  # each sample sure of its own class
    flipped = ref.copy()
    flipped[0, 99] = 25.0
    references = [{"logits": r[None]} for r in ref]
    budget = AccuracyBudget(max_top1_disagreement=0.1)
    point = score_outputs(references, [{"logits": g[None]} for g in flipped], ["logits"], budget, share=0.75)
    tuning = point.summary["tuning"]["logits"]
    assert tuning["top1_agreement"] == pytest.approx(39 / 40) and tuning["top1_agreement_confident"] < 1.0
    assert not point.passed and point.distance > 1.0
    alone = _logits(rng, 40) * 0.1  # only sample 0 is confident, and it flips: confident agreement 0.0
    alone[0, 0] = 20.0
    flipped_alone = alone.copy()
    flipped_alone[0, 99] = 25.0
    point = score_outputs([{"logits": r[None]} for r in alone], [{"logits": g[None]} for g in flipped_alone],
                          ["logits"], budget, share=0.75)
    assert point.summary["tuning"]["logits"]["top1_agreement_confident"] == 0.0 and not point.passed
    tie = ref.copy()
    tie[0] = 0.0
    tie[0, 0] = 0.01  # sample 0 is a near tie now, not confident
    swapped = tie.copy()
    swapped[0, 0], swapped[0, 1] = 0.0, 0.01
    point = score_outputs([{"logits": r[None]} for r in tie], [{"logits": g[None]} for g in swapped], ["logits"],
                          budget, share=0.75)
    assert point.summary["tuning"]["logits"]["top1_agreement"] == pytest.approx(39 / 40)
    assert point.summary["tuning"]["logits"]["top1_agreement_confident"] == 1.0 and point.passed
