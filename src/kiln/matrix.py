"""`kiln export MODEL --target a,b --precision x,y`: every combination built, measured and compared.

The source is loaded, exported and timed once; each cell then compiles, validates, measures and publishes
its own artifact into OUT/<target>-<precision>/. A cell that the target refuses, that fails, or that its
accuracy gate rejects is recorded with its one-line reason and the others go on. The fastest cell within
the accuracy budget is the recommendation. OUT/comparison.json (schema kiln.comparison/1), comparison.md
and report.html are written last, each atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln import __version__
from kiln.artifact import check_output_path, clean_leftovers, discard, missing_parents, staging_dir
from kiln.artifact.manifest import dumps
from kiln.config import ExportConfig
from kiln.errors import AccuracyGateError, KilnError, MissingDependencyError, UnsupportedTargetError, UsageError
from kiln.pipeline import build, prepare, rejected_path, resolve_plan
from kiln.progress import Progress
from kiln.report.mixed_precision import mixed_precision_block
from kiln.targets import detect_host

COMPARISON_SCHEMA = "kiln.comparison/1"
DEFAULT_BUDGET = {"min_cosine": 0.99, "max_top1_disagreement": 0.02}


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def cell_config(config: ExportConfig, target: str, precision: str) -> ExportConfig:
    """The config of one cell, validated like a command line of its own (an unknown precision is bad input)."""
    data = config.model_dump()
    data.update(target=target, precision=precision, out=config.out / f"{target}-{precision}")
    try:
        return ExportConfig.model_validate(data)
    except ValueError:
        from kiln.config import PRECISIONS

        raise UsageError(f"unknown precision '{precision}'", hint=f"use one of {', '.join(PRECISIONS)}") from None


def budget_of(config: ExportConfig) -> dict:
    b = config.budget
    given = b.min_cosine is not None or b.max_top1_disagreement is not None
    if not given:
        return {**DEFAULT_BUDGET, "given": False}
    return {"min_cosine": b.min_cosine, "max_top1_disagreement": b.max_top1_disagreement, "given": True}


def _accuracy(report: dict, primary: tuple, budget: dict) -> tuple[str | None, float | None]:
    """(metric, value) for the matrix: top-1 agreement for classifiers when the budget limits it, else the worst
    cosine of the primary outputs (a cosine budget on outputs that look like logits is judged by cosine)."""
    outputs = (report.get("accuracy") or {}).get("outputs", {})
    chosen = {n: m for n, m in outputs.items() if not primary or n in primary} or outputs
    logits = [m["top1_agreement"] for m in chosen.values() if m.get("class_logits") and "top1_agreement" in m]
    if logits and (budget.get("max_top1_disagreement") is not None or budget.get("min_cosine") is None):
        return "top1_agreement", min(logits)
    # a score's cosine is 1.0 whatever its error: no figure the budget can read, so such a cell is never recommended
    rows = [m for m in chosen.values() if "cosine_min" in m and not m.get("one_value_per_sample")]
    cosines = [m["cosine_min"] for m in rows]
    if any(c is None or c != c or m.get("non_finite_samples") for c, m in zip(cosines, rows)):
        return "cosine_min", None  # NaN/Inf outputs: no figure, and never within a budget
    return ("cosine_min", min(cosines)) if cosines else (None, None)


def _meets(metric: str | None, value: float | None, budget: dict) -> bool:
    if metric is not None and value is None:
        return False
    if metric == "top1_agreement" and budget.get("max_top1_disagreement") is not None:
        return 1.0 - value <= budget["max_top1_disagreement"]
    if metric == "cosine_min" and budget.get("min_cosine") is not None:
        return value >= budget["min_cosine"]
    return metric is not None


def cell_record(target: str, precision: str, out: Path, status: str, reason: str | None = None, exit_code: int = 0,
          report: dict | None = None, primary: tuple = (), budget: dict | None = None) -> dict:
    cell: dict[str, Any] = {"target": target, "precision": precision, "status": status, "reason": reason,
                            "exit_code": exit_code, "out": str(out), "report": None, "size_mib": None,
                            "accuracy_metric": None, "accuracy": None, "meets_budget": False, "p50_ms": None,
                            "p99_ms": None, "throughput_per_s": None, "speedup_vs_source": None,
                            "execution_precision": None, "cost_per_million": None, "recommended": False,
                            "mixed_precision": None}
    if report is not None:
        metric, value = _accuracy(report, primary, budget or {})
        lat = report.get("latency_ms") or {}
        where = out if status == "ok" else rejected_path(out)
        cell.update(report=f"{where.name}/report.json", size_mib=report["size"]["model_mib"], accuracy_metric=metric,
                    accuracy=value, meets_budget=status == "ok" and _meets(metric, value, budget or {}),
                    p50_ms=lat.get("p50"), p99_ms=lat.get("p99"), throughput_per_s=report.get("throughput_per_s"),
                    speedup_vs_source=report.get("speedup_vs_source"),
                    execution_precision=report.get("execution_precision"),
                    cost_per_million=(report.get("cost") or {}).get("artifact_per_million"))
        block, _ = mixed_precision_block(report.get("compile") or {})
        if block:
            units = (block.get("dynamic_search") or {}).get("units") if block["shipped"] == "dynamic-mixed" else None
            cell["mixed_precision"] = {"shipped": block["shipped"], "kept_fp32": len(block["kept_fp32"]),
                                       "units": units or block["units"]}
    return cell


def _recommend(cells: list[dict], budget: dict) -> dict | None:
    candidates = [c for c in cells if c["meets_budget"] and c["p50_ms"] is not None]
    if not candidates:
        return None
    best = min(candidates, key=lambda c: c["p50_ms"])
    best["recommended"] = True
    rule = (f"top-1 disagreement ≤ {budget['max_top1_disagreement']:.0%}" if best["accuracy_metric"] == "top1_agreement"
            else f"cosine ≥ {budget['min_cosine']}")
    source = "your gate" if budget["given"] else "the default budget"
    return {"target": best["target"], "precision": best["precision"],
            "reason": f"fastest p50 ({best['p50_ms']:.3g} ms) among the cells within {source} ({rule})"}


def resolve_cells(config: ExportConfig, targets: list[str], precisions: list[str], resolve, make_record) -> tuple:
    """Every target x precision cell's config resolved by `resolve(cell_config)`, before any work. Returns (the
    records, in order: a cell its target refuses recorded with its one-line reason, the others pending) and the
    cells to build: (config, what `resolve` returned, its record, seconds taken to resolve it)."""
    from kiln.pipeline import rejected_path
    from kiln.targets import find_target

    records, cells = [], []
    for target in [find_target(t).name for t in targets]:
        for precision in precisions:
            cfg = cell_config(config, target, precision)
            started = time.perf_counter()
            try:
                check_output_path(cfg.out)
                check_output_path(rejected_path(cfg.out))
                resolved = resolve(cfg)
            except (UnsupportedTargetError, MissingDependencyError, UsageError) as error:
                records.append(make_record(target, precision, cfg.out, "refused", error.one_line(), error.exit_code))
                continue
            records.append(make_record(target, precision, cfg.out, "pending"))
            cells.append((cfg, resolved, records[-1], time.perf_counter() - started))
    return records, cells


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run_matrix(config: ExportConfig, targets: list[str], precisions: list[str], *, module: Any = None,
               example_inputs: Any = None, progress: Progress | None = None, debug: bool = False,
               executor: Any = None) -> dict:
    progress = progress or Progress(enabled=False)
    started = time.perf_counter()
    host = detect_host()
    root = config.out
    if root.is_file():
        raise UsageError(f"output path {root} is a file", hint="give a folder path for --out")
    budget = budget_of(config)
    executor = executor or LocalExecutor()
    here = not executor.builds_elsewhere  # a farm's nodes check their own packages, and refuse what they lack
    records, resolved = resolve_cells(config, targets, precisions, lambda cfg: resolve_plan(cfg, host, here),
                                      cell_record)
    cells = [PendingCell(cfg, plan, backend, record) for cfg, (plan, backend), record, _ in resolved]
    ran = None
    created = missing_parents(root)
    root.mkdir(parents=True, exist_ok=True)
    work = root / f".kiln-matrix-work-{os.getpid()}"
    prepared = None
    try:
        if cells:
            prepared = prepare(cells[0].config, [c.plan for c in cells], work, module, example_inputs, progress)
            ran = executor.run(cells, prepared, progress, budget, debug)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if not any(root.iterdir()):  # nothing built before the failure: leave no empty folder behind
            discard(root, created)
        raise
    shutil.rmtree(work, ignore_errors=True)  # the comparison is written even when every cell was refused
    comparison = {
        "schema_version": COMPARISON_SCHEMA, "kiln_version": __version__,
        "model": {"name": (Path(prepared.source_info.location).name or prepared.source_info.location) if prepared
                  else config.source,
                  "source_kind": prepared.source_info.kind if prepared else None},
        "source_bench": prepared.source_bench if prepared else None,
        "budget": budget, "price_per_hour": config.report.price_per_hour,
        "cells": records, "recommendation": _recommend(records, budget),
        "host": host.fingerprint(), "seconds": round(time.perf_counter() - started, 2),
        "executor": ran or {"kind": executor.name},
    }
    if prepared is not None and prepared.source_bench and config.report.price_per_hour:
        from kiln.bench.analysis import cost_per_million

        comparison["source_cost_per_million"] = cost_per_million(config.report.price_per_hour,
                                                                 prepared.source_bench["throughput_per_s"])
    write_comparison(root, comparison)
    return comparison


@dataclass
class PendingCell:
    """A cell resolved on the driver, to be built by an executor, which updates `record` in place."""

    config: ExportConfig
    plan: Any
    backend: Any
    record: dict


class LocalExecutor:
    """Every cell on this machine, one after the other (kiln.farm.ray_executor.RayExecutor spreads them over a
    cluster: the same `run`)."""

    name = "local"
    builds_elsewhere = False

    def run(self, cells: list[PendingCell], prepared, progress, budget: dict, debug: bool) -> dict:
        host = detect_host()
        for index, cell in enumerate(cells, 1):
            progress.say(f"cell {index}/{len(cells)}: {cell.plan.target} {cell.config.precision}")
            cell.record.update(_run_cell(cell, host, prepared, progress, budget, debug))
        return {"kind": self.name}


def _run_cell(cell: PendingCell, host, prepared, progress, budget, debug) -> dict:
    cfg, plan = cell.config, cell.plan
    primary = cfg.budget.outputs or prepared.primary  # the outputs the gate reads (--gate-output), as the cell's gate

    def record(status: str, reason: str | None, code: int, report: dict | None) -> dict:
        return cell_record(plan.target, cfg.precision, cfg.out, status, reason, code, report=report, primary=primary,
                           budget=budget)

    return guarded_cell(cfg.out, lambda staged: build(cfg, plan, cell.backend, host, staged, prepared, progress,
                                                      time.perf_counter()).report, record, debug)


def guarded_cell(out: Path, make, record, debug: bool) -> dict:
    """One cell built into a staging folder beside `out` by `make(staged)` (which publishes it and returns its report),
    recorded by `record(status, reason, exit_code, report)`: ok; rejected by its gate (the report kept with the
    rejected artifact); failed with its one-line error. A failed or interrupted cell leaves nothing half-written."""
    clean_leftovers(out)
    created = missing_parents(out)
    staged = staging_dir(out)
    try:
        return record("ok", None, 0, make(staged))
    except AccuracyGateError as error:
        return record("rejected", error.one_line(), error.exit_code, error.report)
    except KilnError as error:
        discard(staged, created)
        return record("failed", error.one_line(), error.exit_code, None)
    except Exception as error:  # a bug in one cell must not lose the others' results; --debug re-raises it
        discard(staged, created)
        if debug:
            raise
        first = str(error).splitlines()[0][:200] if str(error) else ""
        return record("failed", f"internal error {type(error).__name__}: {first} (a kiln bug: rerun with --debug and "
                                "report it)", 1, None)
    except BaseException:  # Ctrl-C: nothing half-written stays where an artifact is expected
        discard(staged, created)
        raise


def write_comparison(root: Path, comparison: dict) -> None:
    from kiln.report.comparison import render_comparison_markdown
    from kiln.report.html import render_comparison_html

    write_atomic(root / "comparison.json", dumps(comparison) + "\n")
    write_atomic(root / "comparison.md", render_comparison_markdown(comparison))
    reports = {cell["report"]: json.loads((root / cell["report"]).read_text(encoding="utf-8"))
               for cell in comparison["cells"] if cell["report"] and (root / cell["report"]).is_file()}
    write_atomic(root / "report.html", render_comparison_html(comparison, reports))


def exit_code(comparison: dict) -> int:
    """0 with a recommendation, or with cells within the accuracy budget that could not be timed here (a TensorRT
    cell without a GPU); 4 if cells were built but none is within the accuracy budget; 5 if none was built."""
    if comparison["recommendation"] or any(c["meets_budget"] for c in comparison["cells"]):
        return 0
    built = [c for c in comparison["cells"] if c["status"] in ("ok", "rejected")]
    return 4 if built else 5
