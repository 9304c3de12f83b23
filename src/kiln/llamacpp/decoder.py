"""A GGUF file run by llama.cpp itself (libllama through its ctypes bindings), as a kiln decoder: `forward(ids)`
appends the tokens to the KV cache and returns their logits. So the GGUF artifact is measured by the same code as
every other language-model artifact (greedy agreement, next-token KL, perplexity, TTFT, decode tokens/s), against the
same torch model, on the same windows.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from kiln.errors import ExportError
from kiln.llamacpp.toolchain import LlamaCpp, bindings

_SILENT = None  # the log callback, kept alive for as long as the process runs


def _silence(lib) -> None:
    global _SILENT
    if _SILENT is None:
        _SILENT = lib.llama_log_callback(lambda level, text, data: None)
        lib.llama_log_set(_SILENT, ctypes.c_void_p())
        lib.llama_backend_init()


class LlamaCppDecoder:
    """One model and one context (batch 1, one sequence); every token's logits are returned, as the other runners
    do. `n_ctx` bounds prompt + continuation and is also the most tokens one call takes. The KV cache is llama.cpp's
    default (f16): an f32 cache gave the same logits against torch (4.2e-4 of their scale, SmolLM2's f32 master)."""

    name = "llama.cpp"

    def __init__(self, build: LlamaCpp, model: Path, threads: int, n_ctx: int = 1024):
        lib = self.lib = bindings(build)
        _silence(lib)
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        self.model = lib.llama_model_load_from_file(str(model).encode(), params)
        if not self.model:
            raise ExportError(f"llama.cpp could not load {model.name}")
        context = lib.llama_context_default_params()
        context.n_ctx = context.n_batch = context.n_ubatch = n_ctx
        context.n_threads = context.n_threads_batch = threads
        context.no_perf = True
        self.ctx = lib.llama_init_from_model(self.model, context)
        if not self.ctx:
            raise ExportError(f"llama.cpp could not make a context of {n_ctx} tokens for {model.name}")
        self.vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model))
        self.n_ctx, self.length = n_ctx, 0
        self.batch = lib.llama_batch_init(n_ctx, 0, 1)

    def reset(self) -> None:
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)
        self.length = 0

    def forward(self, ids: np.ndarray) -> np.ndarray:
        tokens = [int(t) for t in np.asarray(ids).reshape(-1)]
        if self.length + len(tokens) > self.n_ctx:
            raise ExportError(f"llama.cpp context of {self.n_ctx} tokens is full ({self.length} + {len(tokens)})")
        batch = self.batch
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = self.length + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1
        status = self.lib.llama_decode(self.ctx, batch)
        if status != 0:
            raise ExportError(f"llama.cpp decode failed (status {status})")
        self.length += len(tokens)
        pointer = self.lib.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(pointer, shape=(len(tokens), self.vocab)).copy()

    def __del__(self):
        lib = getattr(self, "lib", None)
        if lib is None:
            return
        if getattr(self, "batch", None) is not None:
            lib.llama_batch_free(self.batch)
            self.batch = None
        if getattr(self, "ctx", None):
            lib.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            lib.llama_model_free(self.model)
            self.model = None
