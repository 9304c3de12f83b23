"""report.md: the report for people: what was built, how fast, how far from the source model."""

from __future__ import annotations


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
        lines += ["", f"Accuracy gate: {verdict}.", ""]
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
             + (f"; Q/DQ on {graph['quantized_ops']}" if graph.get("quantized_ops") else ""),
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
