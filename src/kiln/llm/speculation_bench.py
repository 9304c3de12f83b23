"""Speculative decoding measured where the artifact runs: prompt lookup and a draft model, in kiln's own generator and
in the artifact's serving engine, each on a prompt whose answer copies its context and on an open-ended one, against
plain greedy decoding on the same runner in the same process.

Both prompts go through the source's chat template. Each pair (plain, technique) is run in interleaved rounds and
the best round of each is kept (a shared machine moves wall time between minutes; only ratios within one run mean
anything). Decode tokens/s excludes the prompt's pass. `identical` counts the leading tokens the technique shares
with plain greedy on the same runner and settings.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from kiln.llm.runners import generate
from kiln.llm.speculate import MAX_DRAFT, MAX_NGRAM, generate_prompt_lookup, generate_with_draft

PARAGRAPH = ("The lighthouse stood on a narrow spit of rock at the mouth of the harbour. Every evening the keeper "
             "climbed the one hundred and twelve steps, trimmed the wick, polished the great lens and wound the "
             "clockwork that turned it. Ships coming home in the dark looked for its slow white flash, two seconds of "
             "light and eight of darkness, and knew they were close to the channel and safe from the reef that had "
             "sunk so many before.")
PROMPTS = {"copy-heavy": f"Copy this text exactly:\n\n{PARAGRAPH}",
           "open-ended": "Write a long story about a dragon who learns to cook."}
NEW_TOKENS = 64
ROUNDS = 2
LOOKUP, DRAFT = "prompt lookup", "draft"


def prompt_ids(tokenizer, text: str) -> np.ndarray:
    """The user turn through the chat template where the tokenizer has one, else the plain text's tokens."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]
    else:
        ids = tokenizer(text)["input_ids"]
    return np.asarray(ids, dtype=np.int64)


def _identical(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _row(runner: str, prompt: str, prompt_tokens: int, plain: list[tuple], fast: list[tuple]) -> dict:
    """One runner on one prompt: runs are (tokens, decode tokens/s, stats)."""
    base, best = max(r[1] for r in plain), max(r[1] for r in fast)
    stats = fast[-1][2]
    rounded = {k: None if stats.get(k) is None else round(stats[k], 3) for k in ("acceptance", "tokens_per_pass")}
    return {"runner": runner, "prompt": prompt, "prompt_tokens": prompt_tokens,
            "plain_tokens_per_s": round(base, 2), "technique_tokens_per_s": round(best, 2),
            "speedup": round(best / base, 3) if base > 0 else None, **rounded,
            "identical": _identical(plain[-1][0], fast[-1][0]), "new_tokens": len(plain[-1][0])}


class KilnRunner:
    """kiln's generator: runners.generate against speculate's prompt lookup or draft speculation."""

    name = "kiln generate"

    def __init__(self, decoder, draft=None):
        self.decoder, self.draft = decoder, draft

    def run(self, ids: np.ndarray, new_tokens: int, technique: str | None) -> tuple[list[int], float, dict]:
        if technique is None:
            g = generate(self.decoder, ids, new_tokens)
            return g.tokens, g.tokens_per_s, {}
        if technique == LOOKUP:
            s = generate_prompt_lookup(self.decoder, ids, new_tokens)
        else:
            s = generate_with_draft(self.decoder, self.draft, ids, new_tokens)
        return s.generation.tokens, s.generation.tokens_per_s, {"acceptance": s.acceptance,
                                                                "tokens_per_pass": s.tokens_per_pass}


class OpenVinoGenaiRunner:
    """openvino-genai's LLMPipeline on its paged-attention backend: plain, with prompt_lookup=True, or with the
    artifact's draft/ as draft_model; max_ngram_size and num_assistant_tokens as kiln's generator uses them."""

    name = "openvino-genai"

    def __init__(self, root: Path, settings: dict, threads: int, draft: Path | None = None):
        import openvino_genai

        props = {**settings, "INFERENCE_NUM_THREADS": str(threads)}
        self.pipes = {None: openvino_genai.LLMPipeline(str(root), "CPU", ATTENTION_BACKEND="PA", **props),
                      LOOKUP: openvino_genai.LLMPipeline(str(root), "CPU", prompt_lookup=True, **props)}
        if draft is not None:
            self.pipes[DRAFT] = openvino_genai.LLMPipeline(
                str(root), "CPU", draft_model=openvino_genai.draft_model(str(draft), "CPU", **props), **props)

    def run(self, ids: np.ndarray, new_tokens: int, technique: str | None) -> tuple[list[int], float, dict]:
        import openvino as ov
        import openvino_genai

        config = openvino_genai.GenerationConfig()
        config.max_new_tokens = config.min_new_tokens = new_tokens
        config.do_sample = False
        if technique is not None:
            config.num_assistant_tokens = MAX_DRAFT
        if technique == LOOKUP:
            config.max_ngram_size = MAX_NGRAM
        result = self.pipes[technique].generate(ov.Tensor(ids[None]), config)
        tokens = [int(t) for t in result.tokens[0]]
        metrics = result.perf_metrics
        decode_s = (metrics.get_generate_duration().mean - metrics.get_ttft().mean) / 1000
        passes = len(metrics.raw_metrics.token_infer_durations) - 1  # the model's runs after the prompt's
        stats = {"tokens_per_pass": (len(tokens) - 1) / passes if technique and passes > 0 else None}
        return tokens, (len(tokens) - 1) / decode_s if decode_s > 0 else 0.0, stats


class OnnxruntimeGenaiRunner:
    """onnxruntime-genai's Generator: plain, with its n-gram speculation (set_speculative_options), or with the
    draft through draft/speculative.json (an overlay: the draft cannot be switched off per request)."""

    name = "onnxruntime-genai"

    def __init__(self, root: Path, draft: Path | None = None):
        import onnxruntime_genai as og

        self.og, self.models = og, {None: og.Model(str(root))}
        self.models[LOOKUP] = self.models[None]
        if draft is not None:
            from kiln.llm.draft import OVERLAY

            config = og.Config(str(root))
            config.overlay((draft / OVERLAY).read_text(encoding="utf-8"))
            self.models[DRAFT] = og.Model(config)

    def run(self, ids: np.ndarray, new_tokens: int, technique: str | None) -> tuple[list[int], float, dict]:
        og = self.og
        model = self.models[technique]
        params = og.GeneratorParams(model)
        length = len(ids) + new_tokens
        params.set_search_options(do_sample=False, max_length=length, min_length=length)
        if technique == LOOKUP:
            params.set_speculative_options(ngram_size=MAX_NGRAM, max_draft_tokens=MAX_DRAFT)
        generator = og.Generator(model, params)
        generator.append_tokens(ids[None])
        generator.generate_next_token()
        start = time.perf_counter()
        while not generator.is_done():
            generator.generate_next_token()
        decode_s = time.perf_counter() - start
        tokens = [int(t) for t in generator.get_sequence(0)[len(ids):]]
        stats = {}
        if technique is not None:
            spec = generator.get_speculative_stats()
            stats = {"acceptance": spec.get("acceptance_rate") if spec.get("draft_tokens_evaluated") else None,
                     "tokens_per_pass": spec.get("mean_emitted_tokens_per_round")}
        return tokens, (len(tokens) - 1) / decode_s if decode_s > 0 else 0.0, stats


def measure(runner, technique: str, prompts: dict[str, np.ndarray], new_tokens: int = NEW_TOKENS,
            rounds: int = ROUNDS) -> list[dict]:
    """`runner` plain and with `technique`, on each prompt."""
    rows = []
    for name, ids in prompts.items():
        runner.run(ids, 2, None), runner.run(ids, 2, technique)  # warm-up: the first request compiles
        plain, fast = [], []
        for _ in range(rounds):
            plain.append(runner.run(ids, new_tokens, None))
            fast.append(runner.run(ids, new_tokens, technique))
        rows.append(_row(runner.name, name, len(ids), plain, fast))
    return rows
