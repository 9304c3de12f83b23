"""report.md of a language-model artifact (report.json has schema kiln.llm-report/1)."""

from __future__ import annotations

LLM_REPORT_SCHEMA = "kiln.llm-report/1"


def _speed_rows(report: dict) -> list[str]:
    rows = []
    for label, block in (("artifact", report.get("bench")), ("torch eager (source)", report.get("source_bench"))):
        if block:
            rows.append(f"| {label} | {block['ttft_ms']:.1f} | {block['decode_tokens_per_s']:.1f} | "
                        f"{block['token_latency_ms']['p50']:.2f} / {block['token_latency_ms']['p99']:.2f} | "
                        f"{block['resident_mib']:.0f} |")
    return rows


def render_llm_markdown(report: dict) -> str:
    f, w = report["fidelity"], report["weights"]
    s = report["settings"]
    lines = [f"# {report['model']['name']} → {report['target']['name']} ({report['precision']})", "",
             f"Status: **{report['status']}**. {report['model']['model_type']}, "
             f"{report['model']['parameters'] / 1e6:.1f} M parameters; batch 1, {s['threads']} threads.", "",
             "## Speed", ""]
    if report.get("bench"):
        lines += [f"Prompt {s['prompt_tokens']} tokens, then {s['new_tokens']} new tokens, greedy; median of "
                  f"{s['rounds']} generations.", "",
                  "| | time to first token ms | decode tokens/s | per-token ms p50 / p99 | resident MiB |",
                  "|---|---|---|---|---|", *_speed_rows(report)]
        if report.get("decode_speedup_vs_source"):
            lines += ["", f"Decode speed-up vs torch eager: **{report['decode_speedup_vs_source']:.2f}x**"]
    else:
        lines.append(f"Not measured: {report.get('bench_skipped')}")
    lines += ["", "## Weights", "",
              f"{w['bytes'] / 2**20:.1f} MiB, {w['ratio_to_fp32']:.1%} of the fp32 weights "
              f"({w['fp32_bytes'] / 2**20:.1f} MiB).", "",
              "## Fidelity against the torch model", "",
              "| measure | value |", "|---|---|",
              f"| greedy agreement (tokens equal until the first divergence) | {f['greedy_agreement']:.1%} "
              f"(worst prompt {f['greedy_agreement_min']:.1%}; {f['greedy_identical']}/{f['prompts']} identical over "
              f"{f['new_tokens']} tokens) |",
              f"| next-token KL(torch ‖ artifact), mean / max | {f['next_token_kl_mean']:.4f} / "
              f"{f['next_token_kl_max']:.4f} nats |",
              f"| next-token logits cosine, mean / min | {f['logits_cosine_mean']:.5f} / {f['logits_cosine_min']:.5f} |",
              f"| perplexity, torch → artifact ({f['perplexity_tokens']} tokens) | {f['perplexity_source']:.3f} → "
              f"{f['perplexity']:.3f} ({f['perplexity_delta']:+.3f}) |"]
    gate = report["gate"]
    if gate["checked"]:
        lines += ["", "Gate: " + ("passed" if gate["passed"] else "FAILED: " + "; ".join(gate["failures"]))]
    compile_ = report["compile"]
    lines += ["", "## What was done", "",
              f"- Export: {report['export']['exporter']}"
              + (f", opset {report['export']['opset']}" if report["export"]["opset"] else "") + ", one graph with the KV "
              "cache (past length 0 for the prompt); checked against torch: " +
              "; ".join(f"{c['inputs']} max rel error {c['max_rel_error']:.2g}" for c in report["export"]["checks"]),
              "- Compile: " + ", ".join(f"{k} {v}" for k, v in compile_.items() if k not in ("seconds", "nodes"))]
    lines += [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"
