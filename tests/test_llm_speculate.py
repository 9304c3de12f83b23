"""Prompt lookup's guesses and the serving recommendation: pure data, no model."""

import pytest

from kiln.llm.serving_bench import recommend
from kiln.llm.speculate import lookup


def test_lookup_continues_the_most_recent_earlier_occurrence_of_the_longest_tail():
    context = [1, 2, 3, 4, 5, 9, 2, 3, 8, 2, 3]
    # no earlier (8, 2, 3); the tail (2, 3) occurs at positions 1 and 6, and the most recent continues 8, 2, 3
    assert lookup(context, max_ngram=3, max_draft=3) == [8, 2, 3]
    assert lookup(context, max_ngram=3, max_draft=5) == [4, 5, 9, 2, 3]  # only the older one has 5 after it
    assert lookup([5, 6, 7, 1, 2, 3, 5, 6, 7], max_ngram=3, max_draft=2) == [1, 2]  # the 3-gram wins over shorter
    assert lookup([7] * 8, max_ngram=3, max_draft=4) == [7, 7, 7, 7]


def test_lookup_guesses_nothing_without_a_repeated_tail_of_two():
    assert lookup([1, 2, 3, 4], max_ngram=3, max_draft=5) == []
    assert lookup([1, 2, 3, 1], max_ngram=3, max_draft=5) == []  # a single matching token is not enough
    assert lookup([1, 2, 3, 1], max_ngram=3, max_draft=5, min_ngram=1) == [2, 3, 1]


def _curve(speedups):
    return {"levels": [{"requests": n, "tokens_per_s": 10.0 * s, "speedup": s, "identical_to_alone": n,
                        "inter_token_ms": {"p50": 20.0, "p99": 30.0}} for n, s in speedups]}


def _rows(engine, copy, open_):
    return [{"runner": engine, "prompt": "copy-heavy", "speedup": copy},
            {"runner": engine, "prompt": "open-ended", "speedup": open_},
            {"runner": "kiln generate", "prompt": "copy-heavy", "speedup": 9.0}]  # not the engine's: ignored


@pytest.mark.parametrize("copy,open_,verdict", [(3.1, 0.95, "for every request"),
                                                (3.1, 0.6, "where answers quote the prompt"),
                                                (1.1, 0.6, "leave it off")])
def test_prompt_lookup_is_recommended_from_the_engines_own_figures(copy, open_, verdict):
    measured = {"prompt_lookup": {"rows": _rows("openvino-genai", copy, open_)},
                "draft_speculation": {"rows": _rows("openvino-genai", open_, open_)},
                "concurrency": _curve([(1, 1.0), (4, 3.0)])}
    advice = recommend(measured, "openvino-genai")
    assert advice[0].startswith("prompt lookup: ") and verdict in advice[0] and f"copy-heavy {copy:.2f}x" in advice[0]
    assert advice[1] == (f"draft speculation: leave it off on this CPU (copy-heavy {open_:.2f}x, open-ended "
                         f"{open_:.2f}x decode tokens/s)")
    assert advice[2].startswith("batching: ") and len(advice) == 3


def test_batching_recommends_the_fewest_requests_near_the_best_throughput():
    advice = recommend({"concurrency": _curve([(1, 1.0), (2, 1.8), (4, 3.3), (8, 3.5)])}, "openvino-genai")
    assert advice == [advice[0]] and "serve up to 4 requests at once" in advice[0] and "3.30x" in advice[0]
    flat = recommend({"concurrency": _curve([(1, 1.0), (4, 1.1), (8, 1.05)])}, "onnxruntime-genai")
    assert "little gain here (1.10x at 4 requests); serve one request at a time" in flat[0]
