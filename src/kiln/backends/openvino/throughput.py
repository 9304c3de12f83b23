"""Throughput the way OpenVINO serves it: the THROUGHPUT hint, several streams, asynchronous requests.

The latency figures come from one synchronous request under the LATENCY hint; this run answers a different
question (how many inferences per second the device sustains) and reports the streams and requests the
plugin chose, and the execution precision it ran.
"""

from __future__ import annotations

import time
from pathlib import Path

from kiln.backends.openvino.session import port_name, compile_model, execution_precision, resolved_settings
from kiln.calibration import Feed


def _int_property(compiled, name: str) -> int | None:
    try:
        return int(compiled.get_property(name))
    except (RuntimeError, TypeError, ValueError):
        return None


def measure_throughput(model: Path, settings: dict, feed: Feed, seconds: float) -> dict:
    import openvino as ov

    device, config, stand_in = resolved_settings(settings, model)
    compiled = compile_model(model, settings, device, {**config, "PERFORMANCE_HINT": "THROUGHPUT"})
    requests = _int_property(compiled, "OPTIMAL_NUMBER_OF_INFER_REQUESTS") or 1
    queue = ov.AsyncInferQueue(compiled, requests)
    inputs = {name: feed[name] for name in (port_name(p, tuple(feed)) for p in compiled.inputs)}
    for _ in range(2 * requests):  # warm-up: every request runs at least once
        queue.start_async(inputs)
    queue.wait_all()
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        queue.start_async(inputs)  # blocks while every request is busy
        done += 1
    queue.wait_all()
    elapsed = time.perf_counter() - start
    batch = next(iter(feed.values())).shape[0] if feed else 1
    return {"hint": "THROUGHPUT", "device": device, "stand_in": stand_in,
            "streams": _int_property(compiled, "NUM_STREAMS"), "infer_requests": requests,
            "threads": _int_property(compiled, "INFERENCE_NUM_THREADS"), "inferences": done,
            "seconds": round(elapsed, 3), "throughput_per_s": batch * done / elapsed,
            "execution_precision": execution_precision(compiled)}
