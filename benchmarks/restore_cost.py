"""What keeping one unit in float costs on OpenVINO, measured, against the costs the search could estimate it by.

    .venv/bin/python -m benchmarks.restore_cost [--work DIR] [--runs 200]

EfficientNet-Lite0's NNCF int8 IR (the quantizer settings and calibration half kiln's OpenVINO `auto` uses), its
quantizer groups as kiln's search sees them (`backends/openvino/fallback.py`). Each unit is restored alone and timed
against the all-int8 IR in this process (CPU plugin, LATENCY hint, f32 execution, 2 threads, batch 1, median of
`--runs`). Beside it, two estimates: kiln's ranking cost (FLOPs kept in float plus one median unit's FLOPs for the
boundary, `fallback/search.py` unit_costs) and a per-layer profile (the unit's layers' time in the all-float IR minus
in the all-int8 IR, from the plugin's performance counters). Prints the units the measurement and the estimates
disagree on most, the correlation of each estimate with the measurement, and a few unit sets timed together
(interleaved rounds), to show whether restore costs add up.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import zoo

CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "2"}
ROUNDS, PER_ROUND = 7, 50


def _kiln_fp32(work: Path, target: str) -> Path:
    """kiln's fp32 artifact of EfficientNet-Lite0 for `target` (its folder), exported once per work folder."""
    out = work / f"{target}-fp32"
    if not (out / "report.json").is_file():
        subprocess.run([sys.executable, "-m", "kiln.cli", "export", "benchmarks.zoo:efficientnet_lite0",
                        *zoo.EFFICIENTNET_CLI, "--target", target, "--out", str(out), "--no-bench", "--no-analysis",
                        "--quiet"], check=True)
    return out


def _onnx_flops(work: Path) -> dict[str, int]:
    """FLOPs per node of the exported graph (its node names are the IR's op names, as the search reads them)."""
    import onnx

    from kiln.bench.flops import graph_costs

    model = onnx.load(str(_kiln_fp32(work, "onnxruntime") / "model.onnx"))
    return {name: cost.flops for name, _, cost in graph_costs(model, {model.graph.input[0].name: (1, 3, 224, 224)})}


def _paired_ms(core, low_request, model, feed, runs: int) -> float:
    """p50 of `model` minus p50 of the all-int8 request, timed in alternating rounds of `runs` / 4, so that a drift of
    the machine's speed (this VM's moved by up to 1.6x within an hour) cancels out."""
    request = core.compile_model(model, "CPU", CONFIG).create_infer_request()
    for _ in range(20):
        request.infer(feed)
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(4):
        for which, req in ((0, low_request), (1, request)):
            for _ in range(max(runs // 4, 1)):
                start = time.perf_counter()
                req.infer(feed)
                times[which].append(time.perf_counter() - start)
    return float(np.median(times[1]) - np.median(times[0])) * 1e3


def _layer_ms(core, model, feed, runs: int = 50) -> dict[str, float]:
    request = core.compile_model(model, "CPU", {**CONFIG, "PERF_COUNT": "YES"}).create_infer_request()
    for _ in range(10):
        request.infer(feed)
    totals: dict[str, float] = {}
    for _ in range(runs):
        request.infer(feed)
        for info in request.get_profiling_info():
            if info.status.name == "EXECUTED":
                totals[info.node_name] = totals.get(info.node_name, 0.0) + info.real_time.total_seconds() * 1e3 / runs
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kiln-bench-restore-cost"))
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args(argv)
    import nncf
    import openvino as ov

    from kiln.backends.openvino.fallback import _Groups
    from kiln.fallback.search import unit_costs
    from kiln.targets import detect_host

    work = args.work
    _, _, _, _, cals, _, _ = zoo.efficientnet_data(work)
    core = ov.Core()
    float_model = core.read_model(str(_kiln_fp32(work, "openvino") / "openvino" / "model.xml"))
    ranges = cals[0::2]  # the half kiln's split sets ranges with
    quantized = nncf.quantize(float_model, nncf.Dataset(ranges), subset_size=len(ranges), fast_bias_correction=False)
    groups = _Groups(float_model, quantized)
    units = groups.units(_onnx_flops(work))
    cost = unit_costs(units)
    feed = {0: cals[1]}
    low_request = core.compile_model(quantized, "CPU", CONFIG).create_infer_request()
    for _ in range(20):
        low_request.infer(feed)
    low_layers, high_layers = _layer_ms(core, quantized, feed), _layer_ms(core, float_model, feed)
    rows = []
    for index, unit in enumerate(units):
        measured = _paired_ms(core, low_request, groups.model((unit.name,)), feed, args.runs)
        layers = [k for k in set(low_layers) | set(high_layers)
                  if any(k == n or k.startswith(n + "/") for n in unit.nodes)]
        profiled = sum(high_layers.get(k, 0.0) - low_layers.get(k, 0.0) for k in layers)
        rows.append((unit, measured, profiled, cost[unit.name]))
        print(f"{index + 1}/{len(units)} units timed", file=sys.stderr, end="\r")
    measured = np.array([r[1] for r in rows])
    print(f"\nEfficientNet-Lite0, NNCF int8 IR, OpenVINO {ov.__version__} CPU; {detect_host().cpu_model}; "
          f"{args.runs} runs per graph, alternating with the all-int8 IR\n")
    print("| cost model | correlation with the measured restore cost |\n|---|---|")
    for label, column in (("FLOPs + boundary (kiln's ranking cost)", 3), ("per-layer profile, float minus int8", 2)):
        estimate = np.array([r[column] for r in rows])
        print(f"| {label} | {np.corrcoef(estimate, measured)[0, 1]:.2f} ({len(rows)} units) |")
    print("\n| unit | op | nodes | measured ms | profile ms | kiln cost MFLOP |\n|---|---|---|---|---|---|")
    for unit, m, p, c in sorted(rows, key=lambda r: -abs(r[1] - r[2]))[:10]:
        print(f"| {unit.name} | {unit.op_type} | {len(unit.nodes)} | {m:+.3f} | {p:+.3f} | {c / 1e6:.1f} |")
    by_cost = [r[0].name for r in sorted(rows, key=lambda r: -r[1])]
    sets = {"all int8": (), "costliest unit": tuple(by_cost[:1]), "two costliest": tuple(by_cost[:2]),
            "three costliest": tuple(by_cost[:3])}
    requests = {k: core.compile_model(groups.model(v), "CPU", CONFIG).create_infer_request() for k, v in sets.items()}
    times: dict[str, list[float]] = {k: [] for k in sets}
    for _ in range(ROUNDS):
        for name, request in requests.items():
            for _ in range(PER_ROUND):
                start = time.perf_counter()
                request.infer(feed)
                times[name].append(time.perf_counter() - start)
    base = float(np.median(times["all int8"]) * 1e3)
    print(f"\nall int8: p50 {base:.3f} ms in the interleaved rounds")
    alone = dict((r[0].name, r[1]) for r in rows)
    print("\n| units restored together | measured ms over all int8 | sum of alone |\n|---|---|---|")
    for name, kept in sets.items():
        if kept:
            print(f"| {name}: {', '.join(kept)} | {float(np.median(times[name]) * 1e3) - base:+.3f} | "
                  f"{sum(alone[k] for k in kept):+.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
