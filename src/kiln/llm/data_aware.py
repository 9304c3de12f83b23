"""Data-aware int4 for language models: NNCF's AWQ and scale estimation, fed with the user's calibration text.

Round-to-nearest int4 picks each block's scale from its weights alone. AWQ rescales the input channels that carry
the largest activations before rounding, and scale estimation then fits each block's scale to minimise the
layer's output error on the calibration activations, and the fifth of the layers NNCF ranks most sensitive stays
int8. All of it is NNCF's (`compress_weights` with a dataset), the same algorithms on the ONNX graph and on the
OpenVINO IR. Measured on SmolLM2-135M, 12,264 tokens of pydoc prose, AMD EPYC Zen 5 (docs/benchmarks.md):
perplexity +26/+27 % (symmetric RTN, kiln's former default) -> +22 % (asymmetric RTN, blocks of 32) -> +6.8 %
(ONNX Runtime, a quarter of the layers int8) / +6.2 % (OpenVINO, a fifth) with AWQ and scale estimation, for 10-20 %
more bytes. NNCF's
GPTQ (+25 %), ONNX Runtime's own GPTQ (+22 %, 8 minutes) and k-quant search (+21 %) bought less; its HQQ (+1 %,
float zero points that fit SmolLM2's Q4_1 origin) runs 14x slower on the CPU kernels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiln.errors import UsageError

WINDOW = 256  # tokens per calibration sample
MAX_WINDOWS = 32  # NNCF's statistics converge well before its default of 128 samples on models this size
MIN_TOKENS = 64
# With data, a share of the weight layers stays int8 where NNCF's Hessian-based sensitivity says they matter most.
# Measured on SmolLM2-135M, pydoc prose, AMD EPYC Zen 5 (docs/benchmarks.md): OpenVINO +11.5 % at ratio 1.0, +8.2 % at
# 0.9, +6.0 % at 0.8, for 10 % more bytes; ONNX Runtime (int8 embedding) +8.5 % at 0.8, +6.8 % at 0.75, +7.2 % at 0.7,
# decoding at 0.99x, 0.94x and 0.95x the former round-to-nearest artifact in one interleaved run.
DATA_AWARE_RATIO = {"onnxruntime": 0.75, "openvino": 0.8}
# NNCF runs the ONNX graph for its statistics from one serialised protobuf, which cannot exceed 2 GB
PROTOBUF_LIMIT = 2**31 - 2**26


def calibration_windows(path: Path, limit: int | None, tokenizer) -> tuple[list[np.ndarray], str]:
    """The calibration text (a .txt file, checked when the export resolved) as token windows of WINDOW (the lines
    joined, as llama-imatrix reads a text), and what they are."""
    from kiln.calibration.text import read_lines

    lines = read_lines(path, limit)
    stream = np.concatenate([np.asarray(tokenizer(line)["input_ids"], dtype=np.int64) for line in lines])
    if stream.size < MIN_TOKENS:
        raise UsageError(f"calibration text {path.name} has {stream.size} tokens; AWQ needs at least {MIN_TOKENS}",
                         hint="give more text (a few thousand tokens is typical)")
    windows = [stream[i:i + WINDOW] for i in range(0, stream.size - WINDOW + 1, WINDOW)][:MAX_WINDOWS] or [stream]
    return windows, f"{sum(w.size for w in windows)} tokens ({len(windows)} windows) of {path.name}"


def onnx_feeds(windows: list[np.ndarray], layout: dict, inputs: set[str]) -> list[dict]:
    """One prompt pass per window with an empty cache, in the graph's own cache layout."""
    feeds = []
    for ids in windows:
        seq = ids.size
        # a shared buffer (the builder's GroupQueryAttention) holds the window; a copied cache starts empty
        past = seq if layout.get("kv_buffer") == "shared" else 0
        feed = {"input_ids": ids[None], "attention_mask": np.ones((1, seq), dtype=np.int64)}
        feed.update({name: np.zeros((1, layout["kv_heads"], past, layout["head_dim"]), dtype=np.float32)
                     for name in layout["past"]})
        if "position_ids" in inputs:
            feed["position_ids"] = np.arange(seq, dtype=np.int64)[None]
        feeds.append(feed)
    return feeds


def openvino_feeds(windows: list[np.ndarray], inputs: set[str]) -> list[dict]:
    """One prompt pass per window for the stateful IR (NNCF resets its state between samples)."""
    feeds = []
    for ids in windows:
        feed = {"input_ids": ids[None], "attention_mask": np.ones((1, ids.size), dtype=np.int64),
                "position_ids": np.arange(ids.size, dtype=np.int64)[None], "beam_idx": np.zeros(1, dtype=np.int32)}
        feeds.append({k: v for k, v in feed.items() if k in inputs})
    return feeds


def nncf_options(feeds: list[dict]) -> dict:
    """compress_weights' data-aware arguments."""
    import nncf

    return {"dataset": nncf.Dataset(feeds), "subset_size": len(feeds), "awq": True, "scale_estimation": True}
