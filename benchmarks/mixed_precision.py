"""`--precision auto` against its peer, in one process: EfficientNet-Lite0 on OpenVINO within a top-1 budget.

    .venv/bin/python -m benchmarks.mixed_precision [--work DIR] [--max-disagreement 0.10] [--tensorrt-only]
        [--calibration-per-source N]

Rows, all OpenVINO CPU IRs timed here in interleaved rounds (LATENCY hint, f32 execution, 2 threads):
- kiln `--precision auto --max-top1-disagreement X` (default margin, and `--tuning-margin 0`, NNCF's criterion), and
  kiln's pure int8 and fp32 artifacts beside it;
- the peer: NNCF `quantize_with_accuracy_control` on the same model, given the same split kiln makes (every other
  calibration image sets ranges, the others validate), kiln's quantizer settings (full bias correction) and the same
  budget (top-1 agreement with fp32 per image, max drop X absolute), timed end to end.
Accuracy: top-1 agreement with torch fp32 on the 168 evaluation images neither tool tuned on (all, and where fp32 is
confident, p >= 0.5). Search time: kiln's fallback search (the report's figure) against the peer's wall time after its
initial quantization. Also the TensorRT fp8 graph with `--fallback` (accuracy on ONNX Runtime CPU, no timing: its
speed is a GPU's).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import zoo

ROUNDS, PER_ROUND = 7, 50


def _export(out: Path, *args: str) -> dict:
    """One `kiln export` through the CLI (as users run it); its report, or a failure's report."""
    for stale in (out, out.with_name(out.name + ".rejected")):  # a report left by an earlier run is not this run's
        shutil.rmtree(stale, ignore_errors=True)
    command = [sys.executable, "-m", "kiln.cli", "export", "benchmarks.zoo:efficientnet_lite0", *zoo.EFFICIENTNET_CLI,
               "--out", str(out), "--no-bench", "--no-analysis", "--quiet", "--json", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    folder = out if (out / "report.json").is_file() else out.with_name(out.name + ".rejected")
    if not (folder / "report.json").is_file():
        raise SystemExit(f"kiln export failed ({result.returncode}): {result.stderr[-2000:]}")
    report = json.loads((folder / "report.json").read_text())
    report["_exit"], report["_folder"] = result.returncode, str(folder)
    return report


def _mixed(report: dict) -> dict:
    compile_ = report["compile"]
    return compile_.get("mixed_precision") or (compile_.get("graph_precision") or {}).get("mixed_precision") or {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kiln-bench-mixed"))
    parser.add_argument("--max-disagreement", type=float, default=0.10)
    parser.add_argument("--tensorrt-only", action="store_true", help="only the two TensorRT fp8 graph rows")
    parser.add_argument("--calibration-per-source", type=int, metavar="N",
                        help="random crops of each of the 21 source images in the calibration set (default: kiln's "
                             "sample set, 4 each, 84 images)")
    args = parser.parse_args(argv)
    import nncf
    import openvino as ov

    from kiln.targets import detect_host

    work = args.work
    _, eval_dir, cal_dir, evals, cals, reference, confident = zoo.efficientnet_data(work, args.calibration_per_source)

    data = ["--calibration", str(cal_dir), "--eval", str(eval_dir)]
    budget = ["--max-top1-disagreement", str(args.max_disagreement)]
    if args.tensorrt_only:
        _print_fp8(*_fp8_reports(work, budget, data))
        return 0
    print("exporting kiln artifacts ...", file=sys.stderr)
    reports = {
        "kiln openvino fp32": _export(work / "ov-fp32", "--target", "openvino", "--eval", str(eval_dir)),
        "kiln openvino int8": _export(work / "ov-int8", "--target", "openvino", "--precision", "int8", *data),
    }
    start = time.perf_counter()
    reports["kiln openvino auto"] = _export(work / "ov-auto", "--target", "openvino", "--precision", "auto", *budget,
                                            *data, "--no-cache")
    auto_wall = time.perf_counter() - start
    # kiln holds the tuning split to half the budget's slack by default; NNCF holds its validation set to the budget
    # itself: the same criterion as NNCF's is --tuning-margin 0
    reports["kiln openvino auto --tuning-margin 0"] = _export(
        work / "ov-auto-margin0", "--target", "openvino", "--precision", "auto", *budget, "--tuning-margin", "0",
        *data, "--no-cache")
    fp8, fp8_plain = _fp8_reports(work, budget, data)

    # the peer, on kiln's exported graph (the same ONNX the kiln rows start from) and kiln's split
    print("NNCF quantize_with_accuracy_control ...", file=sys.stderr)
    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "2"}
    source = Path(reports["kiln openvino fp32"]["_folder"]) / "openvino" / "model.xml"
    float_model = core.read_model(str(source))
    ranges, tuning = cals[0::2], cals[1::2]
    fp32_request = core.compile_model(float_model, "CPU", config).create_infer_request()
    tuning_top1 = [int(np.argmax(fp32_request.infer({0: x})[0])) for x in tuning]

    def validate(compiled, items) -> tuple[float, list[float]]:
        request = compiled.create_infer_request()
        per_item = [float(np.argmax(request.infer({0: x})[0]) == t) for x, t in items]
        return float(np.mean(per_item)), per_item

    start = time.perf_counter()
    peer = nncf.quantize_with_accuracy_control(
        float_model, nncf.Dataset(ranges), nncf.Dataset(list(zip(tuning, tuning_top1))), validate,
        max_drop=args.max_disagreement, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(ranges),
        fast_bias_correction=False)
    peer_wall = time.perf_counter() - start

    # accuracy on the evaluation images, and latency in interleaved rounds
    compiled = {name: core.compile_model(core.read_model(str(Path(r["_folder"]) / "openvino" / "model.xml")), "CPU",
                                         config) for name, r in reports.items()}
    compiled["NNCF quantize_with_accuracy_control"] = core.compile_model(peer, "CPU", config)
    rows = {}
    for name, c in compiled.items():
        request = c.create_infer_request()
        out = np.concatenate([request.infer({0: x})[0] for x in evals])
        agree = out.argmax(1) == reference.argmax(1)
        rows[name] = {"agree": agree.mean() * 100, "confident": agree[confident].mean() * 100, "times": []}
    requests = {name: c.create_infer_request() for name, c in compiled.items()}
    feed = {0: evals[0]}
    for request in requests.values():
        for _ in range(10):
            request.infer(feed)
    for _ in range(ROUNDS):
        for name, request in requests.items():
            for _ in range(PER_ROUND):
                t0 = time.perf_counter()
                request.infer(feed)
                rows[name]["times"].append((time.perf_counter() - t0) * 1000)
    int8_p50 = float(np.median(rows["kiln openvino int8"]["times"]))

    block = _mixed(reports["kiln openvino auto"])
    same = _mixed(reports["kiln openvino auto --tuning-margin 0"])
    print(f"\nEfficientNet-Lite0, OpenVINO CPU, budget top-1 disagreement <= {args.max_disagreement:.0%}; {detect_host().cpu_model}, "
          f"{len(evals)} evaluation images, {ROUNDS}x{PER_ROUND} runs interleaved\n")
    print("| variant | p50 ms | speed vs kiln int8 | top-1 agreement (confident) | search |")
    print("|---|---|---|---|---|")
    searches = {"kiln openvino auto": f"{block['search']['seconds']:.0f} s search, {block['search']['evaluations']} "
                                      f"graphs; {len(block['kept_fp32'])} of {block['units']} units float "
                                      f"({block['shipped']}); export {auto_wall:.0f} s",
                "kiln openvino auto --tuning-margin 0": f"{same['search']['seconds']:.0f} s search; "
                                                         f"{len(same['kept_fp32'])} of {same['units']} units float "
                                                         f"({same['shipped']})",
                "NNCF quantize_with_accuracy_control": f"{peer_wall:.0f} s (quantize + control)"}
    for name, row in rows.items():
        p50 = float(np.median(row["times"]))
        print(f"| {name} | {p50:.2f} | {int8_p50 / p50:.2f}x | {row['agree']:.1f} % ({row['confident']:.0f} %) | "
              f"{searches.get(name, '')} |")
    _print_fp8(fp8, fp8_plain)
    print(f"\nkiln auto kept: {', '.join(block['kept_fp32'])}; exit {reports['kiln openvino auto']['_exit']}")
    print(f"kiln auto --tuning-margin 0 kept: {', '.join(same['kept_fp32'])}; "
          f"exit {reports['kiln openvino auto --tuning-margin 0']['_exit']}")
    return 0


def _fp8_reports(work: Path, budget: list[str], data: list[str]) -> tuple[dict, dict]:
    """The TensorRT fp8 graph with --fallback and plain (scored on ONNX Runtime CPU: no GPU timing here)."""
    fp8 = _export(work / "trt-fp8", "--target", "tensorrt-sm89", "--precision", "fp8", "--fallback", *budget, *data,
                  "--no-cache")
    return fp8, _export(work / "trt-fp8-plain", "--target", "tensorrt-sm89", "--precision", "fp8", *data)


def _print_fp8(fp8: dict, fp8_plain: dict) -> None:
    for label, report in (("TensorRT fp8 graph, --fallback", fp8), ("TensorRT fp8 graph, plain", fp8_plain)):
        m = report["accuracy"]["outputs"]["output"]
        mixed = _mixed(report)
        extra = (f"{len(mixed['kept_fp32'])} of {mixed['units']} units float, search {mixed['search']['seconds']:.0f} s"
                 f"{' (cut short)' if mixed['search']['timed_out'] else ''}" if mixed else "")
        print(f"\n{label}: top-1 agreement {m['top1_agreement'] * 100:.1f} % (confident "
              f"{m['top1_agreement_confident'] * 100:.0f} %), exit {report['_exit']}; {extra}")


if __name__ == "__main__":
    raise SystemExit(main())
