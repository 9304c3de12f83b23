"""The comparison matrix for a language model: `kiln export FOLDER --target llama.cpp,onnxruntime,openvino
--precision q4_k_m,int4-weights --max-perplexity-increase 0.05`.

The torch model is loaded once and is the one reference of every cell: its greedy continuations, perplexity and
speed are measured once. Each backend's export (llama.cpp's float master) is made once, and the importance matrix
once for every k-quant. Each cell then compiles, validates, measures and publishes its own artifact into
OUT/<target>-<precision>/; a cell its target cannot build (a GGUF type on ONNX Runtime, an architecture
llama.cpp does not convert) is recorded as refused with its one-line reason. The recommendation is the cell that
decodes fastest within the budget: perplexity increase over the torch model (default +5 %), greedy agreement and
next-token logits cosine where given. OUT/comparison.json (schema kiln.llm-comparison/1), comparison.md and
report.html are written last, each atomically.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from kiln import __version__
from kiln.artifact import discard, missing_parents
from kiln.config import ExportConfig
from kiln.errors import UsageError
from kiln.llm.loaded import load
from kiln.llm.pipeline import Exports, build_llm, resolve_llm, uses_calibration_windows
from kiln.progress import Progress
from kiln.targets import detect_host

LLM_COMPARISON_SCHEMA = "kiln.llm-comparison/1"
# The article's rule of thumb puts Q4_K_M at 2-3 % quality loss; measured on SmolLM2-135M it is +3.9 % with an
# importance matrix and +6.2 % without (docs/benchmarks.md): 5 % keeps the good int4 recipes and drops the rest.
DEFAULT_MAX_PERPLEXITY_INCREASE = 0.05
TIE = 0.05  # decode speeds closer than this are a tie: the lower perplexity wins
RANKING_ROUNDS = 5


def llm_budget(config: ExportConfig) -> dict:
    given = {"max_perplexity_increase": config.llm.max_perplexity_increase,
             "min_agreement": config.llm.min_agreement, "min_cosine": config.budget.min_cosine}
    if all(v is None for v in given.values()):
        return {**given, "max_perplexity_increase": DEFAULT_MAX_PERPLEXITY_INCREASE, "given": False}
    return {**given, "given": True}


def _meets(cell: dict, budget: dict) -> bool:
    if cell["status"] != "ok" or cell["perplexity_increase"] is None:
        return False
    limits = ((budget["max_perplexity_increase"], cell["perplexity_increase"], lambda v, lim: v <= lim),
              (budget["min_agreement"], cell["greedy_agreement"], lambda v, lim: v >= lim),
              (budget["min_cosine"], cell["logits_cosine_min"], lambda v, lim: v >= lim))
    return all(limit is None or (value is not None and ok(value, limit)) for limit, value, ok in limits)


def _cell(target: str, precision: str, out: Path, status: str, reason: str | None = None, exit_code: int = 0,
          report: dict | None = None, budget: dict | None = None) -> dict:
    cell: dict[str, Any] = {"target": target, "precision": precision, "status": status, "reason": reason,
                            "exit_code": exit_code, "out": str(out), "report": None, "weights": None, "size_mib": None,
                            "perplexity": None, "perplexity_increase": None, "next_token_kl": None,
                            "greedy_agreement": None, "logits_cosine_min": None, "decode_tokens_per_s": None,
                            "ttft_ms": None, "token_p50_ms": None, "token_p99_ms": None, "resident_mib": None,
                            "decode_speedup_vs_source": None, "ranked_tokens_per_s": None, "meets_budget": False,
                            "recommended": False}
    if report is None:
        return cell
    from kiln.pipeline import rejected_path

    found, bench = report["fidelity"], report.get("bench") or {}
    quant = (report.get("plan") or {}).get("quantization") or {}
    where = out if status == "ok" else rejected_path(out)
    cell.update(report=f"{where.name}/report.json", weights=quant.get("weights") or "float (not quantized)",
                size_mib=report["size"]["model_mib"], perplexity=found["perplexity"],
                perplexity_increase=found["perplexity"] / found["perplexity_source"] - 1,
                next_token_kl=found["next_token_kl_mean"], greedy_agreement=found["greedy_agreement"],
                logits_cosine_min=found["logits_cosine_min"], decode_tokens_per_s=bench.get("decode_tokens_per_s"),
                ttft_ms=bench.get("ttft_ms"), token_p50_ms=(bench.get("token_latency_ms") or {}).get("p50"),
                token_p99_ms=(bench.get("token_latency_ms") or {}).get("p99"), resident_mib=bench.get("resident_mib"),
                decode_speedup_vs_source=report.get("decode_speedup_vs_source"))
    if not math.isfinite(cell["perplexity"]):  # NaN/Inf logits: no figure, and never within a budget
        cell.update(perplexity=None, perplexity_increase=None)
    cell["meets_budget"] = _meets(cell, budget or {})
    return cell


def budget_rules(budget: dict) -> str:
    rules = []
    if budget["max_perplexity_increase"] is not None:
        rules.append(f"perplexity increase ≤ {budget['max_perplexity_increase']:+.1%}")
    if budget["min_agreement"] is not None:
        rules.append(f"greedy agreement ≥ {budget['min_agreement']:.0%}")
    if budget["min_cosine"] is not None:
        rules.append(f"logits cosine ≥ {budget['min_cosine']}")
    return ", ".join(rules)


def _speed(cell: dict) -> float | None:
    """The figure cells are ranked by: the interleaved re-measurement where there was one, else the cell's own."""
    return cell["ranked_tokens_per_s"] or cell["decode_tokens_per_s"]


def _recommend(cells: list[dict], budget: dict) -> dict | None:
    """The fastest decode within the budget. Cells within TIE of the fastest are a tie on this machine (measured:
    the same artifact's decode moves 10-40 % between runs on a shared VM), broken by the lower perplexity."""
    candidates = sorted((c for c in cells if c["meets_budget"] and _speed(c)), key=lambda c: -_speed(c))
    untimed = [c for c in cells if c["meets_budget"] and not _speed(c)]
    if not candidates and untimed:  # --no-bench: nothing to rank by speed, so the most accurate
        best = min(untimed, key=lambda c: c["perplexity_increase"])
        best["recommended"] = True
        return {"target": best["target"], "precision": best["precision"], "runner_up": None,
                "reason": f"the lowest perplexity ({best['perplexity_increase']:+.1%} of the torch model's) within "
                          f"{'your' if budget['given'] else 'the default'} budget ({budget_rules(budget)}); decode "
                          "speed was not measured (--no-bench)"}
    if not candidates:
        return None
    tied = [c for c in candidates if _speed(c) >= (1 - TIE) * _speed(candidates[0])]
    best = min(tied, key=lambda c: c["perplexity_increase"])
    best["recommended"] = True
    source = "your budget" if budget["given"] else "the default budget"
    how = " interleaved" if best["ranked_tokens_per_s"] else ""
    reason = (f"fastest{how} decode ({_speed(best):.1f} tokens/s) among the cells within {source} "
              f"({budget_rules(budget)}): perplexity {best['perplexity_increase']:+.1%} of the torch model's")
    if best is not candidates[0]:
        reason = (f"within {TIE:.0%} of the fastest decode ({_speed(best):.1f} against {_speed(candidates[0]):.1f} "
                  f"tokens/s, {candidates[0]['target']} {candidates[0]['precision']}: a tie on this machine) and the "
                  f"lower perplexity ({best['perplexity_increase']:+.1%} of the torch model's) within {source} "
                  f"({budget_rules(budget)})")
    others = [c for c in candidates if c is not best]
    runner_up = others[0] if others else None
    if runner_up and best is candidates[0]:
        reason += f"; {_speed(best) / _speed(runner_up):.2f}x the next, {runner_up['target']} {runner_up['precision']}"
    return {"target": best["target"], "precision": best["precision"], "reason": reason,
            "runner_up": {"target": runner_up["target"], "precision": runner_up["precision"],
                          "decode_ratio": _speed(best) / _speed(runner_up)} if runner_up else None}


def rank_interleaved(cells: list[dict], prompt, new_tokens: int, rounds: int) -> dict | None:
    """The published cells within the budget decoded again, round-robin (A, B, C, A, B, C, ...) in this process:
    each cell's own measurement ran at another moment, and on a shared machine the moment moves decode speed more
    than the difference between two good artifacts. Sets each cell's ranked_tokens_per_s (the median)."""
    import json
    import statistics

    from kiln.bench_artifact import language_model_decoder
    from kiln.llm.runners import generate

    finalists = [c for c in cells if c["meets_budget"] and c["decode_tokens_per_s"]]
    if len(finalists) < 2:
        return None
    decoders = []
    for cell in finalists:
        folder = Path(cell["out"])
        runtime = json.loads((folder / "runtime.json").read_text(encoding="utf-8"))
        decoder = language_model_decoder(folder / runtime["model"], runtime["backend"], runtime["settings"],
                                         runtime["language_model"])()
        generate(decoder, prompt, min(new_tokens, 8))  # warm-up
        decoders.append(decoder)
    speeds: list[list[float]] = [[] for _ in finalists]
    for _ in range(rounds):
        for index, decoder in enumerate(decoders):
            speeds[index].append(generate(decoder, prompt, new_tokens).tokens_per_s)
    decoders.clear()
    for cell, measured in zip(finalists, speeds):
        cell["ranked_tokens_per_s"] = statistics.median(measured)
    return {"method": "interleaved", "rounds": rounds, "new_tokens": new_tokens,
            "cells": [f"{c['target']}-{c['precision']}" for c in finalists]}


def run_llm_matrix(config: ExportConfig, folder: Path, cfg: dict, targets: list[str], precisions: list[str], *,
                   progress: Progress | None = None, debug: bool = False) -> dict:
    from kiln.matrix import resolve_cells, write_atomic

    progress = progress or Progress(enabled=False)
    started = time.perf_counter()
    host = detect_host()
    root = config.out
    if root.is_file():
        raise UsageError(f"output path {root} is a file", hint="give a folder path for --out")
    budget = llm_budget(config)
    if config.calibration is not None:  # bad input for the whole command, not a refusal of every cell
        from kiln.calibration.text import check_text_file

        check_text_file(config.calibration.path, "--calibration", "calibration for a language model")
    records, cells = resolve_cells(config, targets, precisions,
                                   lambda cell: resolve_llm(cell, host, folder, cfg, matrix_cell=True), _cell)
    created = missing_parents(root)
    root.mkdir(parents=True, exist_ok=True)
    work = root / f".kiln-matrix-work-{os.getpid()}"
    loaded = None
    try:
        if cells:
            load_started = time.perf_counter()
            loaded = load(config, folder, cfg, work, cells[0][1].threads,
                          any(uses_calibration_windows(cell[1]) for cell in cells), progress)
            shared = (dict(progress.timings), time.perf_counter() - load_started)
            exports = Exports(work, shared=True)
        for index, (cfg_cell, plan, record, resolved) in enumerate(cells, 1):
            progress.say(f"cell {index}/{len(cells)}: {plan.target} {cfg_cell.precision}")
            timings, load_seconds = shared
            record.update(_run_cell(cfg_cell, plan, host, loaded, exports, progress, budget, debug,
                                    ({"resolve": resolved, **timings}, load_seconds + resolved)))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if not any(root.iterdir()):  # nothing built before the failure: leave no empty folder behind
            discard(root, created)
        raise
    shutil.rmtree(work, ignore_errors=True)  # the comparison is written even when every cell was refused
    ranking = None
    if loaded is not None and config.measure:
        loaded.release_model()  # the torch model's figures are kept; its memory goes before the artifacts load
        with progress.stage("rank") as st:
            try:
                ranking = rank_interleaved(records, loaded.speed_prompt, config.llm.new_tokens,
                                           max(RANKING_ROUNDS, config.llm.rounds))
            except Exception as error:  # noqa: BLE001 - the cells' own figures still rank them; the table is kept
                if debug:
                    raise
                for cell in records:
                    cell["ranked_tokens_per_s"] = None
                st.result = f"not re-measured ({type(error).__name__}: {str(error)[:120]}): each cell's own figure ranks"
            else:
                st.result = ("the cells within the budget decoded again, interleaved: " + ", ".join(
                    f"{c['target']} {c['precision']} {c['ranked_tokens_per_s']:.1f}" for c in records
                    if c["ranked_tokens_per_s"]) + " tokens/s") if ranking else "fewer than two cells within the budget"
    comparison = {
        "schema_version": LLM_COMPARISON_SCHEMA, "kiln_version": __version__,
        "model": {"name": loaded.origin["name"] if loaded else Path(config.source).name,
                  "source_kind": loaded.origin["kind"] if loaded else None,
                  "model_type": loaded.spec.model_type if loaded else cfg.get("model_type"),
                  "parameters": loaded.spec.parameters if loaded else None},
        "source": loaded.measured() if loaded else None, "budget": budget, "cells": records, "ranking": ranking,
        "recommendation": _recommend(records, budget),
        "host": host.fingerprint(), "seconds": round(time.perf_counter() - started, 2),
    }
    from kiln.artifact.manifest import dumps
    from kiln.report.llm_comparison import render_llm_comparison_html, render_llm_comparison_markdown

    write_atomic(root / "comparison.json", dumps(comparison) + "\n")
    write_atomic(root / "comparison.md", render_llm_comparison_markdown(comparison))
    write_atomic(root / "report.html", render_llm_comparison_html(comparison))
    return comparison


def _run_cell(cfg: ExportConfig, plan, host, loaded, exports, progress, budget, debug, shared) -> dict:
    """One cell's build into its own OUT; `shared` (the resolve and load stages' timings and seconds) counts in its
    report."""
    from kiln.matrix import guarded_cell

    timings, load_seconds = shared
    progress.timings = dict(timings)

    def record(status: str, reason: str | None, code: int, report: dict | None) -> dict:
        return _cell(plan.target, cfg.precision, cfg.out, status, reason, code, report=report, budget=budget)

    return guarded_cell(cfg.out, lambda staged: build_llm(cfg, plan, host, loaded, exports, staged, progress,
                                                          time.perf_counter() - load_seconds).report, record, debug)
