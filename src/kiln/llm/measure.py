"""What a language-model artifact is worth: fidelity to the torch model, and its speed, batch 1.

Fidelity, all against the same torch model in this process:
- greedy agreement: tokens equal to the torch model's greedy continuation until the first divergence,
  as a share of the continuation, averaged over prompts (and how many continuations matched entirely);
- next-token distributions along the torch continuation (teacher-forced, one forward pass each): KL(torch ||
  artifact) in nats and the cosine of the logits, mean and worst;
- perplexity of both on evaluation text, and the difference.
Speed: time to first token for a prompt of `prompt_length` tokens, then decode tokens/s over `new_tokens`, the
median of `rounds` generations; resident memory added by loading and running the model.
"""

from __future__ import annotations

import gc
import statistics

import numpy as np

from kiln.llm.runners import Generation, generate


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _agreement(ref: list[int], got: list[int]) -> int:
    return next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))


def reference_runs(reference, prompts: list[np.ndarray], new_tokens: int) -> list[Generation]:
    return [generate(reference, prompt, new_tokens) for prompt in prompts]


def fidelity(reference, candidate, prompts: list[np.ndarray], references: list[Generation],
             texts: list[np.ndarray], source_perplexity: float) -> dict:
    """`references` and `source_perplexity`: the torch model's continuations and perplexity on `texts`, computed
    once for every artifact compared with it."""
    agreements, kls, cosines, full = [], [], [], 0
    for prompt, ref in zip(prompts, references):
        got = generate(candidate, prompt, len(ref.tokens))
        same = _agreement(ref.tokens, got.tokens)
        agreements.append(same / len(ref.tokens))
        full += same == len(ref.tokens)
        sequence = np.concatenate([prompt, np.asarray(ref.tokens[:-1], dtype=np.int64)])
        reference.reset()
        candidate.reset()
        want = reference.forward(sequence[None])[len(prompt) - 1:]
        have = candidate.forward(sequence[None])[len(prompt) - 1:]
        p, q = _log_softmax(want), _log_softmax(have)
        kls.extend((np.exp(p) * (p - q)).sum(axis=-1).tolist())
        dot = (want * have).sum(axis=-1) / (np.linalg.norm(want, axis=-1) * np.linalg.norm(have, axis=-1))
        cosines.extend(dot.tolist())
    ppl_ref, ppl_new = source_perplexity, perplexity(candidate, texts)
    return {
        "prompts": len(prompts), "new_tokens": len(references[0].tokens) if references else 0,
        "greedy_agreement": float(np.mean(agreements)), "greedy_agreement_min": float(np.min(agreements)),
        "greedy_identical": full,
        "next_token_kl_mean": float(np.mean(kls)), "next_token_kl_max": float(np.max(kls)),
        "logits_cosine_mean": float(np.mean(cosines)), "logits_cosine_min": float(np.min(cosines)),
        "perplexity_source": ppl_ref, "perplexity": ppl_new, "perplexity_delta": ppl_new - ppl_ref,
        "perplexity_tokens": int(sum(len(t) - 1 for t in texts)),
    }


def perplexity(decoder, texts: list[np.ndarray]) -> float:
    total, count = 0.0, 0
    for ids in texts:
        decoder.reset()
        logp = _log_softmax(decoder.forward(ids[None]))
        total -= float(logp[np.arange(len(ids) - 1), ids[1:]].sum())
        count += len(ids) - 1
    return float(np.exp(total / count))


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def speed(make_decoder, prompt: np.ndarray, new_tokens: int, rounds: int) -> dict:
    """Load (timed), one warm-up generation, then `rounds` timed ones; returns the report's speed block."""
    import time

    gc.collect()
    before = _rss()
    start = time.perf_counter()
    decoder = make_decoder()
    load_s = time.perf_counter() - start
    generate(decoder, prompt, min(new_tokens, 8))
    runs = [generate(decoder, prompt, new_tokens) for _ in range(rounds)]
    resident = _rss() - before
    steps = sorted(s for r in runs for s in r.step_s)
    pct = {f"p{p}": float(np.percentile(steps, p)) * 1000 for p in (50, 90, 99)}
    del decoder
    gc.collect()
    return {"prompt_tokens": int(len(prompt)), "new_tokens": new_tokens, "rounds": rounds,
            "ttft_ms": statistics.median(r.ttft_s for r in runs) * 1000,
            "ttft_ms_each": [r.ttft_s * 1000 for r in runs],
            "decode_tokens_per_s": statistics.median(r.tokens_per_s for r in runs),
            "decode_tokens_per_s_each": [r.tokens_per_s for r in runs],
            "token_latency_ms": pct, "load_s": load_s, "resident_mib": resident / 2**20}
