"""Prompt lookup decoding in kiln's own generator: greedy decoding that guesses the next tokens by finding the last
few generated tokens earlier in the text, and checks every guess in one forward pass.

Text that quotes its context (summaries, answers drawn from a document, edits) repeats spans of the prompt; after
the first tokens of such a span, the rest of it is a free guess. The decoder runs the current token plus up to
`max_draft` guessed ones in one pass, keeps the guesses its own argmax agrees with and one token of its own, and
drops the rejected guesses from its cache (`rollback`). What it emits is greedy decoding's: a guess is kept only where
greedy would have chosen it. Numerically the verify pass multiplies several rows at once, which may round
differently from one row; kiln checks the tokens against plain greedy and reports how many agree.

The rules (`lookup`, `check`, `adapt`) live in device_generate.py, the artifact's own generate.py, so kiln's
measurement and `generate.py --prompt-lookup` on a device guess and keep the same tokens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from kiln.llm.device_generate import MAX_DRAFT, MAX_NGRAM, MIN_NGRAM, adapt, check, lookup
from kiln.llm.runners import Generation

__all__ = ["MAX_DRAFT", "MAX_NGRAM", "MIN_NGRAM", "Speculation", "generate_prompt_lookup", "generate_with_draft",
           "lookup"]


@dataclass
class Speculation:
    """A speculative run: its generation and how well the guesses held."""

    generation: Generation
    drafted: int  # guessed tokens checked
    accepted: int  # of those, kept
    passes: int  # decoder forward passes after the prompt's

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    @property
    def tokens_per_pass(self) -> float:
        return (len(self.generation.tokens) - 1) / self.passes if self.passes else 0.0


def _emit(result: Generation, emitted: list[int], elapsed: float) -> None:
    """One pass emits several tokens: its time is spread over them, so tokens/s stays emitted tokens per second."""
    result.step_s.extend([elapsed / len(emitted)] * len(emitted))
    result.tokens.extend(emitted)


def generate_prompt_lookup(decoder, prompt: np.ndarray, new_tokens: int, max_ngram: int = MAX_NGRAM,
                           max_draft: int = MAX_DRAFT) -> Speculation:
    """Greedy decoding of `new_tokens` tokens with prompt lookup; `decoder` must support `rollback(n)`. The number
    of guesses adapts: a pass whose guesses all held guesses two more next time, one that missed one fewer."""
    decoder.reset()
    start = time.perf_counter()
    logits = decoder.forward(prompt[None].astype(np.int64))
    token = int(np.argmax(logits[-1]))
    result = Generation([token], time.perf_counter() - start)
    context = [int(t) for t in prompt] + [token]
    drafted = accepted = passes = 0
    budget = max_draft
    while len(result.tokens) < new_tokens:
        draft = lookup(context, max_ngram, min(budget, new_tokens - len(result.tokens) - 1), MIN_NGRAM)
        start = time.perf_counter()
        kept, emitted = check(decoder.forward, decoder.rollback, token, draft)
        _emit(result, emitted, time.perf_counter() - start)
        context.extend(emitted)
        token = emitted[-1]
        drafted, accepted, passes = drafted + len(draft), accepted + kept, passes + 1
        budget = adapt(budget, max_draft, len(draft), kept)
    return Speculation(result, drafted, accepted, passes)


def generate_with_draft(decoder, draft, prompt: np.ndarray, new_tokens: int,
                        max_draft: int = MAX_DRAFT) -> Speculation:
    """Greedy decoding of `new_tokens` tokens whose guesses come from a smaller model with the same tokenizer:
    `draft` decodes up to `max_draft` tokens greedily, `decoder` checks them in one pass. Both must support
    `rollback(n)`; each keeps in its cache exactly the tokens emitted so far (the draft catches up on the ones it
    did not run). The number of guesses adapts as in `generate_prompt_lookup`."""
    decoder.reset()
    draft.reset()
    start = time.perf_counter()
    logits = decoder.forward(prompt[None].astype(np.int64))
    draft.forward(prompt[None].astype(np.int64))  # both read the prompt before the first token
    token = int(np.argmax(logits[-1]))
    result = Generation([token], time.perf_counter() - start)
    context = [int(t) for t in prompt] + [token]
    drafted = accepted = passes = 0
    budget = max_draft
    while len(result.tokens) < new_tokens:
        start = time.perf_counter()
        guesses = []
        for _ in range(min(budget, new_tokens - len(result.tokens) - 1)):
            pending = (context + guesses)[draft.length:]  # tokens the draft has not run yet (at least the last)
            guesses.append(int(np.argmax(draft.forward(np.array([pending], dtype=np.int64))[-1])))
        kept, emitted = check(decoder.forward, decoder.rollback, token, guesses)
        context.extend(emitted)
        if draft.length > len(context) - 1:  # it ran rejected guesses: forget them (the last token it never ran)
            draft.rollback(draft.length - (len(context) - 1))
        _emit(result, emitted, time.perf_counter() - start)
        token = emitted[-1]
        drafted, accepted, passes = drafted + len(guesses), accepted + kept, passes + 1
        budget = adapt(budget, max_draft, len(guesses), kept)
    return Speculation(result, drafted, accepted, passes)
