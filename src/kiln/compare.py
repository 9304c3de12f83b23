"""`kiln compare NEW --baseline OLD`: the regression gate of a CI pipeline.

Latency is compared on p50, with the noise of both measurements taken into account: the allowed slowdown
is the threshold plus twice the combined standard error of the two medians (about 95 %). Measurements
from different hosts are not compared (the report says so): CI should compare builds measured on the
same runner, or re-measure the baseline artifact there (`kiln bench`). Accuracy is compared on the worst
cosine and the top-1 agreement of every output both reports have, size on the model files.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from kiln.errors import UsageError

COMPARE_SCHEMA = "kiln.compare/1"
REPORT_SCHEMA = "kiln.report/1"


# A slowdown smaller than this in absolute p50 is not a regression, whatever its share: on a model that runs in
# microseconds the same artifact re-measured interleaved moved +57 % (a few microseconds) against an allowed +57 %.
MIN_SLOWDOWN_MS = 0.02


@dataclass(frozen=True)
class Thresholds:
    max_slowdown: float = 0.10  # fraction of the baseline p50, beyond the noise
    max_cosine_drop: float = 0.002
    max_top1_drop: float = 0.01
    max_size_growth: float = 0.05


def load_report_file(path: Path) -> dict:
    """A kiln export report (report.json, or an artifact folder holding one), checked enough to compare."""
    file = path / "report.json" if path.is_dir() else path
    if not file.is_file():
        raise UsageError(f"{path} is not a report.json or an artifact folder holding one",
                         hint="give the report.json that `kiln export` wrote (or `kiln export --json` printed)")
    from kiln.schemas import read_document

    def built(report: dict) -> None:
        if report.get("status") not in ("ok", "rejected"):
            raise UsageError(f"{file} is a report of a failed export (status '{str(report.get('status'))[:20]}')",
                             hint="compare reports of exports that built an artifact")

    return read_document(file.read_bytes(), str(file), "report", REPORT_SCHEMA, reader="kiln compare reads",
                         damaged="give the report.json kiln export wrote, unedited",
                         other_version="give a report.json written by kiln export", precheck=built)


def _num(value) -> float | None:
    """A finite float, or None: reports are read defensively, whatever the schema allowed through."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _median_error(report: dict) -> float | None:
    """Relative standard error of the p50: 1.2533 * std / sqrt(runs) / p50."""
    latency, bench = report.get("latency_ms") or {}, report.get("bench") or {}
    p50, std, runs = _num(latency.get("p50")), _num(latency.get("std")), _num(bench.get("runs"))
    if p50 is None or std is None or runs is None or p50 <= 0 or runs < 2:
        return None
    return 1.2533 * std / math.sqrt(runs) / p50


def _latency(new: dict, old: dict, t: Thresholds) -> dict:
    row = {"check": "latency p50", "baseline": None, "new": None, "change": None, "allowed": None, "status": "skipped"}
    if not (isinstance(new.get("latency_ms"), dict) and isinstance(old.get("latency_ms"), dict)):
        return {**row, "note": "not measured in one of the reports"}
    row["baseline"], row["new"] = _num(old["latency_ms"].get("p50")), _num(new["latency_ms"].get("p50"))
    if new.get("host") != old.get("host"):
        return {**row, "note": "measured on different hosts: not comparable (measure both on the same runner)"}
    if row["new"] is None or not row["baseline"] or row["baseline"] <= 0:
        return {**row, "note": "p50 missing or zero"}
    errors = [e for e in (_median_error(new), _median_error(old)) if e is not None]
    noise = 2.0 * math.sqrt(sum(e * e for e in errors)) if len(errors) == 2 else 0.0
    change = row["new"] / row["baseline"] - 1.0
    allowed = t.max_slowdown + noise
    status = "regression" if change > allowed else ("improved" if change < -noise else "ok")
    if status == "regression" and row["new"] - row["baseline"] < MIN_SLOWDOWN_MS:
        return {**row, "change": change, "allowed": allowed, "noise": noise, "status": "ok",
                "note": f"slower by less than {MIN_SLOWDOWN_MS * 1000:.0f} µs: scheduling noise, not a regression"}
    return {**row, "change": change, "allowed": allowed, "noise": noise, "status": status}


def _accuracy(new: dict, old: dict, t: Thresholds) -> list[dict]:
    rows = []
    new_out, old_out = new["accuracy"].get("outputs") or {}, old["accuracy"].get("outputs") or {}
    for name in sorted(set(new_out) & set(old_out)):
        for metric, limit in (("cosine_min", t.max_cosine_drop), ("top1_agreement", t.max_top1_drop)):
            a, b = _num((old_out[name] or {}).get(metric)), _num((new_out[name] or {}).get(metric))
            if a is None or b is None:
                continue
            drop = a - b
            rows.append({"check": f"{name} {metric}", "baseline": a, "new": b, "change": -drop, "allowed": -limit,
                         "status": "regression" if drop > limit else ("improved" if drop < 0 else "ok")})
    missing = sorted(set(old_out) - set(new_out))
    for name in missing:
        rows.append({"check": f"{name} output", "baseline": "present", "new": "missing", "change": None,
                     "allowed": None, "status": "regression"})
    return rows


def _size(new: dict, old: dict, t: Thresholds) -> dict:
    a, b = _num(old["size"].get("model_mib")), _num(new["size"].get("model_mib"))
    if not a or b is None:
        return {"check": "model size MiB", "baseline": a, "new": b, "change": None, "allowed": None, "status": "skipped"}
    change = b / a - 1.0
    return {"check": "model size MiB", "baseline": a, "new": b, "change": change, "allowed": t.max_size_growth,
            "status": "regression" if change > t.max_size_growth else ("improved" if change < 0 else "ok")}


def remeasure(new_dir: Path, old_dir: Path, rounds: int = 2) -> tuple[dict, dict]:
    """Both artifacts measured again here, interleaved (new, old, new, old, ...) with their recorded settings:
    a latency comparison that does not depend on where and when the baseline was measured.

    Returns the reports' latency blocks to use instead: p50 the median of the rounds, std widened by the
    spread between rounds (the machine's drift, which one round's std does not see)."""
    from kiln.bench_artifact import bench_artifact
    from kiln.config import BenchSettings

    for folder in (new_dir, old_dir):
        if not folder.is_dir():
            raise UsageError(f"--remeasure needs artifact folders, and {folder} is not one",
                             hint="give the folders (or unpack the bundles with kiln verify --extract)")
    settings = BenchSettings(min_runs=50, min_seconds=1.0, throughput_seconds=0.0)
    runs: dict[Path, list[dict]] = {new_dir: [], old_dir: []}
    for _ in range(rounds):
        for folder in (new_dir, old_dir):
            runs[folder].append(bench_artifact(folder, settings))
    out = []
    for folder in (new_dir, old_dir):
        p50s = [r["latency_ms"]["p50"] for r in runs[folder]]
        count = sum(r["runs"] for r in runs[folder])
        spread = (max(p50s) - min(p50s)) / 2.0
        within = max(r["latency_ms"]["std"] for r in runs[folder])
        std = math.sqrt(within ** 2 + spread ** 2 * count)  # so that std/sqrt(runs) is at least the drift
        out.append({"latency_ms": {"p50": float(sorted(p50s)[len(p50s) // 2]), "std": std},
                    "runs": count, "rounds": p50s})
    return out[0], out[1]


def compare_reports(new: dict, old: dict, thresholds: Thresholds, measured: tuple[dict, dict] | None = None) -> dict:
    """`measured`: (new, old) latency from `remeasure`, used instead of the reports' own (and the hosts agree)."""
    if measured is not None:
        host = {"remeasured": True}
        new = {**new, "latency_ms": measured[0]["latency_ms"], "bench": {"runs": measured[0]["runs"]}, "host": host}
        old = {**old, "latency_ms": measured[1]["latency_ms"], "bench": {"runs": measured[1]["runs"]}, "host": host}
    checks = [_latency(new, old, thresholds), *_accuracy(new, old, thresholds), _size(new, old, thresholds)]
    notes = []
    if (new["target"].get("name"), new.get("precision")) != (old["target"].get("name"), old.get("precision")):
        notes.append(f"different builds: {old['target'].get('name')} {old.get('precision')} -> "
                     f"{new['target'].get('name')} {new.get('precision')}")
    if new.get("status") == "rejected":
        notes.append("the new artifact failed its own accuracy gate")
    if measured is not None:
        checks[0]["note"] = (f"both re-measured here, interleaved: new {measured[0]['rounds']}, "
                             f"baseline {measured[1]['rounds']} ms")
    regressions = [f"{c['check']} {_fmt_change(c)}" for c in checks if c["status"] == "regression"]
    return {"schema_version": COMPARE_SCHEMA, "thresholds": asdict(thresholds), "checks": checks,
            "regressions": regressions, "passed": not regressions, "notes": notes,
            "new": {"model": (new.get("model") or {}).get("name"), "target": new["target"].get("name"),
                    "precision": new.get("precision"), "kiln_version": new.get("kiln_version")},
            "baseline": {"model": (old.get("model") or {}).get("name"), "target": old["target"].get("name"),
                         "precision": old.get("precision"), "kiln_version": old.get("kiln_version")}}


def _fmt_change(check: dict) -> str:
    change = check["change"]
    if change is None:
        return f"({check['baseline']} -> {check['new']})"
    if check["check"].startswith(("latency", "model size")):
        return f"{change * 100:+.1f} % (allowed {check['allowed'] * 100:+.1f} %)"
    return f"{change:+.4f} (allowed {check['allowed']:+.4f})"


def _fmt_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return "–" if value is None else str(value)


def render_markdown(result: dict) -> str:
    """A summary fit for a pull-request comment."""
    verdict = "✅ no regression" if result["passed"] else f"❌ {len(result['regressions'])} regression(s)"
    new, old = result["new"], result["baseline"]
    lines = [f"### kiln compare: {verdict}", "",
             f"{new['model']} {new['target']} {new['precision']} (kiln {new['kiln_version']}) against baseline "
             f"{old['model']} {old['target']} {old['precision']} (kiln {old['kiln_version']})", "",
             "| check | baseline | new | change | allowed | status |", "|---|---|---|---|---|---|"]
    icons = {"regression": "❌ regression", "ok": "ok", "improved": "improved", "skipped": "skipped"}
    for c in result["checks"]:
        change = "–" if c["change"] is None else (_fmt_change(c).split(" (")[0])
        allowed = "–" if c["allowed"] is None else _fmt_change(c).split("allowed ")[-1].rstrip(")")
        status = icons[c["status"]] + (f" ({c['note']})" if c.get("note") else "")
        lines.append(f"| {c['check']} | {_fmt_value(c['baseline'])} | {_fmt_value(c['new'])} | {change} | {allowed} "
                     f"| {status} |")
    for note in result["notes"]:
        lines += ["", f"- {note}"]
    return "\n".join(lines) + "\n"
