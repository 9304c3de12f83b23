"""Plots for report.html as inline SVG text: crisp at any zoom, small, and no file beside the page.

matplotlib is the optional extra `modelkiln[report]`: it is imported only when a plot is drawn, and its absence
raises PlotsUnavailable so the page can say so and still render everything else. Series differ by marker,
line style and direct labels, never by colour alone, so the plots read in greyscale and in print.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import io
import json
import math
import os
import re
import sys
from pathlib import Path

NEED_LINE = 'plots need `pip install "modelkiln[report]"`'
INK, MID, LIGHT, FAINT = "#1a1a1a", "#5c5c5c", "#9a9a9a", "#d9d9d9"
STYLE = {
    "svg.fonttype": "none", "svg.hashsalt": "kiln", "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"], "font.size": 9,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.color": "#e6e6e6",
    "grid.linewidth": 0.6, "axes.edgecolor": MID, "axes.labelcolor": INK, "xtick.color": MID, "ytick.color": MID,
    "axes.titlesize": 9, "legend.frameon": False, "legend.fontsize": 8,
}
WIDTH = 10.5  # inches: 756 pt, about the 1000 px page column, so 9 pt text reads as page-sized text
CEILING_STYLES = {"fp32": (0, (6, 3)), "int8": (0, (6, 2, 1.5, 2)), "bf16": (0, (1.5, 2))}


class PlotsUnavailable(ImportError):
    """matplotlib is not installed: the page renders without plots and says how to get them."""


def _pyplot():
    """Import matplotlib only now (optional extra); headless unless the caller already chose a backend."""
    try:
        import matplotlib
        if "matplotlib.pyplot" not in sys.modules:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotsUnavailable(NEED_LINE) from exc
    return plt


_MEMO: contextvars.ContextVar[Path | None] = contextvars.ContextVar("kiln_plot_memo", default=None)


@contextlib.contextmanager
def memo(folder: Path | None):
    """Within this block, plots are kept in `folder` keyed by their data: an unchanged export (a cache hit)
    renders its page without drawing (drawing costs about a second)."""
    token = _MEMO.set(folder)
    try:
        yield
    finally:
        _MEMO.reset(token)


def _memo_file(fn, args, kwargs) -> Path | None:
    folder = _MEMO.get()
    if folder is None:
        return None
    try:
        text = json.dumps([fn.__qualname__, args, kwargs, _version()], sort_keys=True, allow_nan=True)
    except (TypeError, ValueError):
        return None
    return folder / (hashlib.sha256(text.encode()).hexdigest() + ".svg")


@functools.cache
def _version() -> str:
    from importlib import metadata

    import kiln

    try:
        return f"{kiln.__version__}/{metadata.version('matplotlib')}"
    except metadata.PackageNotFoundError:
        return kiln.__version__


def _styled(fn):
    """Draw in the report style without changing the caller's own matplotlib settings (kiln is also a library)."""
    @functools.wraps(fn)
    def draw(*args, **kwargs):
        kept = _memo_file(fn, args, kwargs)
        if kept is not None and kept.is_file():
            return kept.read_text(encoding="utf-8")
        with _pyplot().rc_context(STYLE):
            svg = fn(*args, **kwargs)
        if kept is not None:
            kept.parent.mkdir(parents=True, exist_ok=True)
            partial = kept.with_name(f"{kept.name}.{os.getpid()}.tmp")
            partial.write_text(svg, encoding="utf-8")
            os.replace(partial, kept)
        return svg
    return draw


def available() -> bool:
    try:
        _pyplot()
    except PlotsUnavailable:
        return False
    return True


def _svg(fig, label: str) -> str:
    """The figure as inline <svg>: no XML prolog or metadata, ids made unique so several plots share a page."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", pad_inches=0.08, metadata={"Date": None})
    _pyplot().close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.DOTALL)
    prefix = "k" + hashlib.sha1(text.encode()).hexdigest()[:8] + "-"
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', text)
    text = re.sub(r'(href="#|url\(#)([^")]+)', lambda m: f"{m.group(1)}{prefix}{m.group(2)}", text)
    aria = label.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return text.replace("<svg ", f'<svg class="plot" role="img" aria-label="{aria}" ', 1)


@_styled
def latency_histogram(hist: dict, latency: dict) -> str:
    """Distribution of the timed runs (bench.latency_histogram); p50 and p99 as lines of different styles.

    kiln bins up to the 99.5th percentile and counts slower runs in the last bin: the plot says so.
    """
    edges_ms, counts, p50, p99 = hist["edges_ms"], hist["counts"], latency.get("p50"), latency.get("p99")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH, 3.0))
    ax.stairs(counts, edges_ms, fill=True, color=FAINT)
    ax.stairs(counts, edges_ms, color=MID, linewidth=0.8)
    top = max(counts) if counts else 1
    for value, name, style in ((p50, "p50", "-"), (p99, "p99", (0, (5, 3)))):
        if value is not None:
            ax.axvline(value, color=INK, linestyle=style, linewidth=1.4)
            ax.annotate(f"{name} {value:.3g} ms", (value, top), xytext=(4, 2), textcoords="offset points",
                        fontsize=8.5, color=INK, va="top", ha="left", fontweight="bold")
    tail, slowest = hist.get("tail_from_ms"), hist.get("max_ms")
    if tail is not None and slowest is not None and slowest > tail:
        ax.annotate(f"last bin: runs ≥ {tail:.3g} ms (slowest {slowest:.3g} ms)", (1, 1), xycoords="axes fraction",
                    ha="right", va="top", fontsize=8.5, color=MID)
    ax.set_xlabel("latency per inference (ms)")
    ax.set_ylabel("timed runs (count)")
    ax.set_ylim(0, top * 1.12)
    ax.grid(axis="x", visible=False)
    return _svg(fig, "histogram of the timed runs")


@_styled
def op_time_bars(by_op_type: list[dict], top: int = 10) -> str:
    """Where the time goes by op type: the top ten and the rest as "other", labelled with ms and share."""
    rows = sorted(by_op_type, key=lambda r: r.get("ms") or 0, reverse=True)
    shown = [(r["op_type"], r.get("ms") or 0.0, r.get("share") or 0.0, r.get("count")) for r in rows[:top]]
    rest = rows[top:]
    if rest:
        shown.append((f"other ({len(rest)} types)", sum(r.get("ms") or 0 for r in rest),
                      sum(r.get("share") or 0 for r in rest), None))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH, 0.3 * len(shown) + 0.9))
    names = [f"{n} ×{c}" if c else n for n, _, _, c in shown][::-1]
    values = [ms for _, ms, _, _ in shown][::-1]
    bars = ax.barh(names, values, color=LIGHT, edgecolor=INK, linewidth=0.6, height=0.62)
    for bar, (_, ms, share, _) in zip(bars, shown[::-1]):
        ax.annotate(f"{ms:.3g} ms  {share:.0%}", (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                    xytext=(3, 0), textcoords="offset points", va="center", fontsize=8, color=INK)
    ax.set_xlim(0, max(values or [1]) * 1.25)
    ax.set_xlabel("time per inference (ms), summed over the nodes of each op type")
    ax.grid(axis="y", visible=False)
    return _svg(fig, "time by op type")


def short_name(name: str, limit: int = 36) -> str:
    """A node name short enough for a plot that still tells nodes apart: layer, block and op (layer.0/attention/X)."""
    parts = [p for p in name.split("/") if p]
    numbered = next((i for i, p in enumerate(parts) if any(ch.isdigit() for ch in p)), None)
    if numbered is not None and numbered < len(parts) - 2:
        parts = [parts[numbered], parts[numbered + 1], parts[-1]]
    short = "/".join(parts[-3:]) if parts else name
    return short if len(short) <= limit else "…" + short[-(limit - 1):]


@_styled
def roofline(peaks: dict, model: dict, nodes: list[dict]) -> str:
    """Log-log roofline: the ceilings, the memory slope, the model and its top nodes where they actually ran."""
    bw = peaks.get("memory_gbps")
    ceilings = [(k, peaks.get(key)) for k, key in (("fp32", "fp32_gflops"), ("int8", "int8_gops"),
                                                   ("bf16", "bf16_gflops")) if peaks.get(key)]
    pts = [(n["flops"] / n["bytes"], n["flops"] / n["ms"] / 1e6, short_name(n["name"])) for n in nodes
           if n.get("flops") and n.get("bytes") and n.get("ms")]
    xs = [p[0] for p in pts] + [model.get("intensity") or 1.0] + [v / bw for _, v in ceilings if bw]
    ys = [p[1] for p in pts] + [model.get("achieved_gflops") or 1.0] + [v for _, v in ceilings]
    x0, x1 = min(xs) / 4, max(xs) * 60  # room on the right for the node labels
    y0, y1 = min(ys + [bw * x0 if bw else min(ys)]) / 3, max(ys) * 3
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH, 5.6))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    top = max((v for _, v in ceilings), default=None)
    for kind, value in ceilings:
        start = value / bw if bw else x0
        ax.plot([start, x1], [value, value], color=INK, linestyle=CEILING_STYLES[kind], linewidth=1.3)
        unit = "GOP/s" if kind == "int8" else "GFLOP/s"
        # left of the ridge, above the ceiling: the empty corner above the memory slope
        ax.annotate(f"{kind} peak {value:.4g} {unit}", (start, value), xytext=(-6, 3), textcoords="offset points",
                    ha="right", va="bottom", fontsize=8.5, color=INK)
    if bw:
        x_end = top / bw if top else x1
        ax.plot([x0, x_end], [bw * x0, bw * x_end], color=INK, linewidth=1.3)
        _slope_label(ax, x0, bw, f"memory {bw:.3g} GB/s")
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=6, markerfacecolor="white",
                markeredgecolor=INK, linestyle="none", label="top nodes", zorder=4)
        _spread_labels(ax, pts, [v for _, v in ceilings])
    if model.get("intensity") and model.get("achieved_gflops"):
        ax.plot(model["intensity"], model["achieved_gflops"], marker="*", markersize=20, color=INK,
                markeredgecolor="white", linestyle="none", label=f"whole model ({model['achieved_gflops']:.3g} GFLOP/s)",
                zorder=5)
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved)")
    ax.set_ylabel("achieved performance (GFLOP/s; GOP/s for int8)")
    ax.legend(loc="lower right")
    return _svg(fig, "roofline")


def _spread_labels(ax, pts: list[tuple[float, float, str]], avoid_y: list[float], gap_px: float = 14) -> None:
    """Names in a column right of each cluster of markers, pushed down so none overlap, with a faint leader line.

    A cluster is the markers within a few label heights of each other vertically: its labels share the column
    right of its rightmost marker, so no label runs over a neighbour's marker. Labels also keep off the
    horizontal lines at avoid_y (data units; the ceilings).
    """
    to_px, to_data = ax.transData.transform, ax.transData.inverted().transform
    placed = sorted(((*to_px((x, y)), x, y, label) for x, y, label in pts), key=lambda p: -p[1])
    lines = [to_px((1.0, v))[1] for v in avoid_y]
    last = math.inf
    for _, py, x, y, label in placed:
        column = max(qx for qx, qy, *_ in placed if abs(qy - py) < 4 * gap_px)
        last = min(py, last - gap_px)
        last = min([last] + [line - gap_px * 0.7 for line in lines if abs(last - line) < gap_px * 0.7])
        tx, ty = to_data((column + 16, last))
        ax.annotate(label, (x, y), xytext=(tx, ty), textcoords="data", fontsize=8, color=INK, va="center",
                    arrowprops={"arrowstyle": "-", "color": LIGHT, "linewidth": 0.7, "shrinkA": 0, "shrinkB": 4})


def _slope_label(ax, x0: float, bw: float, text: str) -> None:
    """A label along the memory slope, rotated to the slope as drawn (log-log, so the angle is in display space)."""
    xa, xb = x0 * 1.6, x0 * 3.2
    (pa, pb) = ax.transData.transform([(xa, bw * xa), (xb, bw * xb)])
    angle = math.degrees(math.atan2(pb[1] - pa[1], pb[0] - pa[0]))
    ax.annotate(text, (xa, bw * xa), xytext=(0, 5), textcoords="offset points", rotation=angle,
                rotation_mode="anchor", fontsize=8, color=INK)


def pareto_front(points: list[dict]) -> list[dict]:
    """Points no other point beats on both speed (x) and accuracy (y), by increasing speed."""
    front, best_y = [], -math.inf
    for p in sorted(points, key=lambda p: (-p["x"], -p["y"])):
        if p["y"] > best_y:
            front.append(p)
            best_y = p["y"]
    return front[::-1]


@_styled
def speed_accuracy(points: list[dict], x_label: str, y_label: str, budget: float | None = None) -> str:
    """Speed vs accuracy, one labelled point per artifact; the Pareto front as a step line.

    points: {"label", "x", "y", "kind": "cell" | "recommended" | "source"}.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH, 4.2))
    xs = [p["x"] for p in points]
    if xs and min(xs) > 0 and max(xs) / min(xs) > 8:
        ax.set_xscale("log")
    front = pareto_front(points)
    if len(front) > 1:
        ax.step([p["x"] for p in front], [p["y"] for p in front], where="pre", color=MID, linestyle=(0, (4, 3)),
                linewidth=1.1, label="Pareto front")
    marks = {"cell": dict(marker="o", markersize=8, markerfacecolor="white", markeredgecolor=INK),
             "source": dict(marker="D", markersize=7, markerfacecolor=LIGHT, markeredgecolor=INK),
             "recommended": dict(marker="*", markersize=18, color=INK, markeredgecolor="white")}
    names = {"cell": "artifact", "source": "source model", "recommended": "recommended"}
    seen = set()
    for i, p in enumerate(sorted(points, key=lambda p: p["x"])):
        kind = p.get("kind", "cell")
        ax.plot(p["x"], p["y"], linestyle="none", zorder=4, label=None if kind in seen else names[kind],
                **marks[kind])
        seen.add(kind)
        right_end = len(points) > 1 and p["x"] == max(xs)
        ax.annotate(p["label"], (p["x"], p["y"]), xytext=(-10 if right_end else 10, 6 if i % 2 == 0 else -12),
                    textcoords="offset points", ha="right" if right_end else "left", fontsize=9,
                    fontweight="bold" if kind == "recommended" else "normal")
    if budget is not None:
        ax.axhline(budget, color=INK, linestyle=(0, (1, 2)), linewidth=1.1)
        ax.annotate(f"accuracy budget {budget:g}", (0.01, budget), xycoords=("axes fraction", "data"),
                    xytext=(0, 3), textcoords="offset points", fontsize=8)
    ys = [p["y"] for p in points] + ([budget] if budget is not None else [])
    span = (max(ys) - min(ys)) or abs(max(ys)) * 0.01 or 0.01
    ax.set_ylim(min(ys) - span * 0.25, max(ys) + span * 0.3)
    ax.margins(x=0.18)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.legend(loc="best")
    return _svg(fig, "speed against accuracy")


@_styled
def batch_sweep(points: list[dict], budget_ms: float | None, best_batch: int | None) -> str:
    """Throughput and p99 against batch size side by side; the latency budget and the chosen batch marked."""
    pts = sorted(points, key=lambda p: p["batch"])
    batches = [p["batch"] for p in pts]
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(WIDTH, 3.4))
    left.plot(batches, [p["throughput_per_s"] for p in pts], marker="o", color=INK, markerfacecolor="white")
    right.plot(batches, [p["p99_ms"] for p in pts], marker="s", color=INK, linestyle=(0, (5, 3)),
               markerfacecolor="white", label="p99")
    right.plot(batches, [p["p50_ms"] for p in pts], marker="^", color=MID, linestyle=":", markerfacecolor="white",
               label="p50")
    if budget_ms is not None:
        right.axhline(budget_ms, color=INK, linestyle=(0, (1, 2)), linewidth=1.1)
        right.annotate(f"budget {budget_ms:g} ms", (batches[0], budget_ms), xytext=(0, 3),
                       textcoords="offset points", fontsize=8)
    chosen = next((p for p in pts if p["batch"] == best_batch), None)
    if chosen:
        for ax, key in ((left, "throughput_per_s"), (right, "p99_ms")):
            ax.plot(chosen["batch"], chosen[key], marker="*", markersize=16, color=INK, markeredgecolor="white",
                    linestyle="none", zorder=5)
            ax.annotate(f"chosen batch {best_batch}", (chosen["batch"], chosen[key]), xytext=(-6, 8),
                        textcoords="offset points", fontsize=8, ha="right", fontweight="bold")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.set_xlabel("batch size (samples)")
    left.set_ylabel("throughput (samples/s)")
    right.set_ylabel("latency per batch (ms)")
    right.legend(loc="upper left")
    fig.tight_layout(w_pad=2.5)
    return _svg(fig, "throughput and latency against batch size")


@_styled
def fallback_curve(points: list[dict], chosen: int | None, target: float = 0.5) -> str:
    """The fallback search's trade-off: units kept in float against the distance to the budget on the tuning split
    (1 = the budget's limit; a point passes at or below `target`, the margin left for unseen data)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH, 3.6))
    for passed, mark in ((False, dict(marker="o", markerfacecolor="white", markeredgecolor=INK)),
                         (True, dict(marker="o", color=INK))):
        chosen_points = [p for p in points if p["passed"] is passed]
        ax.plot([p["kept"] for p in chosen_points], [p["distance"] for p in chosen_points], linestyle="none",
                markersize=7, label="within budget" if passed else "over budget", **mark)
    best = next((p for p in points if p["kept"] == chosen and p["passed"]), None)
    if best is not None:
        ax.plot(best["kept"], best["distance"], marker="*", markersize=18, color=INK, markeredgecolor="white",
                linestyle="none", label="shipped point", zorder=5)
    for level, text in ((1.0, "budget limit"), (target, "tuning-split target (margin for unseen data)")):
        ax.axhline(level, color=INK if level == 1.0 else MID, linestyle=(0, (1, 2)), linewidth=1.1)
        ax.annotate(text, (0.01, level), xycoords=("axes fraction", "data"), xytext=(0, 3),
                    textcoords="offset points", fontsize=8)
    if max(p["distance"] for p in points) > 20:
        ax.set_yscale("log")
    ax.set_xlabel("units kept in float")
    ax.set_ylabel("distance to the reference (1 = budget)")
    ax.legend(loc="best")
    return _svg(fig, "fallback search: units kept in float against accuracy")
