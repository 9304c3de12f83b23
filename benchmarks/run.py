"""Side-by-side benchmark: kiln artifacts against torch eager and the peers' default recipes, in one process.

Every variant runs the same inputs; latency rounds are interleaved (the machine is noisy: absolute times
move +-30 % between runs here, ratios measured back to back hold to about +-10 %). Batch 1, 2 threads.

    .venv/bin/python -m benchmarks.run [--model minilm|efficientnet|all] [--rounds 7] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from benchmarks import peers, zoo

THREADS = 2


def kiln_export(out: Path, args: list[str], name: str = "report.json") -> dict:
    """The whole `kiln export` as a user runs it, timed; returns its report (or comparison.json for a matrix)."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "kiln.cli", "export", *args, "--out", str(out), "--quiet"],
                            capture_output=True, text=True, cwd=zoo.REPO)
    if result.returncode != 0:
        raise SystemExit(f"kiln export failed: {result.stderr}")
    report = json.loads((out / name).read_text())
    report["_wall_seconds"] = time.perf_counter() - start
    return report


def time_interleaved(variants: dict, feed_for: dict, rounds: int, per_round: int) -> dict[str, np.ndarray]:
    """Per-variant latencies (ms), rounds interleaved so drift hits every variant alike."""
    for name, fn in variants.items():  # warm-up
        for _ in range(10):
            fn(feed_for[name])
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            feed = feed_for[name]
            for _ in range(per_round):
                t0 = time.perf_counter_ns()
                fn(feed)
                times[name].append((time.perf_counter_ns() - t0) / 1e6)
    return {k: np.asarray(v) for k, v in times.items()}


def table(rows: list[dict], baseline: str) -> str:
    base = next(r for r in rows if r["variant"] == baseline)["p50_ms"]
    head = "| variant | p50 ms | p99 ms | speed vs torch eager | accuracy vs torch fp32 |"
    lines = [head, "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {base / r['p50_ms']:.2f}x | "
                     f"{r['accuracy']} |")
    return "\n".join(lines)


def run_model(name: str, rounds: int, work: Path) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    spec = peers.MODELS[name](work)
    reports = {label: kiln_export(work / label.replace(" ", "_"), args) for label, args in spec.kiln_runs.items()}
    variants, feeds, accuracy = {}, {}, {}
    for label, report in reports.items():
        out = work / label.replace(" ", "_")
        session = peers.kiln_session(out)
        variants[label] = session
        feeds[label] = spec.bench_feed
        accuracy[label] = spec.describe_kiln(report)
    for label, (session, acc) in spec.peer_sessions().items():
        variants[label], feeds[label], accuracy[label] = session, spec.bench_feed, acc
    for label, fn in spec.torch_variants().items():
        variants[label], feeds[label], accuracy[label] = fn, spec.torch_feed, "reference"
    times = time_interleaved(variants, feeds, rounds, spec.per_round)
    rows = [{"variant": k, "p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99)),
             "runs": len(v), "accuracy": accuracy[k]} for k, v in times.items()]
    stages = {label: {"wall_seconds": round(r["_wall_seconds"], 1), **r["stages_seconds"]} for label, r in reports.items()}
    return {"model": name, "rows": rows, "baseline": spec.baseline, "kiln_export_seconds": stages,
            "table": table(rows, spec.baseline)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("minilm", "efficientnet", "all"), default="all")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    names = ["minilm", "efficientnet"] if args.model == "all" else [args.model]
    results = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
               "python": platform.python_version(), "threads": THREADS, "models": []}
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        for name in names:
            result = run_model(name, args.rounds, Path(tmp) / name)
            results["models"].append(result)
            print(f"\n## {name} (batch 1, {THREADS} threads, {args.rounds} interleaved rounds)\n")
            print(result["table"])
            print("\nkiln export wall time and stages (s):")
            for label, stages in result["kiln_export_seconds"].items():
                print(f"  {label}: {stages}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
