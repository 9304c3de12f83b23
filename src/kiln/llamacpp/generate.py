#!/usr/bin/env python3
"""Generate text with this kiln GGUF artifact through llama.cpp: needs numpy and llama.cpp's Python bindings only.

    pip install numpy llama-cpp-python==0.3.36          # the version the artifact was built and measured with
    python generate.py "The capital of France is" --new-tokens 32
    python generate.py --ids 1,2,3 --new-tokens 8 --json     # token ids in and out

Greedy decoding, batch 1, with the settings the artifact was measured with (runtime.json: threads, context), the
same loop kiln measured it with. The file is also plain GGUF: `llama-cli -m model.gguf` and every llama.cpp-based
runtime load it. Copied verbatim into every llama.cpp artifact by kiln; it imports nothing from kiln.
"""

import argparse
import ctypes
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def read_runtime():
    try:
        runtime = json.loads((HERE / "runtime.json").read_text(encoding="utf-8"))
        model = runtime["model"]
        ok = isinstance(model, str) and "/" not in model and "\\" not in model and model not in ("", ".", "..")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"generate.py: cannot read runtime.json ({ascii(str(exc))[1:-1][:160]}); export the artifact again",
              file=sys.stderr)
        raise SystemExit(2) from None
    if not ok:
        print(f"generate.py: runtime.json names {ascii(model)[:120]}, not a file of this artifact", file=sys.stderr)
        raise SystemExit(2)
    return runtime


class Model:
    def __init__(self, lib, path, settings):
        self.lib = lib
        self._silent = lib.llama_log_callback(lambda level, text, data: None)
        lib.llama_log_set(self._silent, ctypes.c_void_p())
        lib.llama_backend_init()
        params = lib.llama_model_default_params()
        params.n_gpu_layers = int(settings.get("n_gpu_layers", 0))
        self.model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            print(f"generate.py: llama.cpp could not load {path.name}", file=sys.stderr)
            raise SystemExit(1)
        context = lib.llama_context_default_params()
        context.n_ctx = context.n_batch = context.n_ubatch = int(settings.get("n_ctx", 1024))
        context.n_threads = context.n_threads_batch = int(settings.get("n_threads", 4))
        self.ctx = lib.llama_init_from_model(self.model, context)
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.n_ctx, self.length = context.n_ctx, 0
        self.batch = lib.llama_batch_init(self.n_ctx, 0, 1)

    def tokenize(self, text):
        data = text.encode("utf-8")
        tokens = (ctypes.c_int32 * (len(data) + 8))()
        n = self.lib.llama_tokenize(self.vocab, data, len(data), tokens, len(tokens), True, True)
        return list(tokens[:n])

    def detokenize(self, ids):
        pieces = []
        buffer = ctypes.create_string_buffer(256)
        for token in ids:
            n = self.lib.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
            pieces.append(buffer.raw[:max(n, 0)])
        return b"".join(pieces).decode("utf-8", errors="replace")

    def forward(self, ids):
        """The last token's logits after appending `ids` to the cache."""
        if self.length + len(ids) > self.n_ctx:
            print(f"generate.py: the context of {self.n_ctx} tokens is full", file=sys.stderr)
            raise SystemExit(2)
        batch = self.batch
        batch.n_tokens = len(ids)
        for i, token in enumerate(ids):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, self.length + i, 1, 0
            batch.seq_id[i][0] = 0
        batch.logits[len(ids) - 1] = 1
        if self.lib.llama_decode(self.ctx, batch) != 0:
            print("generate.py: llama_decode failed", file=sys.stderr)
            raise SystemExit(1)
        self.length += len(ids)
        return np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,)).copy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="")
    parser.add_argument("--ids", help="comma-separated prompt token ids instead of text")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print one JSON line (ids, text, timings)")
    args = parser.parse_args(argv)
    runtime = read_runtime()
    try:
        import llama_cpp.llama_cpp as lib
    except ImportError:
        print("generate.py: llama.cpp's Python bindings are missing (pip install llama-cpp-python==0.3.36)",
              file=sys.stderr)
        return 3
    model = Model(lib, HERE / runtime["model"], runtime.get("settings", {}))
    ids = [int(x) for x in args.ids.split(",") if x.strip()] if args.ids else model.tokenize(args.prompt)
    if not ids:
        print("generate.py: empty prompt", file=sys.stderr)
        return 2
    start = time.perf_counter()
    out = [int(np.argmax(model.forward(ids)))]
    ttft = time.perf_counter() - start
    start = time.perf_counter()
    while len(out) < args.new_tokens and not lib.llama_vocab_is_eog(model.vocab, out[-1]):
        out.append(int(np.argmax(model.forward([out[-1]]))))
    decode = time.perf_counter() - start
    text = None if args.ids else model.detokenize(out)
    result = {"ids": out, "text": text, "ttft_ms": ttft * 1000,
              "tokens_per_s": (len(out) - 1) / decode if len(out) > 1 and decode > 0 else None}
    print(json.dumps(result) if args.json else text if text is not None else " ".join(map(str, out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
