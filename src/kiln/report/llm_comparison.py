"""comparison.md and report.html of a language model's matrix: quality against the torch model and decode speed,
cell by cell, with the recommendation."""

from __future__ import annotations

from kiln.llm.matrix import TIE, budget_rules


def _num(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _rows(comparison: dict) -> tuple[list[str], list[list[str]]]:
    headers = ["", "target", "precision", "status", "weights", "size MB", "perplexity", "vs torch", "KL",
               "greedy agreement", "decode tokens/s", "interleaved tokens/s", "TTFT ms", "vs torch decode"]
    rows = []
    for c in comparison["cells"]:
        size = None if c["size_mib"] is None else c["size_mib"] * 2**20 / 1e6
        status = {"ok": "ok" if c["meets_budget"] else "ok, outside the budget",
                  "rejected": f"rejected by your gate (set aside in {c['out'].rsplit('/', 1)[-1]}.rejected)"}.get(
            c["status"], f"{c['status']}: {(c['reason'] or '').replace('|', '/')}")
        speedup = c["decode_speedup_vs_source"]
        rows.append(["★" if c["recommended"] else "", c["target"], c["precision"], status, c["weights"] or "–",
                     _num(size, ".1f"), _num(c["perplexity"], ".3f"), _num(c["perplexity_increase"], "+.1%"),
                     _num(c["next_token_kl"], ".3f"), _num(c["greedy_agreement"], ".1%"),
                     _num(c["decode_tokens_per_s"], ".1f"), _num(c["ranked_tokens_per_s"], ".1f"),
                     _num(c["ttft_ms"], ".1f"),
                     "–" if speedup is None else f"{speedup:.2f}x"])
    return headers, rows


def _source_line(comparison: dict) -> str:
    src = comparison.get("source")
    if not src:
        return "The torch model was not measured: no cell was built."
    speed = (f", decodes {src['decode_tokens_per_s']:.1f} tokens/s" if src.get("decode_tokens_per_s") else "")
    return (f"Torch model ({src['threads']} threads): perplexity {src['perplexity']:.3f} over "
            f"{src['perplexity_tokens']} tokens of {src['text']}{speed}; every cell is measured against it, in the "
            "same process.")


def _verdict(comparison: dict) -> list[str]:
    budget, rec, ranking = comparison["budget"], comparison.get("recommendation"), comparison.get("ranking")
    lines = [f"Budget ({'given' if budget['given'] else 'default'}): {budget_rules(budget)}."]
    if ranking:
        lines.append(f"The {len(ranking['cells'])} cells within it were decoded again after every cell was built, "
                     f"round-robin ({ranking['rounds']} rounds of {ranking['new_tokens']} tokens): the interleaved "
                     f"column, which the recommendation ranks by; speeds within {TIE:.0%} are a tie, won by the lower "
                     "perplexity.")
    return lines + [f"**Recommendation: {rec['target']} {rec['precision']}**, {rec['reason']}." if rec
                    else "**No recommendation:** no cell was built within the budget."]


def render_llm_comparison_markdown(comparison: dict) -> str:
    headers, rows = _rows(comparison)
    lines = [f"# kiln comparison: {comparison['model']['name']} (language model)", "", _source_line(comparison), "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines + [""] + _verdict(comparison)) + "\n"


def render_llm_comparison_html(comparison: dict) -> str:
    from kiln.report import plots
    from kiln.report.html import _page, _plot, _section, _table, e

    headers, rows = _rows(comparison)
    ok = [c for c in comparison["cells"] if c["status"] == "ok" and c["decode_tokens_per_s"]
          and c["perplexity_increase"] is not None]
    points = [{"label": f"{c['target']} {c['precision']}", "x": c["ranked_tokens_per_s"] or c["decode_tokens_per_s"],
               "y": -100 * c["perplexity_increase"], "kind": "recommended" if c["recommended"] else "cell"}
              for c in ok]
    budget = comparison["budget"]["max_perplexity_increase"]
    plot = (_plot(plots.speed_accuracy, points, "decode tokens/s", "perplexity change vs torch (%, higher is better)",
                  None if budget is None else -100 * budget)
            if points else '<p class="missing">Not measured: no cell was built and timed.</p>')
    summary = "".join(f"<p>{e(line.replace('**', ''))}</p>" for line in [_source_line(comparison)]
                      + _verdict(comparison))
    sections = [_section("summary", "Summary", summary),
                _section("matrix", "Targets × precisions", _table(headers, rows, num=(5, 6, 7, 8, 9, 10, 11, 12, 13))),
                _section("scatter", "Decode speed against quality", plot)]
    return _page(f"kiln comparison: {comparison['model']['name']}",
                 f"{len(comparison['cells'])} cells · {comparison['schema_version']}", sections)
