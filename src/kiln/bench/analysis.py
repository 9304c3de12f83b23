"""The report's analysis around the timed runs: runtime profile, roofline, batch sweep, cost, speedup.

Everything here runs after the timed runs, in its own sessions, so none of it touches the latency figures.
"""

from __future__ import annotations

import os

from kiln.bench.batch_sweep import batch_axis, sweep
from kiln.bench.profiling import node_rows, summarise
from kiln.bench.roofline import analyse as roofline
from kiln.config import Plan, ReportSettings


def analyse(backend, compiled, example: dict, plan: Plan, settings: ReportSettings, bench: dict) -> dict:
    """profile, roofline and batch_sweep blocks for one compiled model on this host."""
    from kiln.bench.host_peaks import host_peaks

    out: dict = {}
    profile = backend.profile(compiled.model, compiled.runtime_settings, example, settings.profile_runs)
    if isinstance(profile, str):
        out["profile"] = out["roofline"] = {"skipped": profile}
    else:
        peaks = host_peaks(profile.runtime, plan.threads, refresh=os.environ.get("KILN_REFRESH_PEAKS") == "1")
        if not peaks.get("fp32_gflops") or not peaks.get("memory_gbps"):
            out["profile"] = summarise(profile)
            out["roofline"] = {"skipped": "this host's fp32 or memory peak could not be measured: "
                                          + "; ".join(f"{k}: {v}" for k, v in peaks.get("method", {}).items())}
            return {**out, "batch_sweep": _sweep(backend, compiled, example, settings)}
        context = {"backend": plan.backend, "precision": plan.precision,
                   "batch_dynamic": batch_axis(compiled.signature) is not None}
        out["roofline"] = roofline(node_rows(profile), bench["latency_ms"]["p50"], peaks, context)
        out["profile"] = summarise(profile, {**peaks, "memory_gbps": out["roofline"]["model"]["memory_gbps"]})
    out["batch_sweep"] = _sweep(backend, compiled, example, settings)
    return out


def _sweep(backend, compiled, example: dict, settings: ReportSettings) -> dict:
    return sweep(lambda: backend.runner(compiled.model, compiled.signature, compiled.runtime_settings),
                 example, compiled.signature, settings.batch_sizes, settings.latency_budget_ms)


def analysis_line(analysis: dict) -> str:
    parts = []
    roof = analysis.get("roofline") or {}
    if "verdict" in roof:
        parts.append(f"{roof['verdict']}, {roof['model']['efficiency']:.0%} of the roofline bound")
    sweep_block = analysis.get("batch_sweep") or {}
    if sweep_block.get("points"):
        best = max(sweep_block["points"], key=lambda p: p["throughput_per_s"])
        parts.append(f"batch {best['batch']}: {best['throughput_per_s']:.0f}/s")
    return "; ".join(parts) or "nothing to analyse"


def cost_per_million(price_per_hour: float, throughput_per_s: float | None) -> float | None:
    """What a million inferences cost on a machine billed at `price_per_hour`, at a measured throughput."""
    if not throughput_per_s:
        return None
    return price_per_hour / (throughput_per_s * 3600.0) * 1e6


def report_extras(source_bench: dict | None, bench: dict | None, analysis: dict, settings: ReportSettings) -> dict:
    """The report fields this module owns: source baseline, speedup, profile, roofline, batch sweep, cost."""
    speedup = None
    if source_bench and bench:
        speedup = source_bench["latency_ms"]["p50"] / bench["latency_ms"]["p50"]
    cost = None
    if settings.price_per_hour and bench:
        price = settings.price_per_hour
        best = (analysis.get("batch_sweep") or {}).get("best_throughput_per_s")
        cost = {"price_per_hour": price, "throughput_per_s": bench["throughput_per_s"],
                "artifact_per_million": cost_per_million(price, bench["throughput_per_s"]),
                "source_per_million": cost_per_million(price, source_bench["throughput_per_s"]) if source_bench else None,
                "best_batch_per_million": cost_per_million(price, best),
                "note": "one process at batch 1 (and at the batch sweep's best batch); the machine fully used"}
    return {"source_bench": source_bench, "speedup_vs_source": speedup,
            "profile": analysis.get("profile"), "roofline": analysis.get("roofline"),
            "batch_sweep": analysis.get("batch_sweep"), "cost": cost}
