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
    llama = (report.get("bench") or {}).get("llama_bench")
    if llama and "generation" in llama:
        prompt = llama.get("prompt") or {}
        rows.append(f"| llama-bench (llama.cpp's own loop, {llama['repetitions']} runs) | "
                    + (f"prompt {prompt['tokens_per_s']:.0f} tokens/s" if prompt else "–")
                    + f" | {llama['generation']['tokens_per_s']:.1f} | – | – |")
    return rows


def _gguf_lines(compile_: dict) -> list[str]:
    """The GGUF file: llama-quantize's type, the mix of tensor types it chose, the importance matrix."""
    g = compile_["gguf"]
    mix = ", ".join(f"{n} {t}" for t, n in sorted(g["tensor_types"].items(), key=lambda kv: -kv[1]))
    lines = [f"- Compile: {compile_['tool']}: {g['bits_per_weight']:.2f} bits per weight; tensors {mix}"]
    if g.get("fallback_tensors"):
        lines.append(f"- {g['fallback_tensors']} tensors fell back to another type: their rows are not a multiple of "
                     f"the k-quant block (256)")
    if compile_.get("imatrix"):
        m = compile_["imatrix"]
        lines.append(f"- Importance matrix: llama-imatrix over the calibration text, {m['chunks']} chunks of "
                     f"{m['context']} tokens ({m['seconds']:.1f} s"
                     f"{', made once for the matrix' if m.get('reused') else ''}); shipped as imatrix.gguf")
    elif compile_.get("imatrix_skipped"):
        lines.append(f"- Importance matrix: none ({compile_['imatrix_skipped']})")
    return lines


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
    gguf = "gguf" in compile_
    checks = "; ".join(f"{c['inputs']} max rel error {c['max_rel_error']:.2g}" for c in report["export"]["checks"])
    what = (f"a float GGUF master ({report['export']['master']['outtype']}) run by libllama" if gguf else
            "one graph with the KV cache (past length 0 for the prompt)")
    lines += ["", "## What was done", "",
              f"- Export: {report['export']['exporter']}"
              + (f", opset {report['export']['opset']}" if report["export"]["opset"] else "")
              + f", {what}; checked against torch: {checks}"]
    if gguf:
        lines += _gguf_lines(compile_)
    else:
        lines.append("- Compile: " + ", ".join(f"{k} {v}" for k, v in compile_.items() if k not in ("seconds", "nodes")))
    lines += [f"- {note}" for note in report["notes"]]
    if report.get("serving"):
        lines += ["", "## Serving", ""] + _serving_lines(report["serving"])
    return "\n".join(lines) + "\n"


def _serving_lines(served: dict) -> list[str]:
    """Which engine loads the artifact as it is, what the export saw it do, and the lines that serve it."""
    engine = served["engine"]
    if not served["loads"]:
        verdict = "does not load it" if served["loads"] is False else "was not tried"
        return [f"{engine} {verdict}: {served.get('reason')}."]
    settings = ", ".join(f'{k}="{v}"' for k, v in served.get("settings", {}).items())
    lines = [f"{engine} {served['version']} loads this folder as it is: {served['tokens_identical']} of the first "
             f"{served['tokens_checked']} greedy tokens equal the artifact's own generator"
             + (f" with {settings}" if settings else "") + ".",
             "It serves: " + "; ".join(served["features"]) + "."]
    if served.get("tokenizer_ir") is False:
        lines.append(f"No tokenizer IR: {served.get('tokenizer_reason')}.")
    from kiln.llm.serving_bench import render

    lines += render(served)
    if served.get("measure_reason"):
        lines += ["", f"Serving not measured: {served['measure_reason']}."]
    if engine == "openvino-genai":
        code = ["import openvino_genai as ov_genai", "",
                f'pipe = ov_genai.LLMPipeline("ARTIFACT", "CPU", {", ".join(f"{k}={v!r}" for k, v in served.get("settings", {}).items())})',
                'print(pipe.generate("The capital of France is", max_new_tokens=32))']
    else:
        code = ["import onnxruntime_genai as og", "", 'model = og.Model("ARTIFACT")',
                "tokenizer = og.Tokenizer(model)", "params = og.GeneratorParams(model)",
                "params.set_search_options(max_length=64)", "generator = og.Generator(model, params)",
                'generator.append_tokens(tokenizer.encode("The capital of France is"))',
                "while not generator.is_done():", "    generator.generate_next_token()",
                "print(tokenizer.decode(generator.get_sequence(0)))"]
    return lines + ["", "```python", *code, "```"]
