"""Throughput and tail latency per batch size, for models whose inputs share a dynamic batch axis.

One loaded runner serves every size (the same session the artifact ships). Each point is short (the
sweep is a shape of the curve, not a benchmark); the sweep stops early once a point exceeds four
times the latency budget or one second per run.
"""

from __future__ import annotations

import time

import numpy as np

from kiln.bench.latency import summarise
from kiln.calibration import Feed
from kiln.signature import Signature

POINT_SECONDS = 0.5
POINT_MIN_RUNS = 10
POINT_WARMUP = 3
SLOWEST_RUN_MS = 1000.0


def batch_axis(signature: Signature) -> str | None:
    """The name of axis 0 when every input has it dynamic, under one name; else None."""
    names = {t.shape[0] if t.shape and isinstance(t.shape[0], str) else None for t in signature.inputs}
    return names.pop() if len(names) == 1 and None not in names else None


def batched(feed: Feed, batch: int) -> Feed:
    """The example's first sample repeated `batch` times along axis 0."""
    return {k: np.ascontiguousarray(np.repeat(v[:1], batch, axis=0)) for k, v in feed.items()}


def _point(runner, feed: Feed, batch: int) -> dict:
    for _ in range(POINT_WARMUP):
        runner.infer(feed)
    times: list[int] = []
    begin = time.perf_counter()
    while len(times) < POINT_MIN_RUNS or time.perf_counter() - begin < POINT_SECONDS:
        t0 = time.perf_counter_ns()
        runner.infer(feed)
        times.append(time.perf_counter_ns() - t0)
        if times[-1] / 1e6 > SLOWEST_RUN_MS and len(times) >= 3:
            break
    stats = summarise(times, batch)
    return {"batch": batch, "p50_ms": stats["latency_ms"]["p50"], "p99_ms": stats["latency_ms"]["p99"],
            "throughput_per_s": batch * 1000.0 / stats["latency_ms"]["p50"], "runs": stats["runs"]}


def sweep(make_runner, feed: Feed, signature: Signature, sizes: tuple[int, ...], budget_ms: float | None) -> dict:
    axis = batch_axis(signature)
    if axis is None:
        return {"skipped": "the model has no dynamic batch axis shared by all inputs"}
    points = []
    with make_runner() as runner:
        for batch in sizes:
            point = _point(runner, batched(feed, batch), batch)
            points.append(point)
            if point["p50_ms"] > SLOWEST_RUN_MS or (budget_ms and point["p50_ms"] > 4 * budget_ms):
                break
    within = [p for p in points if budget_ms is None or p["p99_ms"] <= budget_ms]
    best = max(within, key=lambda p: p["throughput_per_s"]) if within else None
    return {"axis": axis, "method": f"one session, each size >= {POINT_MIN_RUNS} runs and {POINT_SECONDS} s after "
                                    f"{POINT_WARMUP} warm-up; inputs: the example's first sample repeated",
            "points": points, "latency_budget_ms": budget_ms,
            "best_batch": best["batch"] if best else None,
            "best_throughput_per_s": best["throughput_per_s"] if best else None}
