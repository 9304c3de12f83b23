"""The source model measured in the same process, the same way, as the baseline every speedup divides.

PyTorch sources run eagerly under inference_mode with the plan's thread count. An ONNX file runs on ONNX
Runtime with its default graph optimizations and the same threads: the speed a user gets without kiln.
"""

from __future__ import annotations

from kiln.bench.latency import measure
from kiln.calibration import Feed
from kiln.config import BenchSettings


class CallableRunner:
    """Adapts a `feed -> outputs` callable to the runner protocol `measure` expects."""

    def __init__(self, infer, settings: dict):
        self.infer = infer
        self.settings = settings
        self.load_seconds = 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def _onnx_runner(path: str, threads: int, constants: Feed) -> CallableRunner:
    """The file as the user has it: inputs bound with --constant are fed their value."""
    from pathlib import Path

    from kiln.backends.onnxruntime.session import make_session

    session = make_session(Path(path), {"intra_op_num_threads": threads, "inter_op_num_threads": 1})
    names = [i.name for i in session.get_inputs()]
    return CallableRunner(lambda feed: session.run(None, {k: {**feed, **constants}[k] for k in names}),
                          {"runtime": "onnxruntime (source ONNX, default settings)", "threads": threads})


def measure_source(source, feed: Feed, threads: int, settings: BenchSettings) -> dict:
    """The `source_bench` block: latency and throughput of the source model, as measured here."""
    if source.info.kind == "onnx":
        runner = _onnx_runner(source.info.location, threads, getattr(source, "constants", {}))
        result = measure(lambda: runner, feed, settings)
    else:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            runner = CallableRunner(source.run, {"runtime": "torch eager", "threads": threads,
                                                 "torch": torch.__version__})
            result = measure(lambda: runner, feed, settings)
        finally:
            torch.set_num_threads(previous)
    return {"runtime": runner.settings["runtime"], "threads": threads, "latency_ms": result["latency_ms"],
            "throughput_per_s": result["throughput_per_s"], "runs": result["runs"],
            "latency_histogram": result.get("latency_histogram")}
