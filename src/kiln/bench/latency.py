"""Latency and throughput of one loaded model: warm-up, then timed runs until a count and a time floor.

Cold (first) inference and load time are reported apart from the steady state. perf_counter_ns only.
"""

from __future__ import annotations

import os
import time

import numpy as np

from kiln.calibration import Feed
from kiln.config import BenchSettings

PERCENTILES = (50, 90, 95, 99)


def median_ms(run, runs: int, warmup: int = 5) -> float:
    """Median wall time of `run()` over `runs` calls after `warmup` untimed ones, in milliseconds: the quick timing
    that compile-time decisions (fusion on or off, mixed or float) are made on."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        run()
        times.append(time.perf_counter_ns() - start)
    return float(np.median(times)) / 1e6


def _rss() -> int:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss


def summarise(times_ns: list[int], batch: int) -> dict:
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    stats = {f"p{p}": float(np.percentile(ms, p)) for p in PERCENTILES}
    stats.update({"mean": float(ms.mean()), "std": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
                  "min": float(ms.min()), "max": float(ms.max())})
    return {"latency_ms": stats, "runs": len(ms), "throughput_per_s": batch * 1000.0 / stats["mean"]}


def histogram(times_ns: list[int], bins: int = 30) -> dict:
    """Counts of the timed runs in equal bins up to the 99.5th percentile (the tail beyond is one last bin)."""
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    top = float(np.percentile(ms, 99.5))
    edges = np.linspace(float(ms.min()), top if top > ms.min() else float(ms.min()) + 1e-3, bins + 1)
    counts, _ = np.histogram(np.minimum(ms, edges[-1]), bins=edges)
    return {"edges_ms": [round(float(e), 5) for e in edges], "counts": [int(c) for c in counts],
            "tail_from_ms": round(top, 5), "max_ms": float(ms.max())}


def measure(make_runner, feed: Feed, settings: BenchSettings) -> dict:
    """Load a runner (timed), run it cold once, warm up, then time it; returns the report's `bench` block."""
    rss_before = _rss()
    runner = make_runner()
    with runner:
        load_s = runner.load_seconds
        start = time.perf_counter_ns()
        runner.infer(feed)
        first_ms = (time.perf_counter_ns() - start) / 1e6
        for _ in range(settings.warmup):
            runner.infer(feed)
        times: list[int] = []
        begin = time.perf_counter()
        rss_peak = _rss()
        while True:
            t0 = time.perf_counter_ns()
            runner.infer(feed)
            times.append(time.perf_counter_ns() - t0)
            elapsed = time.perf_counter() - begin
            if (len(times) >= settings.min_runs and elapsed >= settings.min_seconds) or elapsed >= settings.max_seconds:
                break
            if len(times) % 50 == 0:
                rss_peak = max(rss_peak, _rss())
        rss_peak = max(rss_peak, _rss())
        device = None
        if hasattr(runner, "device_latency_ms"):  # GPU engines: compute alone, without host<->device copies
            device = summarise([int(t * 1e6) for t in runner.device_latency_ms(feed)], 1)["latency_ms"]
        run_settings = dict(runner.settings)
    batch = next(iter(feed.values())).shape[0] if feed else 1
    result = summarise(times, batch)
    result["latency_histogram"] = histogram(times)
    result.update({
        "load_ms": load_s * 1000.0, "first_inference_ms": first_ms, "warmup_runs": settings.warmup,
        "timed_seconds": round(time.perf_counter() - begin, 3),
        "memory_mib": {"rss_increase_from_load": (rss_peak - rss_before) / 2**20, "rss_peak": rss_peak / 2**20},
        "batch": batch, "input_shapes": {k: list(v.shape) for k, v in feed.items()},
        "runtime_settings": run_settings,
    })
    if device is not None:
        result["device_latency_ms"] = device
    return result
