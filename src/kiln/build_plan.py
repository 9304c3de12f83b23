"""`kiln build PLAN.yaml|PLAN.json --out DIR`: many models, each a comparison matrix, one index.

A plan lists models with their data, targets, precisions and budget. Each model's matrix is written to
DIR/<name>/ exactly as `kiln export --target ... --precision ...` writes it (comparison.json, .md, report.html and
one folder per cell), locally or on a cluster (--cluster); a model that cannot be built (a missing file, a source
kiln cannot read) is recorded with its one-line error and the others go on. DIR/index.json (schema
kiln.build-index/1), index.md and report.html list every model and its cells last, each written atomically.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections import Counter
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kiln import __version__
from kiln.errors import KilnError, UsageError

INDEX_SCHEMA = "kiln.build-index/1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class PlannedModel(BaseModel):
    """One model of a plan; paths relative to the plan's folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    source: str
    targets: list[str] = Field(min_length=1)
    precisions: list[str] = Field(min_length=1)
    eval: Path | None = None
    eval_limit: int | None = Field(default=None, ge=1)
    calibration: Path | None = None
    calibration_limit: int | None = Field(default=None, ge=1)
    synthetic_data: bool = False
    min_cosine: float | None = Field(default=None, ge=-1.0, le=1.0)
    max_top1_disagreement: float | None = Field(default=None, ge=0.0, le=1.0)
    max_perplexity_increase: float | None = Field(default=None, ge=0.0)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError("a model's name becomes its folder: letters, digits, '.', '_' and '-' only")
        return name


class BuildPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[PlannedModel] = Field(min_length=1)

    @field_validator("models")
    @classmethod
    def _unique(cls, models: list[PlannedModel]) -> list[PlannedModel]:
        twice = sorted(n for n, c in Counter(m.name for m in models).items() if c > 1)
        if twice:
            raise ValueError(f"model names must differ (each is a folder): {', '.join(twice)}")
        return models


def load_plan(path: Path) -> BuildPlan:
    """The plan at `path` (.json, or .yaml/.yml with PyYAML), relative paths resolved against its folder, or one
    UsageError line."""
    if not path.is_file():
        raise UsageError(f"plan {path} does not exist", hint="give a .yaml or .json build plan (see README)")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            from kiln._deps import require

            data = require("yaml", why="a .yaml build plan (or write it as .json)").safe_load(text)
        else:
            data = json.loads(text)
    except ValueError as error:  # JSONDecodeError; yaml.YAMLError is reported below
        raise UsageError(f"plan {path.name} is not valid JSON ({error})", hint="fix the file") from None
    except Exception as error:
        if type(error).__module__.startswith("yaml"):
            raise UsageError(f"plan {path.name} is not valid YAML ({str(error).splitlines()[0]})",
                             hint="fix the file") from None
        raise
    try:
        plan = BuildPlan.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "the plan"
        raise UsageError(f"plan {path.name}: {where}: {first['msg']}",
                         hint="a plan is {models: [{name, source, targets, precisions, ...}]}") from None
    base = path.parent
    resolved = []
    for model in plan.models:
        update = {key: base / value for key, value in (("eval", model.eval), ("calibration", model.calibration))
                  if value is not None and not value.is_absolute()}
        source = Path(model.source)
        if not source.is_absolute() and (base / source).exists():
            update["source"] = str(base / source)
        resolved.append(model.model_copy(update=update))
    return BuildPlan(models=resolved)


def model_config(model: PlannedModel, out: Path, base: dict):
    """The ExportConfig of one planned model (its first target and precision; the matrix makes the others)."""
    from kiln.config import AccuracyBudget, DataSpec, ExportConfig, LanguageModelSettings

    data = {**base, "source": model.source, "out": out / model.name, "target": model.targets[0],
            "precision": model.precisions[0], "synthetic_data": model.synthetic_data,
            "evaluation": DataSpec(path=model.eval, limit=model.eval_limit) if model.eval else None,
            "calibration": DataSpec(path=model.calibration, limit=model.calibration_limit) if model.calibration
            else None,
            "budget": AccuracyBudget(min_cosine=model.min_cosine, max_top1_disagreement=model.max_top1_disagreement)}
    if model.max_perplexity_increase is not None:
        data["llm"] = LanguageModelSettings(max_perplexity_increase=model.max_perplexity_increase)
    try:
        return ExportConfig.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        raise UsageError(f"model {model.name}: {'.'.join(str(p) for p in first.get('loc', ()))}: {first['msg']}",
                         hint="fix the plan") from None


def run_model_matrix(config, targets: list[str], precisions: list[str], progress, debug: bool, executor=None) -> dict:
    """A classic model's matrix, or a language model's (those run here only)."""
    from kiln.llm.source import language_model

    if config.llm.draft is not None:
        raise UsageError("--draft ships a draft inside one language-model artifact; a matrix builds many",
                         hint="export the chosen target and precision alone with --draft")
    decoder = language_model(config.source, config.task, config.trust_remote_code)
    if decoder is not None:
        if executor is not None:
            raise UsageError("--cluster builds the cells of a classic model's matrix; language-model matrices run "
                             "here", hint="drop --cluster for a language model")
        from kiln.llm.matrix import run_llm_matrix

        return run_llm_matrix(config, *decoder, targets, precisions, progress=progress, debug=debug)
    from kiln.matrix import run_matrix

    return run_matrix(config, targets, precisions, progress=progress, debug=debug, executor=executor)


def run_plan(plan: BuildPlan, out: Path, base: dict, progress, debug: bool = False, executor=None) -> dict:
    """Every model's matrix under `out`, then the index; returns the index."""
    from kiln.artifact.manifest import dumps
    from kiln.matrix import exit_code, write_atomic
    from kiln.targets import detect_host

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for number, model in enumerate(plan.models, 1):
        progress.say(f"model {number}/{len(plan.models)}: {model.name} ({len(model.targets)} targets x "
                     f"{len(model.precisions)} precisions)")
        entry = {"name": model.name, "source": model.source, "status": "built", "reason": None, "exit_code": 0,
                 "comparison": None, "cells": {}, "recommendation": None}
        try:
            comparison = run_model_matrix(model_config(model, out, base), model.targets, model.precisions, progress,
                                          debug, executor)
            entry.update(exit_code=exit_code(comparison), comparison=f"{model.name}/comparison.json",
                         cells=dict(Counter(c["status"] for c in comparison["cells"])),
                         recommendation=comparison["recommendation"])
        except KilnError as error:
            if debug:
                raise
            entry.update(status="failed", reason=error.one_line(), exit_code=error.exit_code)
        entries.append(entry)
    index = {"schema_version": INDEX_SCHEMA, "kiln_version": __version__, "models": entries,
             "executor": {"kind": getattr(executor, "name", "local")}, "host": detect_host().fingerprint(),
             "seconds": round(time.perf_counter() - started, 2)}
    write_atomic(out / "index.json", dumps(index) + "\n")
    write_atomic(out / "index.md", render_index_markdown(index))
    write_atomic(out / "report.html", render_index_html(index))
    return index


def index_exit_code(index: dict) -> int:
    """The highest of the models' exit codes: 0 only when every model has a recommended cell."""
    return max((m["exit_code"] for m in index["models"]), default=0)


def _rows(index: dict) -> list[list[str]]:
    rows = []
    for m in index["models"]:
        rec = m["recommendation"]
        cells = ", ".join(f"{status} {count}" for status, count in sorted(m["cells"].items())) or "–"
        rows.append([m["name"], m["status"], str(m["exit_code"]), cells,
                     f"{rec['target']} {rec['precision']}" if rec else "–", m["reason"] or ""])
    return rows


HEADERS = ["model", "status", "exit", "cells", "recommended", "why not built"]


def render_index_markdown(index: dict) -> str:
    lines = [f"# kiln build: {len(index['models'])} models", "",
             f"kiln {index['kiln_version']}, {index['executor']['kind']}, {index['seconds']:.0f} s; each model's "
             "table is in its folder's comparison.md.", "", "| " + " | ".join(HEADERS) + " |",
             "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in _rows(index)]
    return "\n".join(lines) + "\n"


def render_index_html(index: dict) -> str:
    body = []
    for row, model in zip(_rows(index), index["models"]):
        name = html.escape(row[0])
        link = f'<a href="{html.escape(model["name"])}/report.html">{name}</a>' if model["comparison"] else name
        body.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in [link, *map(html.escape, row[1:])]) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in HEADERS)
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>kiln build</title><style>body{font-family:"
            "sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
            "text-align:left}</style></head><body>"
            f"<h1>kiln build: {len(index['models'])} models</h1><table><tr>{head}</tr>{''.join(body)}</table>"
            "</body></html>\n")
