"""The language-model matrix's verdict on cells as measured: which are within the budget, and which is recommended.
Pure logic on cell records (the real matrix runs in tests/integration/test_llamacpp.py)."""

from __future__ import annotations

from kiln.llm.matrix import DEFAULT_MAX_PERPLEXITY_INCREASE, _meets, _recommend, llm_budget
from kiln.report.llm_comparison import render_llm_comparison_markdown


def cell(target, precision, increase, tokens_per_s, status="ok", agreement=0.9, cosine=0.99):
    return {"target": target, "precision": precision, "status": status, "reason": None if status == "ok" else "x",
            "perplexity_increase": increase, "decode_tokens_per_s": tokens_per_s, "greedy_agreement": agreement,
            "logits_cosine_min": cosine, "recommended": False, "ranked_tokens_per_s": None}


def budget(ppl=None, agreement=None, cosine=None, given=True):
    return {"max_perplexity_increase": ppl, "min_agreement": agreement, "min_cosine": cosine, "given": given}


def test_default_budget_is_a_perplexity_increase_of_5_percent():
    from kiln.config import ExportConfig

    config = ExportConfig(source="m", target="onnxruntime", out="o")
    assert llm_budget(config) == budget(DEFAULT_MAX_PERPLEXITY_INCREASE, given=False)
    config = ExportConfig(source="m", target="onnxruntime", out="o", llm={"min_agreement": 0.5})
    assert llm_budget(config) == budget(agreement=0.5)  # a given budget replaces the default, it does not add to it


def test_every_given_limit_must_hold_and_unbuilt_cells_never_do():
    b = budget(0.05, agreement=0.8, cosine=0.95)
    assert _meets(cell("a", "p", 0.05, 10), b)
    assert not _meets(cell("a", "p", 0.051, 10), b)
    assert not _meets(cell("a", "p", 0.01, 10, agreement=0.79), b)
    assert not _meets(cell("a", "p", 0.01, 10, cosine=0.9), b)
    assert not _meets(cell("a", "p", 0.01, 10, status="rejected"), b)
    assert not _meets(cell("a", "p", None, None, status="failed"), b)


def test_the_fastest_decode_within_the_budget_is_recommended_with_its_margin():
    cells = [cell("onnxruntime-cpu", "int4-weights", 0.094, 190.0), cell("llama.cpp", "q4_k_m", 0.039, 150.0),
             cell("openvino-cpu", "int4-weights", 0.062, 110.0), cell("llama.cpp", "q8_0", 0.009, 120.0)]
    for c in cells:
        c["meets_budget"] = _meets(c, budget(0.07))
    rec = _recommend(cells, budget(0.07))
    assert (rec["target"], rec["precision"]) == ("llama.cpp", "q4_k_m")  # ONNX Runtime is faster, outside the budget
    assert rec["runner_up"] == {"target": "llama.cpp", "precision": "q8_0", "decode_ratio": 1.25}
    assert "1.25x the next, llama.cpp q8_0" in rec["reason"] and "perplexity +3.9%" in rec["reason"]
    assert [c["recommended"] for c in cells] == [False, True, False, False]


def test_interleaved_figures_rank_and_a_tie_goes_to_the_lower_perplexity():
    """Each cell's own measurement ran at another moment; the interleaved re-measurement decides, and speeds within
    5 % of the fastest are a tie on a shared machine, won by the more accurate cell."""
    cells = [cell("onnxruntime-cpu", "int4-weights", 0.045, 195.0), cell("llama.cpp", "q8_0", 0.009, 120.0),
             cell("llama.cpp", "q4_k_m", 0.039, 118.0)]
    for c, again in zip(cells, (140.0, 150.0, 120.0)):
        c["meets_budget"], c["ranked_tokens_per_s"] = _meets(c, budget(0.05)), again
    rec = _recommend(cells, budget(0.05))
    assert (rec["target"], rec["precision"]) == ("llama.cpp", "q8_0") and "interleaved decode (150.0" in rec["reason"]
    cells[0]["ranked_tokens_per_s"], cells[0]["recommended"], cells[1]["recommended"] = 155.0, False, False
    rec = _recommend(cells, budget(0.05))  # 150 is within 5 % of 155: the lower perplexity wins the tie
    assert (rec["target"], rec["precision"]) == ("llama.cpp", "q8_0") and "a tie on this machine" in rec["reason"]
    assert rec["runner_up"]["target"] == "onnxruntime-cpu" and abs(rec["runner_up"]["decode_ratio"] - 150 / 155) < 1e-9


def test_untimed_cells_within_the_budget_recommend_the_most_accurate():
    """--no-bench: nothing to rank by speed, and a cell within the budget is still a recommendation (exit 0)."""
    cells = [cell("llama.cpp", "q4_k_m", 0.039, None), cell("llama.cpp", "q8_0", 0.009, None),
             cell("openvino-cpu", "int4-weights", 0.2, None)]
    for c in cells:
        c["meets_budget"] = _meets(c, budget(0.05))
    rec = _recommend(cells, budget(0.05))
    assert (rec["target"], rec["precision"]) == ("llama.cpp", "q8_0") and "--no-bench" in rec["reason"]
    assert _recommend([cells[2]], budget(0.05)) is None  # nothing within the budget: no recommendation


def test_the_markdown_marks_the_recommendation_and_cells_outside_the_budget():
    cells = [cell("llama.cpp", "q4_k_m", 0.039, 150.0), cell("onnxruntime-cpu", "int4-weights", 0.094, 190.0),
             cell("onnxruntime-cpu", "q4_k_m", None, None, status="refused")]
    for c in cells:
        c.update(out="o", report=None, weights="w", size_mib=100.0, perplexity=10.0, next_token_kl=0.03, ttft_ms=20.0,
                 decode_speedup_vs_source=None, meets_budget=_meets(c, budget(0.05, given=False)))
    comparison = {"model": {"name": "smol"}, "cells": cells, "budget": budget(0.05, given=False),
                  "recommendation": _recommend(cells, budget(0.05, given=False)), "ranking": None,
                  "source": {"threads": 2, "perplexity": 9.6, "perplexity_tokens": 1016, "text": "eval.txt",
                             "decode_tokens_per_s": 5.0}}
    text = render_llm_comparison_markdown(comparison)
    assert "| ★ | llama.cpp | q4_k_m | ok |" in text and "| onnxruntime-cpu | int4-weights | ok, outside the budget" in text
    assert "| onnxruntime-cpu | q4_k_m | refused: x |" in text
    assert "Budget (default): perplexity increase ≤ +5.0%." in text and "**Recommendation: llama.cpp q4_k_m**" in text
