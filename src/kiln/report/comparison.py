"""comparison.md: the matrix of a multi-target export for people, in the spirit of `yolo benchmark`."""

from __future__ import annotations


def _num(value, fmt: str = ".3g") -> str:
    return "–" if value is None else format(value, fmt)


def _status(cell: dict) -> str:
    return "ok" if cell["status"] == "ok" else f"{cell['status']}: {cell['reason']}"


def precision_label(cell: dict) -> str:
    """The cell's precision, and for a searched mixed-precision cell (auto) what it shipped."""
    mixed = cell.get("mixed_precision")
    if not mixed:
        return cell["precision"]
    shipped = {"mixed": f"mixed, {mixed['kept_fp32']} of {mixed['units']} units float",
               "low": "all units low precision", "high": "all float: mixed was not faster",
               "dynamic": "dynamic int8",
               "dynamic-mixed": f"dynamic int8, {mixed['kept_fp32']} of {mixed['units']} nodes float"}.get(mixed["shipped"], mixed["shipped"])
    return f"{cell['precision']} ({shipped})"


def _accuracy(cell: dict) -> str:
    if cell["accuracy"] is None:
        return "–"
    if cell["accuracy_metric"] == "top1_agreement":
        return f"top-1 {cell['accuracy'] * 100:.1f}%"
    return f"cos {cell['accuracy']:.4f}"


def render_comparison_markdown(comparison: dict) -> str:
    src = comparison.get("source_bench")
    lines = [f"# kiln comparison: {comparison['model']['name']}", ""]
    if src:
        lines += [f"Source model ({src['runtime']}, {src['threads']} threads): p50 {src['latency_ms']['p50']:.3g} ms, "
                  f"{src['throughput_per_s']:.1f}/s, measured in the same process.", ""]
    lines += ["| | target | precision | status | size MB | accuracy | p50 ms | p99 ms | throughput /s | speedup | "
              "executes in | $ / 1M |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in comparison["cells"]:
        mark = "★" if c["recommended"] else ""
        size = None if c["size_mib"] is None else c["size_mib"] * 2**20 / 1e6
        lines.append(f"| {mark} | {c['target']} | {precision_label(c)} | {_status(c)} | {_num(size)} | {_accuracy(c)} | "
                     f"{_num(c['p50_ms'])} | {_num(c['p99_ms'])} | {_num(c['throughput_per_s'], '.1f')} | "
                     f"{_num(c['speedup_vs_source'], '.2f')}{'x' if c['speedup_vs_source'] else ''} | "
                     f"{c['execution_precision'] or '–'} | {_num(c['cost_per_million'], '.3g')} |")
    rec = comparison.get("recommendation")
    budget = comparison["budget"]
    lines.append("")
    rules = ([f"cosine ≥ {budget['min_cosine']}"] if budget.get("min_cosine") is not None else []) + (
        [f"top-1 disagreement ≤ {budget['max_top1_disagreement']}"]
        if budget.get("max_top1_disagreement") is not None else [])
    lines.append(f"Accuracy budget ({'given' if budget['given'] else 'default'}): {', '.join(rules)}.")
    untimed = ", ".join(c["target"] + " " + c["precision"] for c in comparison["cells"]
                        if c["meets_budget"] and c["p50_ms"] is None)
    lines.append(f"**Recommendation: {rec['target']} {rec['precision']}**, {rec['reason']}." if rec
                 else f"**No recommendation:** the cells within the accuracy budget were not timed ({untimed}): "
                      "time them on their device." if untimed
                 else "**No recommendation:** no cell was built within the accuracy budget.")
    if comparison.get("source_cost_per_million") is not None:
        lines.append(f"The source model costs {comparison['source_cost_per_million']:.3g} per 1M inferences at "
                     f"{comparison['price_per_hour']}/hour.")
    return "\n".join(lines) + "\n"
