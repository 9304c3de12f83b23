#!/usr/bin/env python3
"""Generate text with this kiln language-model artifact: needs numpy, `tokenizers` and its runtime only.

    python generate.py "The capital of France is" --new-tokens 32
    python generate.py --ids 1,2,3 --new-tokens 8 --json     # token ids in and out (no tokenizer needed)
    python generate.py "Summarise: ..." --prompt-lookup      # guesses from the prompt, checked in one pass

Greedy decoding, batch 1, with the KV cache, using the runtime settings the artifact was measured with
(runtime.json). --prompt-lookup guesses the next tokens from an earlier occurrence of the last 2-3 (text that
quotes its prompt: summaries, answers from a document, edits) and keeps only those greedy decoding would choose.
Copied verbatim into every language-model artifact by kiln; it imports nothing from kiln (kiln's own generator
imports lookup, check and adapt from here).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MAX_NGRAM = 3  # the longest tail looked up (3 matched openvino-genai's best setting on SmolLM2)
MIN_NGRAM = 2  # a single matching token guesses wrong on open text more often than not (acceptance 0.07 there)
MAX_DRAFT = 5  # most guesses per pass; the pass costs more per guess (on 2 cores, 1.3-2x a single token at 5)


def lookup(context, max_ngram=MAX_NGRAM, max_draft=MAX_DRAFT, min_ngram=MIN_NGRAM):
    """The tokens that followed an earlier occurrence of the context's last n tokens (the longest n from
    `max_ngram` down to `min_ngram` that occurs), at most `max_draft` of them: the most recent occurrence with that
    many after it (the span being quoted now), else the one with the most; none if no tail occurs earlier."""
    size = len(context)
    for n in range(min(max_ngram, size - 1), min_ngram - 1, -1):
        tail, best = context[size - n:], []
        for start in range(size - n - 1, -1, -1):
            if context[start:start + n] == tail:
                follow = context[start + n:start + n + max_draft]
                if len(follow) == max_draft:
                    return follow
                best = follow if len(follow) > len(best) else best
        if best:
            return best
    return []


def check(forward, rollback, token, guesses):
    """One pass over the current token and the guesses: how many guesses greedy keeps, and the tokens emitted (those
    and greedy's own next one). `forward(ids)` returns the logits of every id passed; `rollback(n)` drops the
    rejected guesses from the cache."""
    logits = forward(np.array([[token, *guesses]], dtype=np.int64))
    chosen = np.argmax(logits[-(len(guesses) + 1):], axis=-1)
    kept = 0
    while kept < len(guesses) and guesses[kept] == int(chosen[kept]):
        kept += 1
    if kept < len(guesses):
        rollback(len(guesses) - kept)
    return kept, [*guesses[:kept], int(chosen[kept])]


def adapt(budget, max_draft, guessed, kept):
    """Guess further after a full hit, less after a miss (transformers' assisted-generation schedule)."""
    if not guessed:
        return budget
    return min(max_draft, budget + 2) if kept == guessed else max(1, budget - 1)

def _plain_relative(name):
    """A path inside the artifact, as text: no NUL/control character, backslash, drive, '..', '.' or empty segment."""
    if not isinstance(name, str) or not name or name.startswith("/") or any(c in name for c in "\\:\x7f"):
        return False
    try:
        too_long = len(name.encode("utf-8")) > 4096
    except UnicodeEncodeError:  # a lone surrogate: no filesystem call could take it
        return False
    return not too_long and not any(ord(c) < 32 for c in name) and all(
        part not in ("", ".", "..") and len(part.encode("utf-8")) <= 255 for part in name.split("/"))


def read_runtime(script):
    """runtime.json with its model path checked as text before any filesystem call; exit 2 with one line if not."""
    try:
        runtime = json.loads((HERE / "runtime.json").read_text(encoding="utf-8"))
        ok = isinstance(runtime, dict) and _plain_relative(runtime.get("model")) and "backend" in runtime
    except (OSError, ValueError, RecursionError) as exc:
        print(f"{script}: cannot read runtime.json ({ascii(str(exc))[1:-1][:160]}); export the artifact again",
              file=sys.stderr)
        raise SystemExit(2) from None
    if not ok:
        model = runtime.get("model") if isinstance(runtime, dict) else None
        print(f"{script}: runtime.json has no backend or its model {ascii(model)[:120]} is not a relative path "
              f"inside the artifact; export the artifact again", file=sys.stderr)
        raise SystemExit(2)
    return runtime


def _onnxruntime(runtime):
    import onnxruntime as ort

    settings, layout = runtime["settings"], runtime["language_model"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(settings.get("intra_op_num_threads", 0))
    options.inter_op_num_threads = int(settings.get("inter_op_num_threads", 0))
    for key, value in settings.get("config_entries", {}).items():
        options.add_session_config_entry(key, str(value))
    session = ort.InferenceSession(str(HERE / runtime["model"]), options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(settings.get("disabled_optimizers", [])))
    empty = np.zeros((1, layout["kv_heads"], 0, layout["head_dim"]), dtype=np.float32)
    state = {"past": {name: empty for name in layout["past"]}, "length": 0, "capacity": 0}
    wants_positions = any(i.name == "position_ids" for i in session.get_inputs())

    def allocate(capacity):
        """The fused graph's cache: one buffer per layer bound as past and present, appended to in place."""
        old, binding, buffers = state.get("buffers", {}), session.io_binding(), {}
        binding.bind_output("logits")  # first: output 0
        for past, present in zip(layout["past"], layout["present"]):
            array = np.zeros((1, layout["kv_heads"], capacity, layout["head_dim"]), dtype=np.float32)
            if past in old:
                array[:, :, :state["length"]] = old[past].numpy()[:, :, :state["length"]]
            buffers[past] = ort.OrtValue.ortvalue_from_numpy(array)  # kept alive here: the binding holds pointers
            binding.bind_ortvalue_input(past, buffers[past])
            binding.bind_ortvalue_output(present, buffers[past])
        state.update(binding=binding, buffers=buffers, capacity=capacity)

    def forward_shared(ids, rows=None):
        n = ids.shape[1]
        if state["length"] + n > state["capacity"]:
            allocate(max(256, 2 * state["capacity"], 1 << (state["length"] + n - 1).bit_length()))
        mask = np.zeros((1, state["capacity"]), dtype=np.int64)
        mask[0, :state["length"] + n] = 1  # the tokens held: GroupQueryAttention reads the length from it
        binding = state["binding"]
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", mask)
        binding.bind_output("logits")
        session.run_with_iobinding(binding)
        state["length"] += n
        return binding.get_outputs()[0].numpy()[0, -(rows or n):]

    def rollback_shared(count):
        state["length"] -= count  # the mask stops before them; the next pass overwrites them

    if layout.get("kv_buffer") == "shared":
        return forward_shared, rollback_shared

    def forward(ids, rows=None):
        n = ids.shape[1]
        feed = {"input_ids": ids, "attention_mask": np.ones((1, state["length"] + n), dtype=np.int64), **state["past"]}
        if wants_positions:  # the TorchScript graph takes them; the fused graph derives them from the mask
            feed["position_ids"] = np.arange(state["length"], state["length"] + n, dtype=np.int64)[None]
        out = session.run(["logits", *layout["present"]], feed)
        state["past"] = dict(zip(layout["past"], out[1:]))
        state["length"] += n
        return out[0][0, -(rows or n):]

    def rollback(count):
        state["length"] -= count
        state["past"] = {name: value[:, :, :state["length"]] for name, value in state["past"].items()}

    return forward, rollback


def _openvino(runtime):
    import openvino as ov

    settings = runtime["settings"]
    compiled = ov.Core().compile_model(str(HERE / runtime["model"]), settings.get("device", "CPU"),
                                       dict(settings.get("config", {})))
    request = compiled.create_infer_request()
    request.reset_state()
    inputs = {port.get_any_name() for port in compiled.inputs}
    state = {"length": 0}

    def forward(ids, rows=None):
        n = ids.shape[1]
        feed = {"input_ids": ids, "attention_mask": np.ones((1, state["length"] + n), dtype=np.int64),
                "position_ids": np.arange(state["length"], state["length"] + n, dtype=np.int64)[None],
                "beam_idx": np.zeros(1, dtype=np.int32)}
        request.infer({name: value for name, value in feed.items() if name in inputs})
        state["length"] += n
        return request.get_tensor("logits").data[0, -(rows or n):].copy()

    def rollback(count):
        """Each cache variable set to its first positions (the sequence is on axis 2): a copy."""
        state["length"] -= count
        for variable in request.query_state():
            variable.state = ov.Tensor(np.ascontiguousarray(variable.state.data[:, :, :state["length"]]))

    return forward, rollback


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="")
    parser.add_argument("--ids", help="comma-separated prompt token ids instead of text")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-lookup", action="store_true",
                        help="guess the next tokens from the prompt and check them in one pass (same tokens, faster "
                             "where the output quotes the prompt)")
    parser.add_argument("--json", action="store_true", help="print one JSON line (ids, text, timings)")
    args = parser.parse_args(argv)
    runtime = read_runtime("generate.py")
    tokenizer = None
    if args.ids:
        ids = [int(x) for x in args.ids.split(",") if x.strip()]
    else:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(HERE / "tokenizer.json"))
        ids = tokenizer.encode(args.prompt).ids
    if not ids:
        print("generate.py: empty prompt", file=sys.stderr)
        return 2
    forward, rollback = (_onnxruntime if runtime["backend"] == "onnxruntime" else _openvino)(runtime)
    eos = None
    if (HERE / "generation_config.json").is_file():
        eos = json.loads((HERE / "generation_config.json").read_text(encoding="utf-8")).get("eos_token_id")
    eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    start = time.perf_counter()
    logits = forward(np.asarray([ids], dtype=np.int64), rows=1)[-1]
    ttft = time.perf_counter() - start
    out, drafted, accepted, budget = [int(np.argmax(logits))], 0, 0, MAX_DRAFT
    start = time.perf_counter()
    while len(out) < args.new_tokens and out[-1] not in eos:
        if not args.prompt_lookup:
            out.append(int(np.argmax(forward(np.asarray([[out[-1]]], dtype=np.int64))[-1])))
            continue
        guesses = lookup(ids + out, MAX_NGRAM, min(budget, args.new_tokens - len(out) - 1))
        kept, emitted = check(forward, rollback, out[-1], guesses)
        stop = next((i + 1 for i, token in enumerate(emitted) if token in eos), len(emitted))
        out.extend(emitted[:stop])  # greedy would have stopped at an end token: so do the guesses
        drafted, accepted, budget = drafted + len(guesses), accepted + kept, adapt(budget, MAX_DRAFT, len(guesses), kept)
    decode = time.perf_counter() - start
    text = tokenizer.decode(out) if tokenizer else None
    result = {"ids": out, "text": text, "ttft_ms": ttft * 1000,
              "tokens_per_s": (len(out) - 1) / decode if len(out) > 1 and decode > 0 else None}
    if args.prompt_lookup:
        result.update(drafted=drafted, accepted=accepted)
    print(json.dumps(result) if args.json else text if text is not None else " ".join(map(str, out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
