"""Roofline arithmetic, time split and verdict, checked against hand calculations (no runtime involved)."""

from __future__ import annotations

import pytest

from kiln.bench.analysis import cost_per_million
from kiln.bench.roofline import SMALL_NODE_MS, analyse, compute_peak, node_bound

PEAKS = {"runtime": "onnxruntime", "threads": 2, "fp32_gflops": 100.0, "int8_gops": 400.0, "bf16_gflops": None,
         "memory_gbps": 10.0}


def _row(name, ms, flops, nbytes, dtype="float32", weight_bytes=0):
    return {"name": name, "op_type": "MatMul", "ms": ms, "flops": flops, "bytes": nbytes, "compute_dtype": dtype,
            "weight_bytes": weight_bytes, "intensity": flops / nbytes if nbytes else 0.0}


def test_node_bound_is_the_larger_of_compute_and_traffic_time():
    # 1 GFLOP at 100 GFLOP/s = 10 ms; 10 MB at 10 GB/s = 1 ms -> compute-bound, bound 10 ms, measured 20 ms
    row = node_bound(_row("mm", 20.0, 10**9, 10**7), PEAKS)
    assert row["bound"] == "compute"
    assert row["bound_ms"] == pytest.approx(10.0)
    assert row["efficiency"] == pytest.approx(0.5)
    # the same node in int8 runs against the int8 peak: 2.5 ms compute vs 1 ms traffic
    assert node_bound(_row("mm", 20.0, 10**9, 10**7, "int8"), PEAKS)["bound_ms"] == pytest.approx(2.5)
    # 1 MFLOP over 100 MB: traffic sets the bound, 10 ms
    mem = node_bound(_row("add", 40.0, 10**6, 10**8), PEAKS)
    assert (mem["bound"], mem["bound_ms"], mem["efficiency"]) == ("memory", pytest.approx(10.0), pytest.approx(0.25))


def test_missing_bf16_peak_falls_back_to_fp32():
    assert compute_peak(PEAKS, "bfloat16") == 100.0
    assert compute_peak({**PEAKS, "bf16_gflops": 300.0}, "bfloat16") == 300.0
    assert compute_peak({**PEAKS, "int8_gops": None}, "uint8") == 100.0


def test_model_bound_sums_node_bounds_and_splits_time_three_ways():
    rows = [_row("big_mm", 20.0, 10**9, 10**7, weight_bytes=4 * 10**6),   # compute, bound 10 ms
            _row("stream", 15.0, 10**6, 10**8),                          # memory, bound 10 ms
            _row("tiny", SMALL_NODE_MS / 2, 10, 100)]                    # dispatch-sized
    result = analyse(rows, measured_ms=40.0, peaks=PEAKS, context={"backend": "onnxruntime", "precision": "fp32"})
    model, split = result["model"], result["time_split"]
    assert model["flops"] == 10**9 + 10**6 + 10
    assert model["bytes"] == 10**7 + 10**8 + 100
    assert model["weight_bytes"] == 4 * 10**6
    tiny_bound = max(10 / 100e6, 100 / 10e6)
    assert model["bound_ms"] == pytest.approx(20.0 + tiny_bound)
    assert model["efficiency"] == pytest.approx((20.0 + tiny_bound) / 40.0)
    assert model["achieved_gflops"] == pytest.approx(model["flops"] / 40e6)
    assert model["ridge_intensity"] == pytest.approx(10.0)  # 100 GFLOP/s over 10 GB/s
    # between kernels: 40 - (20 + 15 + 0.01) ms; the tiny node counts as overhead too
    assert split["compute_ms"] == pytest.approx(20.0)
    assert split["memory_ms"] == pytest.approx(15.0)
    assert split["overhead_ms"] == pytest.approx(40.0 - 35.0 - SMALL_NODE_MS / 2 + SMALL_NODE_MS / 2)
    assert split["compute_share"] + split["memory_share"] + split["overhead_share"] == pytest.approx(1.0)
    assert result["verdict"] == "compute-bound"
    assert any("--precision int8" in a for a in result["advice"])


def test_many_small_kernels_are_overhead_bound_with_fusion_and_batching_advice():
    rows = [_row(f"n{i}", 0.005, 1000, 4000) for i in range(200)]  # 200 kernels of 5 µs: 1 ms
    result = analyse(rows, measured_ms=1.5, peaks=PEAKS,
                     context={"backend": "onnxruntime", "precision": "fp32", "batch_dynamic": True})
    assert result["verdict"] == "overhead-bound"
    assert result["time_split"]["overhead_ms"] == pytest.approx(1.5)
    text = " ".join(result["advice"])
    assert "200 of 200 kernels" in text and "batch" in text and "openvino" in text


def test_weight_heavy_memory_bound_model_is_told_to_compress_weights():
    rows = [_row("fc", 5.0, 2 * 10**6, 4 * 10**7, weight_bytes=3 * 10**7)]  # intensity 0.05, weights 75 % of bytes
    result = analyse(rows, measured_ms=5.0, peaks=PEAKS, context={"backend": "openvino", "precision": "fp32",
                                                                  "batch_dynamic": True})
    assert result["verdict"] == "memory-bound"
    assert "75%" in result["advice"][0] and "int4-weights" in result["advice"][0]


def test_cost_per_million_inferences():
    # 100 inferences/s for an hour = 360,000 inferences for 2.0 -> 5.555... per million
    assert cost_per_million(2.0, 100.0) == pytest.approx(2.0 / 360_000 * 1e6)
    assert cost_per_million(2.0, None) is None


def test_memory_ceiling_is_the_smallest_cache_level_holding_the_working_set():
    from kiln.bench.roofline import memory_ceiling

    peaks = {**PEAKS, "cache_gbps": {"l2": {"cache_bytes": 4 << 20, "gbps": 90.0},
                                     "l3": {"cache_bytes": 32 << 20, "gbps": 35.0}}}
    assert memory_ceiling(peaks, 3 << 20) == (90.0, "L2")
    assert memory_ceiling(peaks, 20 << 20) == (35.0, "L3")
    assert memory_ceiling(peaks, 64 << 20) == (10.0, "DRAM")
    assert memory_ceiling(PEAKS, 1) == (10.0, "DRAM")  # no cache figures: DRAM
    rows = [_row("fc", 1.0, 2 * 10**6, 3 << 20, weight_bytes=2 << 20)]
    assert analyse(rows, 1.0, peaks, {})["model"]["memory_level"] == "L2"
