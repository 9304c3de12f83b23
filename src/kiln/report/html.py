"""report.html: one self-contained page per artifact or per comparison matrix, for people.

No network at all (a Content-Security-Policy forbids it): CSS and plots are inline, so the page opens the same
from a CI artifact store, an air-gapped edge box or an email attachment. Every string from a report is escaped:
model names, paths and failure reasons come from users. Every section is always there; when its data is missing
it says "Not measured" and why, so a reader can tell "not measured" from "forgot to look".
"""

from __future__ import annotations

import html
import re

from kiln.report import plots
from kiln.report.comparison import precision_label
from kiln.report.markdown import rounded_summary
from kiln.report.mixed_precision import island_block, mixed_precision_block

CSS = """
:root{--ink:#1a1a1a;--mid:#5a5a5a;--line:#dcdcdc;--soft:#f6f6f5} *{box-sizing:border-box}
body{margin:0;background:#fff;color:var(--ink);
 font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Liberation Sans",sans-serif}
main{max-width:1100px;margin:0 auto;padding:24px 28px 64px} section{margin:30px 0}
h1{font-size:1.45rem;margin:0 0 2px;overflow-wrap:anywhere} h3{font-size:1rem;margin:22px 0 6px}
h2{font-size:1.15rem;margin:0 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
.sub,.small{color:var(--mid);font-size:.88rem;margin:4px 0}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{flex:1 1 110px;border:1px solid var(--line);border-radius:8px;padding:9px 11px;background:var(--soft)}
.card .k{font-size:.7rem;text-transform:uppercase;letter-spacing:.05em;color:var(--mid)}
.card .v{font-size:1.1rem;font-weight:650;font-variant-numeric:tabular-nums;white-space:nowrap;line-height:1.3}
.card .s{font-size:.78rem;color:var(--mid);overflow-wrap:anywhere;line-height:1.35;margin-top:2px}
.tablewrap{overflow-x:auto} .card:last-child{flex-grow:2}
table{border-collapse:collapse;min-width:50%;font-size:.86rem;margin:8px 0}
th,td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-weight:600;background:var(--soft)} td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.num{white-space:nowrap} tr.rec td{font-weight:700;background:#efefec} tr.ref td{font-style:italic;color:var(--mid)}
code{font:.84em ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace}
figure{margin:10px 0} svg.plot{display:block;width:100%;height:auto}
.missing{color:var(--mid);font-style:italic}
.noplot{padding:8px 12px;border:1px dashed var(--line);color:var(--mid);border-radius:6px}
details{border:1px solid var(--line);border-radius:8px;padding:2px 16px 8px;margin:12px 0}
details>summary{cursor:pointer;font-weight:600;padding:8px 0} details section{margin:14px 0} ul{padding-left:1.3em}
"""
# Writes how many plots drew into <body data-plots-ok data-plots-failed> (a browser test reads it; people don't
# see it). Closed <details> have no layout, so they are opened for the measurement and closed again.
CHECK_SCRIPT = """<script>(function () {
  function check() {
    var closed = [].slice.call(document.querySelectorAll("details:not([open])")), ok = 0, failed = 0;
    closed.forEach(function (d) { d.open = true; });
    [].forEach.call(document.images, function (i) { if (i.complete && i.naturalWidth > 0) ok++; else failed++; });
    [].forEach.call(document.querySelectorAll("svg"), function (s) { if (s.ownerSVGElement) return;
      var b = s.getBoundingClientRect(); if (b.width > 0 && b.height > 0) ok++; else failed++; });
    closed.forEach(function (d) { d.open = false; });
    document.body.dataset.plotsOk = String(ok); document.body.dataset.plotsFailed = String(failed);
  }
  if (document.readyState === "complete") check(); else window.addEventListener("load", check);
})();</script>"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
ACCURACY_COLUMNS = (("max_abs_error", "max abs err"), ("max_rel_error", "max rel err"), ("cosine_min", "cosine min"),
                    ("cosine_mean", "cosine mean"), ("top1_agreement", "top-1 agree"),
                    ("top1_agreement_confident", "top-1 agree (confident)"), ("top5_agreement", "top-5 agree"),
                    ("exact_match", "exact match"))
METRIC_NAMES = {"cosine_min": "min cosine", "top1_agreement": "top-1 agreement", "exact_match": "exact match"}


class Raw(str):
    """Markup already escaped by this module; table cells of any other type are escaped."""


def e(value) -> str:
    return html.escape(str(value), quote=True)


def _f(value, digits: int = 3, unit: str = "") -> str:
    """A number for people: significant digits, thousands separators, "–" when missing."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else str(value)
    text = f"{value:,}" if isinstance(value, int) else f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"
    return text + unit


def _pct(value, digits: int = 0) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def _acc_text(metric: str | None, value) -> str:
    return "–" if value is None else f"{value:.6f}" if metric and "cosine" in metric else _pct(value, 1)


def _skipped(value, what: str) -> str | None:
    """Why a measurement is absent (null or {"skipped": reason}), or None when it is there."""
    if value is None:
        return f"no {what} in this report"
    if isinstance(value, dict) and "skipped" in value:
        return str(value["skipped"]) or f"{what} skipped"
    return None


def _missing(reason: str) -> str:
    return f'<p class="missing">Not measured: {e(str(reason).rstrip("."))}.</p>'


def _section(sid: str, title: str, body: str, level: int = 2) -> str:
    return f'<section id="{e(sid)}"><h{level}>{e(title)}</h{level}>{body}</section>'


def _cell(value) -> str:
    return value if isinstance(value, Raw) else e("–" if value is None else value)


def _table(headers: list[str], rows: list[list], num: tuple[int, ...] = (), classes: list[str] | None = None) -> str:
    """A table; columns in num are right-aligned so numbers line up by magnitude."""
    def td(i: int, v, tag: str = "td") -> str:
        return f'<{tag} class="num">{_cell(v)}</{tag}>' if i in num else f"<{tag}>{_cell(v)}</{tag}>"
    def tr(r: int, row: list) -> str:
        cells = [td(i, v) for i, v in enumerate(row)]
        if len(row) < len(headers):  # a short row's last cell spans the rest (a failure reason, say)
            cells[-1] = f'<td colspan="{len(headers) - len(row) + 1}">{_cell(row[-1])}</td>'
        return f'<tr class="{e((classes or [""] * len(rows))[r])}">' + "".join(cells) + "</tr>"
    head = "".join(td(i, h, "th") for i, h in enumerate(headers))
    body = "".join(tr(r, row) for r, row in enumerate(rows))
    return f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _plot(fn, *args) -> str:
    """An inline SVG plot, or one line saying why there is none: a plot must never cost the page."""
    try:
        return f"<figure>{fn(*args)}</figure>"
    except plots.PlotsUnavailable:
        return '<p class="noplot">plots need <code>pip install "modelkiln[report]"</code></p>'
    except Exception as exc:  # noqa: BLE001 - the rest of the report is still worth reading
        return f'<p class="noplot">plot not drawn: {e(type(exc).__name__)}: {e(exc)}</p>'


def _cards(cards: list[tuple[str, str, str]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{e(k)}</div><div class="v">{e(v)}</div><div class="s">{e(s)}</div></div>'
        for k, v, s in cards) + "</div>"


def _page(title: str, subtitle: str, sections: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>"
            f'<header><h1>{e(title)}</h1><p class="sub">{e(subtitle)}</p></header>'
            + "".join(sections) + f"</main>{CHECK_SCRIPT}</body></html>\n")


# --- one artifact ----------------------------------------------------------------------------------------------

def headline_accuracy(report: dict) -> tuple[str | None, float | None]:
    """The one accuracy figure for a card: top-1 agreement for class logits, else min cosine, on the gated outputs."""
    acc = report.get("accuracy") or {}
    outputs = acc.get("outputs") or {}
    gated = [outputs[n] for n in (acc.get("gate") or {}).get("outputs") or [] if n in outputs] or list(outputs.values())
    for metric in ("top1_agreement", "cosine_min", "exact_match"):
        values = [m[metric] for m in gated if m.get(metric) is not None]
        if values:
            return metric, min(values)
    return None, None


def _shapes(shapes: dict) -> str:
    return ", ".join(f"{name} {'×'.join(map(str, dims))}" for name, dims in (shapes or {}).items())


def _summary(report: dict) -> str:
    lat, target = report.get("latency_ms") or {}, report.get("target") or {}
    metric, acc = headline_accuracy(report)
    speedup = report.get("speedup_vs_source")
    gate = (report.get("accuracy") or {}).get("gate") or {}
    status = report.get("status", "–")
    verdict = {"ok": "✓ ok", "rejected": "✗ rejected", "failed": "✗ failed"}.get(status, status)
    why = ("; ".join(gate.get("failures") or []) if status == "rejected" else
           (report.get("error") or {}).get("message", "") if status == "failed" else
           "accuracy gate passed" if gate.get("checked") else "accuracy gate not checked")
    roof = report.get("roofline")
    if not _skipped(roof, "roofline") and status == "ok":
        why += f"; {roof.get('verdict')}"
    return _cards([
        ("target", target.get("name", "–"), f"{target.get('backend', '')} on {target.get('device', '')}"),
        ("precision", report.get("precision", "–"), f"executes in {report.get('execution_precision') or '(not reported)'}"),
        ("p50 latency", _f(lat.get("p50"), unit=" ms"), f"p99 {_f(lat.get('p99'), unit=' ms')}"),
        ("throughput", _f(report.get("throughput_per_s"), unit="/s"),
         f"{speedup:.2f}× the source model" if speedup else "no source-model measurement"),
        ("size", _f((report.get("size") or {}).get("model_mib"), unit=" MiB"), "model files"),
        ("accuracy", _acc_text(metric, acc), METRIC_NAMES.get(metric, "not validated")),
        ("verdict", verdict, why)])


def _latency(report: dict) -> str:
    bench = report.get("bench")
    if not bench:
        return _missing(report.get("bench_skipped") or "no latency measurement in this report")
    lat, settings = bench.get("latency_ms") or {}, report.get("settings") or {}
    intro = (f"<p>Batch {e(bench.get('batch'))}, {e(_shapes(bench.get('input_shapes')))}; "
             f"{e(settings.get('threads', '–'))} threads; {e(bench.get('runs'))} timed runs after "
             f"{e(bench.get('warmup_runs'))} warm-up. Load {e(_f(bench.get('load_ms'), unit=' ms'))}, first inference "
             f"{e(_f(bench.get('first_inference_ms'), unit=' ms'))}.</p>")
    hist = bench.get("latency_histogram")
    plot = (_plot(plots.latency_histogram, hist, lat) if hist and hist.get("counts")
            else _missing("no histogram of the timed runs in this report"))
    keys = ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")
    table = _table([f"{k} ms" for k in keys] + ["throughput /s"],
                   [[_f(lat.get(k)) for k in keys] + [_f(bench.get("throughput_per_s"))]], num=tuple(range(9)))
    src = report.get("source_bench")
    source = (f'<p class="small">Source model ({e(src.get("runtime"))}, {e(src.get("threads"))} threads): p50 '
              f'{e(_f((src.get("latency_ms") or {}).get("p50"), unit=" ms"))}, '
              f'{e(_f(src.get("throughput_per_s"), unit="/s"))}.</p>' if src else "")
    return intro + plot + table + source


def _per_op(report: dict) -> str:
    prof = report.get("profile")
    reason = _skipped(prof, "per-op profile")
    if reason:
        return _missing(reason)
    intro = (f"<p>{e(prof.get('method', prof.get('runtime', '')))}: {e(_f(prof.get('wall_ms'), unit=' ms'))} per "
             f"inference, of which {e(_f(prof.get('node_ms'), unit=' ms'))} in nodes and "
             f"{e(_f(prof.get('overhead_ms'), unit=' ms'))} outside them (session overhead).</p>")
    ops = prof.get("by_op_type") or []
    plot = _plot(plots.op_time_bars, ops) if ops else _missing("no op timings in the profile")
    rows = [[Raw("<code>" + re.sub(r"([/_.])", r"\1<wbr>", e(n.get("name"))) + "</code>"), n.get("op_type"), _f(n.get("ms")), _pct(n.get("share"), 1),
             _f((n.get("flops") or 0) / 1e9), _f((n.get("bytes") or 0) / 1e6), _f(n.get("intensity")),
             n.get("bound"), _pct(n.get("efficiency"))] for n in prof.get("top_nodes") or []]
    table = _table(["node", "op type", "ms", "share", "GFLOP", "MB moved", "FLOP/byte", "bound", "of roofline"],
                   rows, num=(2, 3, 4, 5, 6, 8)) if rows else ""
    return intro + plot + ("<h3>Top nodes</h3>" + table if table else "")


def _roofline(report: dict) -> str:
    roof = report.get("roofline")
    reason = _skipped(roof, "roofline")
    if reason:
        return _missing(reason)
    peaks, model, split = roof.get("peaks") or {}, roof.get("model") or {}, roof.get("time_split") or {}
    prof = report.get("profile")
    nodes = [] if _skipped(prof, "profile") else prof.get("top_nodes") or []
    plot = _plot(plots.roofline, peaks, model, nodes)
    verdict = (f'<p class="verdict"><strong>{e(roof.get("verdict", "–"))}</strong>: '
               f'{e(_f((model.get("flops") or 0) / 1e9))} GFLOP and {e(_f((model.get("bytes") or 0) / 1e6))} MB '
               f'moved per inference, {e(_f(model.get("intensity")))} FLOP/byte (ridge '
               f'{e(_f(model.get("ridge_intensity")))}); measured {e(_f(model.get("measured_ms"), unit=" ms"))} '
               f'against a roofline bound of {e(_f(model.get("bound_ms"), unit=" ms"))}: '
               f'{e(_pct(model.get("efficiency")))} of the roofline.</p>')
    table = _table(["time goes to", "ms", "share"],
                   [[k, _f(split.get(f"{k}_ms")), _pct(split.get(f"{k}_share"))]
                    for k in ("compute", "memory", "overhead")], num=(1, 2)) if split else ""
    advice = "".join(f"<li>{e(a)}</li>" for a in roof.get("advice") or [])
    peak_text = ", ".join(f"{label} {_f(peaks.get(key))} {unit}" if peaks.get(key) else f"{label} not measured"
                          for label, key, unit in (("fp32", "fp32_gflops", "GFLOP/s"), ("int8", "int8_gops", "GOP/s"),
                                                   ("bf16", "bf16_gflops", "GFLOP/s"),
                                                   ("memory", "memory_gbps", "GB/s")))
    peaks_line = (f'<p class="small">Peaks measured on this host ({e(peaks.get("runtime", "–"))}, '
                  f'{e(peaks.get("threads", "–"))} threads{", cached" if peaks.get("cached") else ""}): '
                  f"{e(peak_text)}.</p>")
    return plot + verdict + table + (f"<ul>{advice}</ul>" if advice else "") + peaks_line


def _accuracy(report: dict) -> str:
    acc = report.get("accuracy")
    if not acc:
        return _missing("no accuracy validation in this report")
    head = f"<p>Data: {e((acc.get('data') or {}).get('description', '–'))}.</p>"
    if not acc.get("meaningful", True):
        head += "<p><strong>These figures are not meaningful: the data is synthetic.</strong></p>"
    outputs = acc.get("outputs") or {}
    cols = [(k, h) for k, h in ACCURACY_COLUMNS if any(m.get(k) is not None for m in outputs.values())]
    rows = [[Raw(f"<code>{e(name)}</code>")] + [_f(m.get(k), 6 if "cosine" in k else 4) for k, _ in cols]
            for name, m in outputs.items()]
    table = _table(["output"] + [h for _, h in cols], rows, num=tuple(range(1, len(cols) + 1)))
    gate = acc.get("gate") or {}
    verdict = ("not checked (no budget)" if not gate.get("checked") else "✓ passed" if gate.get("passed")
               else "✗ FAILED: " + "; ".join(gate.get("failures") or []))
    on = ", ".join(gate.get("outputs") or [])
    rounded = rounded_summary(acc.get("fp16_rounded"))
    return head + table + f"<p>Accuracy gate: {e(verdict)}{e(f' (on {on})' if on else '')}.</p>" + (
        f'<p class="small">{e(rounded)}</p>' if rounded else "")


def _budget_line(metric: str | None, budget: dict) -> float | None:
    if metric == "cosine_min":
        return budget.get("min_cosine")
    if metric == "top1_agreement" and budget.get("max_top1_disagreement") is not None:
        return 1 - budget["max_top1_disagreement"]
    return None


def _scatter_single(report: dict) -> str:
    src = report.get("source_bench")
    if not src:
        return _missing("no source-model measurement in this report")
    metric, acc = headline_accuracy(report)
    if not report.get("throughput_per_s") or acc is None:
        return _missing(report.get("bench_skipped") or "the artifact has no throughput or accuracy figure")
    target = report.get("target") or {}
    points = [{"label": f"{target.get('backend', target.get('name'))}/{report.get('precision')}",
               "x": report["throughput_per_s"], "y": acc, "kind": "cell"},
              {"label": f"source ({src.get('runtime')})", "x": src.get("throughput_per_s"), "y": 1.0, "kind": "source"}]
    budget = _budget_line(metric, (report.get("accuracy") or {}).get("budget") or {})
    return (_plot(plots.speed_accuracy, points, "throughput (inferences/s)", METRIC_NAMES.get(metric, metric), budget)
            + '<p class="small">The source model is the reference: its accuracy is 1 by definition.</p>')


def _batch(report: dict) -> str:
    sweep = report.get("batch_sweep")
    reason = _skipped(sweep, "batch sweep")
    if reason or not sweep.get("points"):
        return _missing(reason or "the batch sweep has no points")
    budget, best = sweep.get("latency_budget_ms"), sweep.get("best_batch")
    rows = [[("★ " if p["batch"] == best else "") + str(p["batch"]), _f(p.get("p50_ms")), _f(p.get("p99_ms")),
             _f(p.get("throughput_per_s")),
             "–" if budget is None else "✓ within" if p.get("p99_ms", 0) <= budget else "✗ over"]
            for p in sweep["points"]]
    classes = ["rec" if p["batch"] == best else "" for p in sweep["points"]]
    text = (f"<p>Latency budget {e(_f(budget, unit=' ms') if budget is not None else 'not given')}; "
            f"best batch {e(best if best is not None else 'none')}.</p>")
    return (_plot(plots.batch_sweep, sweep["points"], budget, best) + text
            + _table(["batch", "p50 ms", "p99 ms", "throughput /s", "p99 vs budget"], rows, num=(0, 1, 2, 3),
                     classes=classes))


def _per_million(price: float | None, throughput: float | None) -> float | None:
    return price / (throughput * 3600) * 1e6 if price and throughput else None


def _cost(report: dict) -> str:
    cost = report.get("cost")
    if not cost:
        return _missing("no price per hour given")
    src, art = cost.get("source_per_million"), cost.get("artifact_per_million")
    rows = [["this artifact", _f(art)], ["source model", _f(src)]]
    if src and art:
        rows.append(["saving", f"{_f(src - art)} ({_pct(1 - art / src)})"])
    return (f"<p>At {e(_f(cost.get('price_per_hour')))} per hour of this host, running one inference at a time "
            "(the measured throughput):</p>" + _table(["", "cost per 1M inferences"], rows, num=(1,)))


def _notes(report: dict) -> str:
    notes = list(report.get("notes") or []) + list((report.get("plan") or {}).get("notes") or [])
    notes += list((report.get("export") or {}).get("notes") or [])
    model, host, exp = report.get("model") or {}, report.get("host") or {}, report.get("export") or {}
    facts = [f"Source: {model.get('source_kind', '–')} {model.get('name', '–')}"
             + (f", {_f(model['parameters'])} parameters" if model.get("parameters") else ""),
             f"Exported with {exp.get('exporter', '–')} (opset {exp.get('opset', '–')}); built by kiln "
             f"{report.get('kiln_version', '–')} in {_f(report.get('total_seconds'), unit=' s')}",
             f"Host: {host.get('cpu_model', '–')}, {host.get('logical_cores', '–')} logical cores, "
             f"{_f(host.get('memory_gib'), unit=' GiB')}, {host.get('os', '–')}"]
    items = "".join(f"<li>{e(n)}</li>" for n in notes) or "<li>No notes.</li>"
    return f"<ul>{items}</ul><ul class=\"small\">{''.join(f'<li>{e(x)}</li>' for x in facts)}</ul>"


DETAIL_SECTIONS = (("latency", "Latency", _latency), ("per-op", "Where the time goes (per op)", _per_op),
                   ("roofline", "Roofline", _roofline), ("accuracy", "Accuracy against the source model", _accuracy))


def _mixed(report: dict) -> str:
    """The fallback search (--precision auto / --fallback): its curve, the shipped point and the kept units."""
    block, _ = mixed_precision_block(report.get("compile") or {})
    search = block["search"]
    chosen = search["chosen"]["kept"] if search.get("chosen") else None
    text = (f'<p>Shipped: <strong>{e(block["shipped"])}</strong>; ' + (
        f'search not run: {e(search["skipped"])}.</p>' if search.get("skipped") else
        f'{search["evaluations"]} graphs evaluated in {search["seconds"]:.1f} s'
        f'{" (cut short)" if search["timed_out"] else ""}.</p>'))
    if block["shipped"] in ("mixed", "dynamic-mixed"):
        text += "<p>Kept in float: " + ", ".join(f"<code>{e(n)}</code>" for n in block["kept_fp32"]) + "</p>"
    if block["shipped"] not in ("mixed", "low"):  # a whole recipe shipped, not a point of this search
        chosen = None
    curve, rung = search["curve"], block.get("dynamic_search") or {}
    if block["shipped"] == "dynamic-mixed" and rung.get("curve"):  # the points of the graph that shipped
        curve, chosen = rung["curve"], len(block["kept_fp32"])
        text += ("<p>The curve is the dynamic-int8 rung's (nodes kept float in dynamic int8), whose graph shipped; "
                 "the static search's points are in report.json.</p>")
    return _plot(plots.fallback_curve, curve, chosen, block.get("tuning_share", 0.5)) + text


def _islands(report: dict) -> str:
    """TensorRT's fp32 islands (fallback/islands.py): the search's curve and the units kept in fp32."""
    block = island_block(report.get("compile") or {})
    if not block["searched"]:
        return "<p>The fp16 graph was within budget on the tuning split: no fp32 island was needed.</p>"
    search = block["search"]
    text = (f'<p>{search["evaluations"]} graphs evaluated in {search["seconds"]:.1f} s'
            f'{" (cut short)" if search["timed_out"] else ""}; kept in fp32 ({len(block["kept_units"])} of '
            f'{block["units"]} units): ' + ", ".join(f"<code>{e(n)}</code>" for n in block["kept_units"]) + "</p>")
    chosen = search["chosen"]["kept"] if search.get("chosen") else None
    return _plot(plots.fallback_curve, search["curve"], chosen, block["tuning_share"]) + text


def render_html(report: dict) -> str:
    """One artifact's report.json as a self-contained page."""
    model, target = (report.get("model") or {}).get("name", "model"), (report.get("target") or {}).get("name", "–")
    title = f"kiln report: {model} → {target} ({report.get('precision', '–')})"
    mixed = [("mixed", "Mixed precision", _mixed)] if mixed_precision_block(report.get("compile") or {})[0] else []
    islands = [("islands", "fp32 islands in the fp16 graph", _islands)] if island_block(report.get("compile") or {}) \
        else []
    parts = [("summary", "Summary", _summary), *DETAIL_SECTIONS, *islands, *mixed,
             ("scatter", "Speed against accuracy", _scatter_single),
             ("batch", "Batch size", _batch), ("cost", "Cost", _cost), ("notes", "Notes", _notes)]
    failed = report.get("status") == "failed"
    reason = f"the export failed: {(report.get('error') or {}).get('message', 'unknown error')}"
    sections = [_section(sid, name, fn(report) if not failed or sid == "summary" else _missing(reason))
                for sid, name, fn in parts]
    return _page(title, f"status {report.get('status', '–')} · kiln {report.get('kiln_version', '–')}", sections)


# --- the comparison matrix -------------------------------------------------------------------------------------

def _label(cell: dict) -> str:
    return f"{cell.get('target')}/{precision_label(cell) if cell.get('precision') else None}"


def _slug(cell: dict) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"{cell.get('target')}-{cell.get('precision')}".lower()).strip("-")


def _status(cell: dict) -> str:
    status = cell.get("status", "–")
    mark = {"ok": "✓ ", "failed": "✗ ", "refused": "⊘ ", "rejected": "✗ "}.get(status, "")
    return mark + status + (f": {cell['reason']}" if cell.get("reason") and status != "ok" else "")


def _cmp_summary(comp: dict) -> str:
    cells = comp.get("cells") or []
    rec = next((c for c in cells if c.get("recommended")), None) or {}
    recommendation = comp.get("recommendation") or {}
    ok = sum(c.get("status") == "ok" for c in cells)
    speedup = rec.get("speedup_vs_source")
    return _cards([
        ("target", f"★ {rec['target']}" if rec else "none", "recommended" if rec else "no cell recommended"),
        ("precision", rec.get("precision", "–"), f"executes in {rec.get('execution_precision') or '–'}"),
        ("p50 latency", _f(rec.get("p50_ms"), unit=" ms"), f"p99 {_f(rec.get('p99_ms'), unit=' ms')}"),
        ("throughput", _f(rec.get("throughput_per_s"), unit="/s"),
         f"{speedup:.2f}× the source model" if speedup else "no source-model measurement"),
        ("size", _f(rec.get("size_mib"), unit=" MiB"), "model files"),
        ("accuracy", _acc_text(rec.get("accuracy_metric"), rec.get("accuracy")),
         METRIC_NAMES.get(rec.get("accuracy_metric"), "–")),
        ("verdict", "✓ ok" if recommendation else "✗ none",
         f"{ok} of {len(cells)} cells ok; " + recommendation.get("reason", "no cell meets the accuracy budget"))])


def _matrix(comp: dict) -> str:
    cells = comp.get("cells") or []
    if not cells:
        return _missing("the comparison has no cells")
    rows, classes = [], []
    for c in cells:
        acc = _acc_text(c.get("accuracy_metric"), c.get("accuracy"))
        acc += " ✗ below budget" if c.get("meets_budget") is False else ""
        speed, name = c.get("speedup_vs_source"), ("★ " if c.get("recommended") else "") + str(c.get("target"))
        rows.append([name, c.get("precision"), _status(c)] if c.get("status") not in ("ok", "rejected") else
                    [name, c.get("precision"), _status(c), _f(c.get("size_mib")), acc, _f(c.get("p50_ms")),
                     _f(c.get("p99_ms")), _f(c.get("throughput_per_s")), f"{speed:.2f}×" if speed else "–",
                     c.get("execution_precision"), _f(c.get("cost_per_million"))])
        classes.append("rec" if c.get("recommended") else "")
    src = comp.get("source_bench")
    if src:
        lat = src.get("latency_ms") or {}
        rows.append([f"source model ({src.get('runtime')})", "–", "reference", "–", "1 by definition",
                     _f(lat.get("p50")), _f(lat.get("p99")), _f(src.get("throughput_per_s")), "1.00×", "–",
                     _f(_per_million(comp.get("price_per_hour"), src.get("throughput_per_s")))])
        classes.append("ref")
    table = _table(["target", "precision", "status", "size MiB", "accuracy", "p50 ms", "p99 ms", "throughput /s",
                    "speedup vs source", "executes in", "cost / 1M"], rows, num=(3, 5, 6, 7, 8, 10),
                   classes=classes)
    rec, budget = comp.get("recommendation"), comp.get("budget") or {}
    untimed = ", ".join(f"{c.get('target')}/{c.get('precision')}" for c in comp.get("cells", [])
                        if c.get("meets_budget") and c.get("p50_ms") is None)
    reason = (f"<p><strong>★ Recommended: {e(rec.get('target'))}/{e(rec.get('precision'))}</strong>: "
              f"{e(rec.get('reason', ''))}.</p>" if rec
              else f"<p><strong>No recommendation</strong>: the cells within the accuracy budget were not timed "
                   f"({e(untimed)}): time them on their device.</p>" if untimed
              else "<p><strong>No recommendation</strong>: no cell met the accuracy budget.</p>")
    given = "given" if budget.get("given") else "the default; none was given"
    budget_text = (f'<p class="small">Accuracy budget ({e(given)}): cosine ≥ {e(_f(budget.get("min_cosine"), 6))}, '
                   f'top-1 disagreement ≤ {e(_pct(budget.get("max_top1_disagreement"), 1))}.</p>')
    return table + reason + budget_text


def _cmp_scatter(comp: dict) -> str:
    ok = [c for c in comp.get("cells") or [] if c.get("status") == "ok" and c.get("accuracy") is not None
          and (c.get("throughput_per_s") or c.get("speedup_vs_source"))]
    if not ok:
        return _missing("no cell was built and measured")
    use_tp = all(c.get("throughput_per_s") for c in ok)
    key = "throughput_per_s" if use_tp else "speedup_vs_source"
    points = [{"label": _label(c), "x": c[key], "y": c["accuracy"], "kind": "recommended" if c.get("recommended")
               else "cell"} for c in ok]
    src = comp.get("source_bench")
    if src:
        points.append({"label": "source", "x": src.get("throughput_per_s") if use_tp else 1.0, "y": 1.0,
                       "kind": "source"})
    metric = next(iter(metrics)) if len(metrics := {c.get("accuracy_metric") for c in ok}) == 1 else None
    x_label = "throughput (inferences/s)" if use_tp else "speedup vs the source model (×)"
    y_label = METRIC_NAMES.get(metric, metric) if metric else "accuracy (each cell's metric)"
    return _plot(plots.speed_accuracy, points, x_label, y_label, _budget_line(metric, comp.get("budget") or {}))


def _cmp_cost(comp: dict) -> str:
    price = comp.get("price_per_hour")
    if not price:
        return _missing("no price per hour given")
    src = comp.get("source_bench") or {}
    rows = [[_label(c), _f(c.get("throughput_per_s")), _f(c.get("cost_per_million"))]
            for c in comp.get("cells") or [] if c.get("status") == "ok"] + ([[
                "source model", _f(src["throughput_per_s"]), _f(_per_million(price, src["throughput_per_s"]))]]
                if src.get("throughput_per_s") else [])
    return (f"<p>At {e(_f(price))} per hour of this host, one inference at a time:</p>"
            + _table(["", "throughput /s", "cost per 1M inferences"], rows, num=(1, 2)))


def _cell_details(comp: dict, reports: dict[str, dict]) -> str:
    blocks = []
    for c in (c for c in comp.get("cells") or [] if c.get("status") == "ok"):
        slug, report = _slug(c), reports.get(c.get("report") or "")
        head = (f"{'★ ' if c.get('recommended') else ''}{_label(c)}: p50 {_f(c.get('p50_ms'), unit=' ms')}, "
                f"{_f(c.get('throughput_per_s'), unit='/s')}")
        if report is None:
            body = _missing(f"report.json of this cell ({c.get('report')}) was not given")
        else:
            body = "".join(_section(f"{slug}-{sid}", name, fn(report), level=3) for sid, name, fn in
                           (*DETAIL_SECTIONS[:3], ("batch", "Batch size", _batch), DETAIL_SECTIONS[3]))
        blocks.append(f'<details id="cell-{e(slug)}"{" open" if c.get("recommended") else ""}>'
                      f"<summary>{e(head)}</summary>{body}</details>")
    return "".join(blocks) or _missing("no cell was built")


def _cmp_notes(comp: dict) -> str:
    src = comp.get("source_bench")
    notes = [f"Source model measured with {src.get('runtime')}, {src.get('threads')} threads." if src
             else "The source model was not measured: no speedups.",
             "Cells are measured one after another on the same host: compare ratios, not absolute times.",
             *(f"{_label(c)}: {c.get('out')}" for c in comp.get("cells") or [] if c.get("out"))]
    return "<ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>"


def render_comparison_html(comparison: dict, reports: dict[str, dict]) -> str:
    """The matrix page: comparison.json plus each cell's report.json, keyed by the cell's "report" path."""
    title = f"kiln comparison: {(comparison.get('model') or {}).get('name', 'model')}"
    parts = [("summary", "Summary", _cmp_summary(comparison)), ("matrix", "Targets × precisions", _matrix(comparison)),
             ("scatter", "Speed against accuracy", _cmp_scatter(comparison)), ("cost", "Cost", _cmp_cost(comparison)),
             ("cells", "Per-cell detail", _cell_details(comparison, reports)), ("notes", "Notes", _cmp_notes(comparison))]
    return _page(title, f"{len(comparison.get('cells') or [])} cells · {comparison.get('schema_version', '–')}",
                 [_section(sid, name, body) for sid, name, body in parts])
