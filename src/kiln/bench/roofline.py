"""Where the time goes, against this host's peaks: roofline bound per node and for the model, a verdict, advice.

Per node, the roofline bound is max(FLOPs / compute peak for its arithmetic type, bytes moved / memory
bandwidth): no kernel can beat it. Nodes run one after another, so the model's bound is the sum of the
nodes' bounds, and efficiency = bound / measured time. The measured time splits three ways:
- compute: nodes whose bound is set by arithmetic (intensity above the ridge point),
- memory: nodes whose bound is set by bytes moved,
- overhead: time between kernels (the timed p50 minus the profiled kernel time) plus nodes so small
  (< SMALL_NODE_MS) that dispatch, not arithmetic or traffic, sets their cost.
The largest share is the verdict. Bytes are each node's inputs and outputs with no reuse between nodes.
Which bandwidth bounds them depends on where the model's working set (its weights plus its largest
activation) lives across inferences: in L2, in L3, or in DRAM; the report names the level it used.
"""

from __future__ import annotations

SUSPECT_EFFICIENCY = 1.1  # faster than the bound by more than timing noise: the peaks must be wrong
SMALL_NODE_MS = 0.02  # 20 µs: below this a CPU kernel's cost is mostly dispatch and thread wake-up


def compute_peak(peaks: dict, dtype: str) -> float:
    """GFLOP/s (or GOP/s) this host reaches for arithmetic in `dtype`, falling back to fp32."""
    if dtype in ("int8", "uint8") and peaks.get("int8_gops"):
        return peaks["int8_gops"]
    if dtype == "bfloat16" and peaks.get("bf16_gflops"):
        return peaks["bf16_gflops"]
    return peaks["fp32_gflops"]


def memory_ceiling(peaks: dict, working_set: int) -> tuple[float, str]:
    """(GB/s, level) for a working set: the smallest cache level that holds it, else DRAM."""
    for level in ("l2", "l3"):
        cache = (peaks.get("cache_gbps") or {}).get(level)
        if cache and working_set <= cache["cache_bytes"]:
            return cache["gbps"], level.upper()
    return peaks["memory_gbps"], "DRAM"


def node_bound(node: dict, peaks: dict) -> dict:
    """Adds intensity, bound kind, bound_ms and efficiency to one `top_nodes`-style row."""
    compute_ms = node["flops"] / (compute_peak(peaks, node["compute_dtype"]) * 1e6)
    memory_ms = node["bytes"] / (peaks["memory_gbps"] * 1e6)
    bound_ms = max(compute_ms, memory_ms)
    return {**node, "bound": "compute" if compute_ms >= memory_ms else "memory", "bound_ms": bound_ms,
            "efficiency": bound_ms / node["ms"] if node["ms"] > 0 else None}


def analyse(nodes: list[dict], measured_ms: float, peaks: dict, context: dict) -> dict:
    """The report's `roofline` block from every profiled node (dicts with name, op_type, ms, flops, bytes,
    compute_dtype, weight_bytes) and the timed p50. `context`: backend, precision, transformer, batch_dynamic."""
    original = peaks
    working_set = sum(n.get("weight_bytes", 0) for n in nodes) + max(
        (n["bytes"] - n.get("weight_bytes", 0) for n in nodes), default=0)
    bandwidth, level = memory_ceiling(peaks, working_set)
    peaks = {**peaks, "memory_gbps": bandwidth}
    rows = [node_bound(n, peaks) for n in nodes]
    kernel_ms = sum(r["ms"] for r in rows)
    split = {"compute_ms": 0.0, "memory_ms": 0.0, "overhead_ms": max(measured_ms - kernel_ms, 0.0)}
    small = 0
    for r in rows:
        if r["ms"] < SMALL_NODE_MS:
            split["overhead_ms"] += r["ms"]
            small += 1
        else:
            split[f"{r['bound']}_ms"] += r["ms"]
    total = sum(split.values()) or 1.0
    split.update({k.replace("_ms", "_share"): v / total for k, v in list(split.items())})
    verdict = max(("compute", "memory", "overhead"), key=lambda k: split[f"{k}_ms"]) + "-bound"
    flops = sum(r["flops"] for r in rows)
    nbytes = sum(r["bytes"] for r in rows)
    bound_ms = sum(r["bound_ms"] for r in rows)
    dominant = _dominant_dtype(rows)
    peak = compute_peak(peaks, dominant)
    model = {"flops": flops, "bytes": nbytes, "weight_bytes": sum(r.get("weight_bytes", 0) for r in rows),
             "intensity": flops / nbytes if nbytes else 0.0, "measured_ms": measured_ms, "bound_ms": bound_ms,
             "efficiency": bound_ms / measured_ms if measured_ms else None,
             "achieved_gflops": flops / (measured_ms * 1e6) if measured_ms else None,
             "compute_dtype": dominant, "compute_peak_gflops": peak, "ridge_intensity": peak / bandwidth,
             "working_set_bytes": working_set, "memory_level": level, "memory_gbps": bandwidth,
             "nodes": len(rows), "small_nodes": small}
    result = {"peaks": original, "model": model, "time_split": split, "verdict": verdict,
              "advice": advice(verdict, model, split, peaks, context)}
    if (model["efficiency"] or 0) > SUSPECT_EFFICIENCY:
        result["peaks_note"] = (f"measured {model['efficiency']:.2f}x faster than the roofline bound allows: the host "
                                "peaks are too low (measured while the machine was busy?); re-measure them with "
                                "KILN_REFRESH_PEAKS=1")
    return result


def _dominant_dtype(rows: list[dict]) -> str:
    by_dtype: dict[str, int] = {}
    for r in rows:
        by_dtype[r["compute_dtype"]] = by_dtype.get(r["compute_dtype"], 0) + r["flops"]
    return max(by_dtype, key=by_dtype.get) if by_dtype else "float32"


def advice(verdict: str, model: dict, split: dict, peaks: dict, context: dict) -> list[str]:
    """Concrete next steps, each one something kiln can do (a flag), with the number that motivates it."""
    backend, precision = context.get("backend"), context.get("precision")
    out = []
    eff = model["efficiency"] or 0.0
    if verdict == "compute-bound":
        if precision in ("fp32", "bf16", "fp16", "int8-weights", "int4-weights") and peaks.get("int8_gops"):
            ratio = peaks["int8_gops"] / peaks["fp32_gflops"]
            out.append(f"int8 activations: `--precision int8` (static, calibrated) runs the MatMuls/Convs on the int8 "
                       f"units, whose measured peak here is {ratio:.1f}x the fp32 peak")
        elif precision in ("int8", "int8-dynamic"):
            out.append(f"already int8: the arithmetic runs at {eff:.0%} of its roofline bound; what remains is kernel "
                       "efficiency, or a smaller model")
        if backend == "onnxruntime" and peaks.get("bf16_gflops") is None:
            out.append("`--target openvino` can use this CPU's bf16/AMX units, which ONNX Runtime's CPU provider does not")
    elif verdict == "memory-bound":
        weight_share = model["weight_bytes"] / model["bytes"] if model["bytes"] else 0.0
        if weight_share >= 0.3 and precision not in ("int4-weights",):
            flag = ("`--precision int8-weights` or `int4-weights`" if backend == "openvino"
                    else "`--precision int8-dynamic` (int8 weights) or `--target openvino --precision int4-weights`")
            out.append(f"weights are {weight_share:.0%} of the bytes moved: {flag} cuts that traffic 4-8x")
        if context.get("batch_dynamic"):
            out.append("larger batches reuse each weight for more rows and raise the arithmetic intensity: see the "
                       "batch sweep for the largest batch within your latency budget (`--latency-budget-ms`)")
        out.append(f"activations in a lower precision halve their traffic (`--precision int8`): the model moves "
                   f"{model['bytes'] / 2**20:.1f} MiB per inference")
    else:
        out.append(f"{model['small_nodes']} of {model['nodes']} kernels take under {SMALL_NODE_MS * 1000:.0f} µs and "
                   f"{split['overhead_share']:.0%} of the time is dispatch or between kernels: fewer, larger kernels help")
        if backend == "onnxruntime":
            out.append("`--target openvino` fuses more aggressively (whole subgraphs into one kernel)")
        if context.get("batch_dynamic"):
            out.append("batching amortises the per-kernel overhead: see the batch sweep (`--latency-budget-ms`)")
        out.append("fewer threads (`--threads 1`) can win when kernels are too small to split across cores")
    return out
