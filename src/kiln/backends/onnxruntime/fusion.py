"""Transformer fusions (Attention, EmbedLayerNormalization, Gelu...) with ONNX Runtime's optimizer.

Kept only when they help: the fused and plain graphs are timed back to back, and the faster wins.
"""

from __future__ import annotations

import collections
from pathlib import Path

import onnx

from kiln.backends.onnxruntime.session import make_session
from kiln.calibration import Feed
from kiln.quiet import quiet

FUSED_OPS = ("Attention", "MultiHeadAttention", "EmbedLayerNormalization", "SkipLayerNormalization",
             "LayerNormalization", "BiasGelu", "FastGelu", "Gelu", "GemmFastGelu")


def fuse_transformer(src: Path, dst: Path, *, num_heads: int = 0, hidden_size: int = 0) -> dict[str, int]:
    """Run the BERT fusions and return the counts of fused ops; SkipLayerNorm stays unfused (slow kernel)."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_skip_layer_norm = False
    model = onnx.load(str(src))
    with quiet():
        fused = optimizer.optimize_model(model, model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                                         opt_level=0, optimization_options=options, only_onnxruntime=False)
    fused.save_model_to_file(str(dst), use_external_data_format=dst.with_name(dst.name + ".data").exists()
                             or fused.model.ByteSize() > 1_800_000_000)
    counts = collections.Counter(n.op_type for n in fused.model.graph.node)
    return {op: counts[op] for op in FUSED_OPS if counts[op]}


def median_latency_ms(model: Path | bytes, settings: dict, feed: Feed, runs: int = 20) -> float:
    from kiln.bench.latency import median_ms

    session = make_session(model, settings)
    return median_ms(lambda: session.run(None, feed), runs)


def faster_of(plain: Path, fused: Path, settings: dict, feed: Feed) -> tuple[bool, dict]:
    """Time both graphs interleaved (the machine is noisy); True when the fused one is faster."""
    a, b = [], []
    for _ in range(2):
        a.append(median_latency_ms(plain, settings, feed))
        b.append(median_latency_ms(fused, settings, feed))
    plain_ms, fused_ms = min(a), min(b)
    return fused_ms < plain_ms, {"plain_ms": round(plain_ms, 3), "fused_ms": round(fused_ms, 3)}
