"""The report's analysis, measured: does it disturb the latency it reports, how long the host peaks take,
and what it says about the real models.

    .venv/bin/python -m benchmarks.report_analysis [--rounds 2] [--matrix]

1. p50 with the analysis on (source baseline, profile, roofline, batch sweep) against `--no-analysis`,
   exports interleaved round by round: the timed runs come before the analysis, so the two must agree
   within the machine's noise.
2. Host peaks measured afresh for ONNX Runtime and OpenVINO (seconds, figures), then read from the cache.
3. With --matrix: MiniLM over onnxruntime,openvino x fp32,int8-dynamic,int8-weights,int4-weights.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import zoo
from benchmarks.run import kiln_export

SHORT = ["--runs", "200", "--min-seconds", "3", "--throughput-seconds", "0"]


def models(work: Path) -> dict[str, list[str]]:
    images = zoo.sample_images(work / "images", "eval")
    return {
        "MiniLM onnxruntime int8-dynamic": [str(zoo.minilm_path()), "--precision", "int8-dynamic", "--eval",
                                            str(zoo.EVAL_SENTENCES), "--eval-limit", "20", "--calibration",
                                            str(zoo.CALIBRATION_SENTENCES), "--calibration-limit", "50"],
        "EfficientNet-Lite0 openvino fp32": ["benchmarks.zoo:efficientnet_lite0", *zoo.EFFICIENTNET_CLI, "--target",
                                             "openvino", "--eval", str(images), "--eval-limit", "20"],
    }


def overhead(work: Path, rounds: int) -> None:
    print("| model | p50 ms, analysis off (each round) | p50 ms, analysis on (each round) | on/off median | "
          "verdict | efficiency | analyse stage s |")
    print("|---|---|---|---|---|---|---|")
    for name, args in models(work).items():
        p50 = {"off": [], "on": []}
        last = None
        for r in range(rounds):
            for mode in ("off", "on"):
                # each round measured afresh (the stage cache would serve the first round's bench to the others)
                extra = ["--no-cache", *(["--no-analysis"] if mode == "off" else [])]
                report = kiln_export(work / f"{name}-{mode}-{r}".replace(" ", "_"), [*args, *SHORT, *extra])
                p50[mode].append(report["latency_ms"]["p50"])
                last = report if mode == "on" else last
        ratio = statistics.median(p50["on"]) / statistics.median(p50["off"])
        roof = last["roofline"]
        print(f"| {name} | {', '.join(f'{v:.3f}' for v in p50['off'])} | {', '.join(f'{v:.3f}' for v in p50['on'])} | "
              f"{ratio:.3f} | {roof['verdict']} | {roof['model']['efficiency']:.0%} | "
              f"{last['stages_seconds'].get('analyse', 0):.1f} |")
        top = ", ".join(f"{t['op_type']} {t['share']:.0%}" for t in last["profile"]["by_op_type"][:3])
        print(f"|  | top op types: {top} | "
              f"memory level {roof['model']['memory_level']}, working set {roof['model']['working_set_bytes'] / 2**20:.1f} MiB | "
              f"{roof['model']['flops'] / 1e9:.2f} GFLOP | | | |")


def peaks() -> None:
    from kiln.bench.host_peaks import host_peaks

    print("\n| runtime | measured in s | fp32 GFLOP/s | int8 GOP/s | bf16 GFLOP/s | DRAM GB/s | L2 / L3 GB/s | "
          "from cache in s |")
    print("|---|---|---|---|---|---|---|---|")
    for runtime in ("onnxruntime", "openvino"):
        fresh = host_peaks(runtime, 2, refresh=True)
        start = time.perf_counter()
        cached = host_peaks(runtime, 2)
        took = time.perf_counter() - start
        assert cached["cached"]
        c = fresh["cache_gbps"]
        print(f"| {runtime} | {fresh['seconds']:.1f} | {fresh['fp32_gflops']:.0f} | {fresh['int8_gops'] or '–'} | "
              f"{fresh['bf16_gflops'] or '–'} | {fresh['memory_gbps']:.1f} | {c['l2']['gbps']:.0f} / {c['l3']['gbps']:.0f} | "
              f"{took:.3f} |")


def matrix(work: Path) -> None:
    out = work / "matrix"
    start = time.perf_counter()
    kiln_export(out, [str(zoo.minilm_path()), "--target", "onnxruntime,openvino", "--precision",
                               "fp32,int8-dynamic,int8-weights,int4-weights", "--eval", str(zoo.EVAL_SENTENCES),
                               "--eval-limit", "50", "--calibration", str(zoo.CALIBRATION_SENTENCES),
                               "--calibration-limit", "100", "--price-per-hour", "0.5", "--latency-budget-ms", "50",
                               *SHORT], name="comparison.json")
    print(f"\nmatrix in {time.perf_counter() - start:.0f} s\n")
    print((out / "comparison.md").read_text())
    keep = Path(tempfile.gettempdir()) / "kiln-minilm-matrix"
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(out, keep)
    print(f"kept in {keep} (report.html)")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--matrix", action="store_true")
    parser.add_argument("--only-matrix", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.only_matrix:
            overhead(work, args.rounds)
            peaks()
        if args.matrix or args.only_matrix:
            matrix(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
