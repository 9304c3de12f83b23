"""ONNX Runtime sessions from recorded settings, so every measurement reuses the artifact's own."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from kiln.calibration import Feed
from kiln.errors import ExportError
from kiln.signature import Signature

# Measured here with ORT 1.32 (docs/benchmarks.md): the CPU SkipLayerNormalization kernel runs ~10x
# slower than LayerNormalization + Add on the same tensors, so that fusion is off by default.
DEFAULT_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def default_settings(threads: int) -> dict:
    return {
        "providers": ["CPUExecutionProvider"],
        "intra_op_num_threads": threads,
        "inter_op_num_threads": 1,
        "execution_mode": "sequential",
        "graph_optimization_level": "ORT_ENABLE_ALL",
        "disabled_optimizers": list(DEFAULT_DISABLED_OPTIMIZERS),
        # Padded attention rows produce denormal floats that slow x86 kernels ~2.5x (measured: QAttention
        # on MiniLM, 13 real tokens of 128); flushing them to zero changes results by < 1e-37.
        "config_entries": {"session.intra_op.allow_spinning": "1", "session.set_denormal_as_zero": "1"},
    }


def int8_kernels_saturate(host) -> bool:
    """ONNX Runtime's int8 kernels on an x86 CPU without VNNI multiply u8 x s8 pairs with vpmaddubsw, whose 16-bit
    sums saturate: an int8 graph's outputs there are not the exact integer arithmetic of the graph (measured on a
    TensorRT int8 EfficientNet-Lite0 graph, AMD EPYC Zen 3: 12 % top-1 agreement with the graph run unfused)."""
    return host.arch == "x86_64" and not host.cpu_flags & {"avx512_vnni", "avx_vnni"}


def with_threads(settings: dict, threads: int) -> dict:
    return {**settings, "intra_op_num_threads": threads}


def make_session(model: Path | bytes, settings: dict, *, profile_prefix: str | None = None,
                 optimized_path: Path | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(settings.get("intra_op_num_threads", 0))
    options.inter_op_num_threads = int(settings.get("inter_op_num_threads", 0))
    options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if settings.get("execution_mode") == "parallel"
                              else ort.ExecutionMode.ORT_SEQUENTIAL)
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, settings.get("graph_optimization_level",
                                                                                        "ORT_ENABLE_ALL"))
    options.log_severity_level = 3
    for key, value in settings.get("config_entries", {}).items():
        options.add_session_config_entry(key, str(value))
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if optimized_path is not None:  # the graph ORT runs after its own fusions: node names match the profile
        options.optimized_model_filepath = str(optimized_path)
    try:
        return ort.InferenceSession(str(model) if isinstance(model, Path) else model, options,
                                    providers=settings.get("providers", ["CPUExecutionProvider"]),
                                    disabled_optimizers=list(settings.get("disabled_optimizers", [])))
    except Exception as exc:  # ORT's own exception types
        raise ExportError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0][:300]}",
                          hint="the compiled graph is invalid for this ONNX Runtime; rerun with --debug") from None


class OrtRunner:
    """A loaded session; `infer` takes and returns numpy arrays keyed by name."""

    def __init__(self, model: Path, signature: Signature, settings: dict):
        self.model = model
        self.signature = signature
        self.settings = settings
        self.session = None
        self.load_seconds = 0.0

    def __enter__(self) -> "OrtRunner":
        start = time.perf_counter()
        self.session = make_session(self.model, self.settings)
        self.load_seconds = time.perf_counter() - start
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._outputs = [o.name for o in self.session.get_outputs()]
        return self

    def __exit__(self, *exc) -> None:
        self.session = None

    def infer(self, feed: Feed) -> dict[str, np.ndarray]:
        values = self.session.run(self._outputs, {k: feed[k] for k in self._inputs})
        return dict(zip(self._outputs, values))
