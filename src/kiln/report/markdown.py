"""report.md: the report for people: what was built, how fast, how far from the source model."""

from __future__ import annotations

from kiln.report.mixed_precision import island_lines, markdown_lines


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def render(report: dict) -> str:
    lines = [f"# kiln report: {report['model']['name']} → {report['target']['name']} ({report['precision']})", ""]
    for note in report.get("notes", []):
        lines.append(f"> **Note:** {note}")
    if report.get("notes"):
        lines.append("")
    bench = report.get("bench")
    lines += ["## Speed", ""]
    if bench:
        lat = bench["latency_ms"]
        s = report["settings"]
        lines += [f"Batch {bench['batch']}, shapes {bench['input_shapes']}, {s['threads']} threads, "
                  f"{bench['runs']} timed runs after {bench['warmup_runs']} warm-up.", "",
                  "| p50 ms | p90 ms | p95 ms | p99 ms | mean ms | std ms | min ms | max ms | throughput /s |",
                  "|---|---|---|---|---|---|---|---|---|",
                  "| " + " | ".join(_fmt(lat[k]) for k in ("p50", "p90", "p95", "p99", "mean", "std", "min", "max"))
                  + f" | {_fmt(bench['throughput_per_s'])} |", "",
                  (f"Execution precision reported by the runtime: {report['execution_precision']}. "
                   if report.get("execution_precision") else "")
                  + f"Load {bench['load_ms']:.1f} ms, first inference {bench['first_inference_ms']:.1f} ms, "
                  f"memory +{bench['memory_mib']['rss_increase_from_load']:.0f} MiB.", ""]
        tm = bench.get("throughput_mode")
        if tm:
            lines += [f"Throughput with OpenVINO's THROUGHPUT hint: **{tm['throughput_per_s']:.1f}/s** "
                      f"({tm['streams']} streams, {tm['infer_requests']} async requests, {tm['threads']} threads, "
                      f"executes in {tm['execution_precision']}"
                      + (f", on {tm['stand_in']}" if tm.get("stand_in") else "") + ").", ""]
    else:
        lines += [f"Not measured: {report.get('bench_skipped', 'no measurement')}", ""]
    lines += _analysis_lines(report)
    cache = (report.get("compile") or {}).get("compiled_cache")
    if cache:
        lines += ([f"Compiled-model cache shipped for {cache['device']}: load {cache['compile_ms_cold']:.0f} ms "
                   f"cold, {cache['compile_ms_from_cache']:.0f} ms from the cache (valid for {cache['valid_for']}).", ""]
                  if cache["written"] else [f"No compiled-model cache: {cache['reason']}.", ""])
    acc = report.get("accuracy") or {}
    lines += ["## Accuracy against the source model", ""]
    if acc:
        lines.append(f"Data: {acc['data']['description']}.")
        if not acc.get("meaningful", True):
            lines.append("**These figures are not meaningful: the data is synthetic.**")
        lines += ["", "| output | max abs err | max rel err | cosine min | cosine mean | top-1 agree | top-1 agree (confident) | top-5 agree |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, m in acc["outputs"].items():
            lines.append(f"| {name} | {_fmt(m.get('max_abs_error'))} | {_fmt(m.get('max_rel_error'))} | "
                         f"{_fmt(m.get('cosine_min'), 6)} | {_fmt(m.get('cosine_mean'), 6)} | "
                         f"{_fmt(m.get('top1_agreement'))} | {_fmt(m.get('top1_agreement_confident'))} | "
                         f"{_fmt(m.get('top5_agreement'))} |")
        gate = acc["gate"]
        verdict = "not checked" if not gate["checked"] else "passed" if gate["passed"] else "FAILED: " + "; ".join(gate["failures"])
        lines += ["", f"Accuracy gate: {verdict}.", ""] + _rounded_lines(acc.get("fp16_rounded"))
    lines += island_lines(report.get("compile", {})) + markdown_lines(report.get("compile", {}))
    lines += ["## Stages", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in report["stages_seconds"].items()]
    comp = report.get("compile", {})
    lines += ["", "## What was done", "",
              f"- Source: {report['model']['source_kind']} `{report['model']['name']}`",
              f"- Exporter: {report['export']['exporter']} (opset {report['export']['opset']})"]
    fusion = comp.get("fusion") or {}
    if fusion:
        lines.append(f"- Transformer fusion: {'applied' if fusion.get('applied') else 'not applied'} "
                     f"({fusion.get('reason', '')}) {fusion.get('fused_ops', '')}")
    if comp.get("quantization"):
        q = comp["quantization"]
        lines.append("- Quantization: " + ", ".join(f"{k} {v}" for k, v in q.items() if v not in (None, [], "")))
    lines += _tensorrt_lines(comp)
    lines.append(f"- Size: {report['size']['model_mib']:.2f} MiB (model files)")
    return "\n".join(lines) + "\n"


def _tensorrt_lines(comp: dict) -> list[str]:
    """Graph precision, build kit and engines of an NVIDIA artifact."""
    graph, engine = comp.get("graph_precision"), comp.get("engine")
    if graph is None or engine is None:
        return []
    lines = [f"- Graph precision: {graph.get('pass')}"
             + (f"; kept fp32: {', '.join(graph['kept_fp32_ops'])}" if graph.get("kept_fp32_ops") else "")
             + (f"; Q/DQ on {graph['quantized_ops']}" if graph.get("quantized_ops") else "")
             + (f"; the rest in fp16 (fp32: {', '.join(graph['rest']['kept_fp32_ops']) or 'none'})"
                if "kept_fp32_ops" in graph.get("rest", {}) else "")
             + (f"; the rest stays fp32: {graph['rest']['why']}" if "why" in graph.get("rest", {}) else ""),
             "- Build kit: `tensorrt/model.onnx`, `build.json`, `build_engine.py`, `trtexec.txt` "
             "(`kiln build-engine ARTIFACT` on the device)"]
    if engine.get("built"):
        for e in engine["engines"]:
            lines.append(f"- Engine `{e['file']}` for SM{str(e['compute_capability']).replace('.', '')}: "
                         f"{e['bytes'] / 2**20:.1f} MiB, built in {e['build_seconds']:.2f} s with {engine['builder']} "
                         f"{engine['tensorrt_version']} (not run here: engine latency is measured only on the GPU)")
    else:
        lines.append(f"- No engine built: {engine.get('reason')}")
    return lines


def _skipped(block) -> str | None:
    if block is None:
        return "not run (--no-analysis, or nothing was timed)"
    return block.get("skipped")


def _analysis_lines(report: dict) -> list[str]:
    """Source baseline, where the time goes, roofline verdict, batch sweep and cost."""
    lines: list[str] = []
    src = report.get("source_bench")
    if src:
        speedup = report.get("speedup_vs_source")
        # a matrix cell whose target this host cannot time shares the source timing of the cells it could
        verdict = f"this artifact is **{speedup:.2f}x** faster at p50" if speedup is not None else \
            "this artifact was not timed here, so there is no speedup to give"
        lines += [f"Source model ({src['runtime']}, {src['threads']} threads, same process): p50 "
                  f"{src['latency_ms']['p50']:.3g} ms, {src['throughput_per_s']:.1f}/s; {verdict}.", ""]
    lines += ["## Where the time goes", ""]
    profile = report.get("profile")
    if _skipped(profile):
        lines += [f"Not measured: {_skipped(profile)}.", ""]
    else:
        lines += [f"{profile['method']}: {profile['node_ms']:.3g} ms in {profile['nodes']} kernels per inference, "
                  f"{profile['overhead_ms']:.3g} ms between them.", "",
                  "| op type | nodes | ms | share | GFLOP | MB moved |", "|---|---|---|---|---|---|"]
        for row in profile["by_op_type"][:10]:
            lines.append(f"| {row['op_type']} | {row['count']} | {row['ms']:.3f} | {row['share']:.1%} | "
                         f"{row['flops'] / 1e9:.3g} | {row['bytes'] / 1e6:.3g} |")
        lines += ["", "| top node | op | ms | share | FLOP/byte | bound | efficiency |", "|---|---|---|---|---|---|---|"]
        for n in profile["top_nodes"][:10]:
            eff = "–" if n.get("efficiency") is None else f"{n['efficiency']:.0%}"
            lines.append(f"| `{n['name'][-60:]}` | {n['op_type']} | {n['ms']:.3f} | {n['share']:.1%} | "
                         f"{n['intensity']:.3g} | {n.get('bound', '–')} | {eff} |")
        lines.append("")
    roof = report.get("roofline")
    if roof and not roof.get("skipped"):
        m, p, split = roof["model"], roof["peaks"], roof["time_split"]
        int8 = f", int8 {p['int8_gops']:.0f} GOP/s" if p.get("int8_gops") else ""
        bf16 = f", bf16 {p['bf16_gflops']:.0f} GFLOP/s" if p.get("bf16_gflops") else ""
        lines += [f"Host peaks ({p['runtime']}, {p['threads']} threads{', cached' if p.get('cached') else ''}): "
                  f"fp32 {p['fp32_gflops']:.0f} GFLOP/s{int8}{bf16}, memory {p['memory_gbps']:.1f} GB/s.",
                  f"The model: {m['flops'] / 1e9:.3g} GFLOP and {m['bytes'] / 1e6:.3g} MB moved per inference "
                  f"({m['intensity']:.3g} FLOP/byte; ridge point {m['ridge_intensity']:.3g}); roofline bound "
                  f"{m['bound_ms']:.3g} ms against {m['measured_ms']:.3g} ms measured: **{m['efficiency']:.0%} "
                  f"efficiency**. Time: compute {split['compute_share']:.0%}, memory {split['memory_share']:.0%}, "
                  f"overhead {split['overhead_share']:.0%}.", "", f"**Verdict: {roof['verdict']}.**", ""]
        lines += [f"- {a}" for a in roof["advice"]] + [""]
        if roof.get("peaks_note"):
            lines += [f"> **Note:** {roof['peaks_note']}", ""]
    sweep = report.get("batch_sweep")
    lines += ["## Batch sweep", ""]
    if _skipped(sweep):
        lines += [f"Not measured: {_skipped(sweep)}.", ""]
    else:
        lines += ["| batch | p50 ms | p99 ms | throughput /s |", "|---|---|---|---|"]
        lines += [f"| {pt['batch']} | {pt['p50_ms']:.3g} | {pt['p99_ms']:.3g} | {pt['throughput_per_s']:.1f} |"
                  for pt in sweep["points"]]
        budget = sweep.get("latency_budget_ms")
        if budget:
            best = sweep.get("best_batch")
            lines += ["", f"Largest-throughput batch within the {budget:g} ms p99 budget: "
                          + (f"**{best}**." if best else "none (batch 1 already exceeds it).")]
        lines.append("")
    cost = report.get("cost")
    if cost:
        src_cost = cost.get("source_per_million")
        lines += ["## Cost", "", f"At {cost['price_per_hour']:g}/hour: **{cost['artifact_per_million']:.4g} per million "
                  f"inferences** at batch 1" + (f" (source model: {src_cost:.4g})" if src_cost else "")
                  + (f"; {cost['best_batch_per_million']:.4g} at the sweep's best batch" if cost.get("best_batch_per_million")
                     else "") + ".", ""]
    return lines


def _rounded_lines(rounded: dict | None) -> list[str]:
    text = rounded_summary(rounded)
    return [text, ""] if text else []


def rounded_summary(rounded: dict | None) -> str | None:
    """The second fp16 reading beside the check (validate.rounded_reading), one sentence: the same outputs with every
    fp16 tensor rounded."""
    if not rounded:
        return None
    if "unavailable" in rounded:
        return f"With every fp16 tensor rounded: not measured ({rounded['unavailable']})."
    parts = []
    for name, m in rounded["outputs"].items():
        figures = [f"cosine min {m['cosine_min']:.5f}" if m.get("cosine_min") is not None and
                   not m.get("one_value_per_sample") else None,
                   f"max rel err {m['max_rel_error']:.3g}" if m.get("one_value_per_sample") else None,
                   f"top-1 agree {m['top1_agreement']:.4f}" if m.get("top1_agreement") is not None else None]
        text = ", ".join(f for f in figures if f) or (f"exact match {m['exact_match']:.4f}" if "exact_match" in m else "–")
        parts.append(f"{name}: {text}")
    return f"With every fp16 tensor rounded where it is written ({rounded['note']}): " + "; ".join(parts) + "."
