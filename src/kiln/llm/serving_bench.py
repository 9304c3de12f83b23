"""What serving the artifact gains, measured at export: prompt lookup and, with --draft, draft-model speculation
(kiln's generator and the engine) on a copy-heavy and an open-ended prompt, the engine's throughput against
concurrent requests, and the advice they give.

The figures go into report.json's `serving` block; `recommendation` turns them into what a deployment should switch
on. Language-model matrices skip this stage (each cell would take a minute more); `kiln bench ARTIFACT --serving`
measures any artifact later.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiln.llm import speculation_bench as sb
from kiln.llm.concurrency import measure_concurrency

# 8 short questions: the concurrent requests (real text: a random-token prompt makes near-ties everywhere)
QUESTIONS = ("What is the capital of France?", "How do plants make their food?", "Why is the sky blue?",
             "What does a compiler do?", "How far away is the Moon?", "Who wrote Romeo and Juliet?",
             "What is the boiling point of water?", "How do bees make honey?")
LEVELS = (1, 2, 4, 8)
CURVE_TOKENS = 32
WORTH = 1.2  # a speedup below this (a technique on the text it suits, batching) is not worth switching on
OPEN_FLOOR = 0.9  # a technique must not slow open-ended text below this to be on for every request
BATCH_SHARE = 0.9  # the recommended concurrency: the fewest requests reaching this share of the best throughput
TECHNIQUES = (("prompt_lookup", "prompt lookup"), ("draft_speculation", "draft speculation"))


def chat_prompts(tokenizer, texts) -> list[np.ndarray]:
    return [sb.prompt_ids(tokenizer, text) for text in texts]


def measure_serving(root: Path, report: dict, kiln_decoder, tokenizer, threads: int, draft_decoder=None) -> dict:
    """Prompt lookup (and draft speculation when `draft_decoder` runs the artifact's draft/) in kiln's generator and
    the engine, the concurrency curve, and the recommendation, for the artifact at `root` whose report (so far) is
    `report` (its `serving` block says the engine loaded it)."""
    from kiln.llm.draft import DRAFT_DIR

    served = report["serving"]
    prompts = dict(zip(sb.PROMPTS, chat_prompts(tokenizer, sb.PROMPTS.values())))
    draft = root / DRAFT_DIR if draft_decoder is not None else None
    kiln = sb.KilnRunner(kiln_decoder, draft_decoder)
    if report["target"]["backend"] == "openvino":
        engine = sb.OpenVinoGenaiRunner(root, served["settings"], threads, draft)
    else:
        engine = sb.OnnxruntimeGenaiRunner(root, draft)
    common = {"max_draft": sb.MAX_DRAFT, "new_tokens": sb.NEW_TOKENS, "rounds": sb.ROUNDS}
    out = {"prompt_lookup": {"max_ngram": sb.MAX_NGRAM, **common,
                             "rows": sb.measure(kiln, sb.LOOKUP, prompts) + sb.measure(engine, sb.LOOKUP, prompts)}}
    if draft is not None:
        out["draft_speculation"] = {**common, "rows": sb.measure(kiln, sb.DRAFT, prompts)
                                    + sb.measure(engine, sb.DRAFT, prompts)}
    del engine
    questions = [list(map(int, ids)) for ids in chat_prompts(tokenizer, QUESTIONS)]
    out["concurrency"] = measure_concurrency(root, report, list(LEVELS), questions, CURVE_TOKENS, threads, rounds=1)
    out["recommendation"] = recommend(out, served["engine"])
    return out


def recommend(measured: dict, engine: str) -> list[str]:
    """What to switch on when serving with `engine`, from the engine's own figures."""
    advice = [line for key, name in TECHNIQUES if key in measured
              for line in [_technique_advice(measured[key]["rows"], engine, name)] if line]
    return advice + [_batching_advice(measured["concurrency"]["levels"])]


def _technique_advice(rows: list[dict], engine: str, name: str) -> str | None:
    own = {row["prompt"]: row for row in rows if row["runner"] == engine}
    copy, open_ = own.get("copy-heavy"), own.get("open-ended")
    if not (copy and open_):
        return None
    accepted = [f"{r['acceptance']:.2f}" for r in (copy, open_) if r.get("acceptance") is not None]
    figures = (f"copy-heavy {copy['speedup']:.2f}x, open-ended {open_['speedup']:.2f}x decode tokens/s"
               + (f", acceptance {' / '.join(accepted)}" if len(accepted) == 2 else ""))
    if copy["speedup"] >= WORTH and open_["speedup"] >= OPEN_FLOOR:
        return f"{name}: switch it on for every request ({figures})"
    if copy["speedup"] >= WORTH:
        return (f"{name}: switch it on where answers quote the prompt (RAG, summaries, edits), off for open-ended "
                f"generation ({figures})")
    return f"{name}: leave it off on this CPU ({figures})"


def _batching_advice(levels: list[dict]) -> str:
    best = max(row["tokens_per_s"] for row in levels)
    chosen = min((row for row in levels if row["tokens_per_s"] >= BATCH_SHARE * best), key=lambda r: r["requests"])
    top = max(levels, key=lambda r: r["speedup"])
    if chosen["requests"] == 1 or top["speedup"] < WORTH:
        return (f"batching: little gain here ({top['speedup']:.2f}x at {top['requests']} requests); serve one "
                f"request at a time unless throughput matters more than latency")
    same = (f"; batched tokens equal one-at-a-time in {chosen['identical_to_alone']} of {chosen['requests']}"
            if chosen["identical_to_alone"] < chosen["requests"] else "")
    return (f"batching: serve up to {chosen['requests']} requests at once ({chosen['tokens_per_s']:.1f} tokens/s, "
            f"{chosen['speedup']:.2f}x one at a time, inter-token p99 {chosen['inter_token_ms']['p99']:.1f} ms)"
            f"{same}; more requests add under {1 - BATCH_SHARE:.0%} throughput here, so cap by your latency budget")


def render(serving: dict) -> list[str]:
    """report.md lines for the measured part of the serving block."""
    lines = []
    for key, title in (("prompt_lookup", "Prompt lookup"), ("draft_speculation", "Draft speculation")):
        block = serving.get(key)
        if not block:
            continue
        how = f"{block['max_ngram']}-gram, " if "max_ngram" in block else ""
        if key == "draft_speculation" and serving.get("draft"):
            how = f"draft {serving['draft']['artifact']} ({serving['draft']['precision']}), "
        lines += ["", f"{title} ({how}up to {block['max_draft']} guesses, {block['new_tokens']} tokens, best of "
                      f"{block['rounds']}):", "",
                  "| runner | prompt | plain tok/s | with it tok/s | speedup | acceptance | tokens per pass | "
                  "identical to plain |", "|---|---|---|---|---|---|---|---|"]
        for row in block["rows"]:
            acc = "-" if row["acceptance"] is None else f"{row['acceptance']:.2f}"
            tpp = "-" if row["tokens_per_pass"] is None else f"{row['tokens_per_pass']:.2f}"
            lines.append(f"| {row['runner']} | {row['prompt']} | {row['plain_tokens_per_s']:.1f} | "
                         f"{row['technique_tokens_per_s']:.1f} | {row['speedup']:.2f}x | {acc} | {tpp} | "
                         f"{row['identical']} of {row['new_tokens']} |")
    if serving.get("concurrency"):
        from kiln.llm.concurrency import render_curve

        lines += ["", render_curve(serving["concurrency"])]
    if serving.get("recommendation"):
        lines += ["", "Recommendation:", ""] + [f"- {line}" for line in serving["recommendation"]]
    return lines
