"""The stages, in order: resolve, load (source and data), export, compile, validate, bench, package.

Each stage takes the previous stage's value. The artifact is assembled in a hidden sibling of the
output folder and renamed into place only when complete (and only when the accuracy gate passed).
"""

from __future__ import annotations

import gc
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kiln import __version__
from kiln.artifact.bundle import write_bundle
from kiln.artifact.reproducibility import reproducibility
from kiln.artifact import (MANIFEST_NAME, MANIFEST_SCHEMA, SIGNATURE_NAME, check_output_path, check_parents,
                           clean_leftovers, discard, file_entries, missing_parents, publish, staging_dir, write_json)
from kiln.backends import get_backend
from kiln.bench import measure
from kiln.bench.analysis import analyse, analysis_line, report_extras
from kiln.bench.source_baseline import measure_source
from kiln.calibration import Samples, load_samples, synthetic_samples
from kiln.config import ExportConfig, Plan
from kiln.errors import AccuracyGateError, KilnError, UsageError
from kiln.exporters import open_source
from kiln.exporters.graph import export_graph
from kiln.exporters.shapes import with_data_dims
from kiln.llm.source import language_model
from kiln.passes import calibration_ranges
from kiln.progress import Progress
from kiln.report import REPORT_SCHEMA, render
from kiln.report import plots
from kiln.report.html import render_html
from kiln.resolve import resolve
from kiln.exporters.module_digest import source_digest
from kiln.stage_cache import (StageCache, compile_key, derived_key, export_key, load_compiled, load_prepared,
                               open_cache, save_compiled, save_prepared)
from kiln.targets import detect_host, find_target
from kiln.toolchain import toolchain_versions
from kiln.validate import check_budget_can_judge, rounded_reading, validate

SYNTHETIC_EVAL_SAMPLES = 16
SYNTHETIC_CALIBRATION_SAMPLES = 32


@dataclass(frozen=True)
class Result:
    out: Path
    report: dict
    manifest: dict


@dataclass(frozen=True)
class Prepared:
    """What every plan for one source shares: the checked graph, the data, the source model's speed."""

    graph: Any
    evaluation: Samples
    calibration: dict  # "real" / "synthetic" -> Samples, loaded only if some plan needs it
    classifier: Any
    primary: tuple
    extra_files: dict
    source_info: Any
    example: dict
    source_bench: dict | None
    stages: StageCache = field(default_factory=lambda: StageCache(None, "not opened"))
    export_key: str | None = None  # the cache key every later stage's key derives from


def _calibration_kind(config: ExportConfig, plan: Plan) -> str | None:
    if config.calibration is not None and ((plan.quantization is not None and plan.quantization.mode != "weights")
                                           or plan.fallback is not None):
        return "real"
    return "synthetic" if plan.needs_calibration else None


def _data(config: ExportConfig, plans: list[Plan], context) -> tuple[Samples, dict, Any]:
    """Evaluation and calibration samples, and the context with its dynamic dims sized like the real data (so that
    synthetic samples, the export shape and the probe start from a shape the data proves the model runs)."""
    kinds = {_calibration_kind(config, plan) for plan in plans}
    calibration: dict = {}
    real_calibration = None
    # Loaded also where no plan quantizes: the export stage's key names this data, so its entry must hold it for a
    # later int8 run that hits the same key
    if config.calibration is not None:
        real_calibration = load_samples(config.calibration, context, "calibration")
        calibration["real"] = real_calibration
    evaluation = load_samples(config.evaluation, context, "evaluation") if config.evaluation else real_calibration
    context = with_data_dims(context, evaluation, real_calibration)
    if "synthetic" in kinds:
        calibration["synthetic"] = synthetic_samples(context, SYNTHETIC_CALIBRATION_SAMPLES, config.seed + 1)
    if evaluation is None:
        evaluation = synthetic_samples(context, SYNTHETIC_EVAL_SAMPLES, config.seed)
    return evaluation, calibration, context


def run(config: ExportConfig, *, module: Any = None, example_inputs: Any = None,
        progress: Progress | None = None) -> Result:
    progress = progress or Progress(enabled=False)
    started = time.perf_counter()
    decoder = language_model(config.source, config.task, config.trust_remote_code) if module is None else None
    if decoder is not None:
        from kiln.llm.pipeline import run_llm

        return run_llm(config, *decoder, progress, started)
    if config.llm.draft is not None:
        raise UsageError("--draft is for language models (a decoder's speculative-decoding draft)",
                         hint="drop --draft")
    host = detect_host()
    with progress.stage("resolve") as st:
        plan, backend = resolve_plan(config, host)
        check_output_path(config.out)
        check_output_path(rejected_path(config.out))
        clean_leftovers(config.out)
        _check_delivery(config)
        st.result = f"{plan.target}, {plan.precision}, {plan.threads} threads"
    created = missing_parents(config.out)
    staged = staging_dir(config.out)
    try:
        prepared = prepare(config, [plan], staged / ".work", module, example_inputs, progress)
        return build(config, plan, backend, host, staged, prepared, progress, started)
    except BaseException:
        discard(staged, created)
        raise


def _check_delivery(config: ExportConfig) -> None:
    """A bad signing key or bundle path fails before any work, not after minutes of it."""
    if config.sign_key is not None:
        from kiln.artifact.signing import load_private_key

        load_private_key(config.sign_key)
    if config.bundle is not None:
        check_parents(config.bundle, "bundle path")
        if config.bundle.is_dir():
            raise UsageError(f"bundle path {config.bundle} is a folder", hint="give a file path ending in .tar.gz")
        inputs = [Path(config.source), config.sign_key] + [d.path for d in (config.calibration, config.evaluation) if d]
        bundle = config.bundle.resolve()
        for path in (p.resolve() for p in inputs if p is not None and p.exists()):
            if bundle == path or path in bundle.parents:
                raise UsageError(f"bundle path {config.bundle} would overwrite an input ({path.name})",
                                 hint="write the bundle beside the artifact, e.g. OUT.tar.gz")
        if config.bundle.is_file() and config.bundle.read_bytes()[:2] != b"\x1f\x8b":
            raise UsageError(f"bundle path {config.bundle} exists and is not a bundle",
                             hint="kiln replaces only its own .tar.gz bundles; choose another path")
        if config.bundle.resolve() == config.out.resolve() or config.out.resolve() in config.bundle.resolve().parents:
            raise UsageError(f"bundle path {config.bundle} is inside the artifact folder",
                             hint="write the bundle beside the artifact, e.g. OUT.tar.gz")
        check_output_path(config.bundle.parent / ".kiln-bundle-probe")
        clean_leftovers(config.bundle)


def resolve_plan(config: ExportConfig, host, check_environment: bool = True) -> tuple[Plan, Any]:
    """The plan and its backend, or the error that says why this target cannot do it (before any work).
    `check_environment=False` leaves the installed-packages check to the machine that builds the cell (a farm's
    driver need not have OpenVINO for its nodes to build OpenVINO cells)."""
    plan = resolve(config, host)
    backend = get_backend(plan.backend)
    if check_environment:
        backend.check_environment(find_target(config.target))
    return plan, backend


def rejected_path(out: Path) -> Path:
    """Where an artifact that failed its accuracy gate goes, for inspection: never at `out` itself."""
    return out.with_name(out.name + ".rejected")


def prepare(config: ExportConfig, plans: list[Plan], work: Path, module, example_inputs, progress) -> Prepared:
    """Load the source and the data, export and check the graph, and time the source model: once for all plans.

    Each of these is reused from the stage cache when its inputs are unchanged (see kiln.stage_cache)."""
    stages, fingerprint = open_cache(config, module)
    opened: dict = {}
    opening = 0.0
    if stages.on and fingerprint is None:  # a Python source: its fingerprint is the loaded module's
        with progress.stage("load") as st:
            opened["source"] = open_source(config, module, example_inputs)
            fingerprint = source_digest(opened["source"], example_inputs, stages.cache.root / "hashes")
            st.result = f"{opened['source'].info.kind}, fingerprinted for the stage cache"
        opening = progress.timings["load"]
        if fingerprint is None:
            stages = StageCache(None, "the source is a Python object kiln cannot fingerprint (a torch.export program "
                                      "object, a class without a source file, tensors without plain bytes)")
    synthetic = any(_calibration_kind(config, plan) == "synthetic" for plan in plans)
    key = export_key(stages, config, fingerprint, synthetic)

    def compute() -> Prepared:
        with progress.stage("load") as st:
            source = opened["source"] = opened.get("source") or open_source(config, module, example_inputs)
            evaluation, calibration, context = _data(config, plans, source.data_context(config))
            st.result = f"{source.info.kind}; eval {evaluation.kind} x{len(evaluation)}" + "".join(
                f"; calibration {c.kind} x{len(c)}" for c in calibration.values())
        with progress.stage("export") as st:
            graph = export_graph(source, config, context, work / "export", evaluation, tuple(calibration.values()))
            worst = max((r.get("max_abs_error", 0.0) for c in graph.check["checks"] for r in c["outputs"].values()),
                        default=0.0)
            st.result = f"{graph.record.exporter}, opset {graph.record.opset}, max abs diff vs source {worst:.2g}"
        example = {k: v for k, v in evaluation.feeds[0].items() if k in graph.signature.input_names}
        return Prepared(graph, evaluation, calibration, getattr(source, "classifier_outputs", None),
                        tuple(getattr(source, "primary_outputs", ())), dict(source.extra_files), source.info,
                        example, None)

    started = time.perf_counter()
    prepared = stages.run("export", key, f"{config.source} (export)", compute, save_prepared,
                          lambda entry: load_prepared(entry, Prepared, work))
    if stages.outcome["export"] == "hit":
        # the source was not opened (from Python: opened only to fingerprint it); the cache read is the export stage
        progress.timings["load"] = opening
        progress.timings["export"] = time.perf_counter() - started
        progress.say(f"  ✓ {'export':<10} {progress.timings['export']:6.1f}s  from the cache ({key[:12]}): "
                     f"{prepared.graph.record.exporter}, opset {prepared.graph.record.opset}")
    elif opening:  # the load stage ran again for the data: both count
        progress.timings["load"] += opening
    if "source" in opened:  # what this run opened names the source (a cached entry may have come from another spec)
        prepared = replace(prepared, source_info=opened["source"].info)
    source_bench = None
    if config.report.analysis and any(p.measure for p in plans):
        def measure_baseline() -> dict:
            source = opened.get("source") or open_source(config, module, example_inputs)
            return measure_source(source, prepared.example, plans[0].threads, config.bench)

        with progress.stage("baseline") as st:
            bench_key = derived_key("baseline", key, threads=plans[0].threads, bench=config.bench.model_dump(),
                                    host=detect_host().fingerprint())
            source_bench = stages.run("baseline", bench_key, f"{config.source} (source model timing)",
                                      measure_baseline, lambda value, files: value, lambda entry: entry.meta)
            st.result = (f"{source_bench['runtime']}: p50 {source_bench['latency_ms']['p50']:.2f} ms"
                         + _cached(stages, "baseline"))
    opened.clear()  # the source framework's model is not needed any more: free it before measuring
    gc.collect()
    return replace(prepared, source_bench=source_bench, stages=stages, export_key=key)


def _check_keep_fp32(path: Path, patterns: tuple[str, ...]) -> None:
    """A --keep-fp32 name that matches no node is a typo or a name from another tool (optimum#1418 ignored them
    silently): one line, with names the graph does have."""
    if not patterns:
        return
    import onnx

    from kiln.passes.qdq_common import matching_names

    names = [n.name for n in onnx.load(str(path), load_external_data=False).graph.node if n.name]
    unknown = [p for p in patterns if not matching_names(names, (p,))]
    if unknown:
        compute = [n for n in names if any(op in n for op in ("Conv", "MatMul", "Gemm", "conv", "linear"))][:3]
        raise UsageError(f"--keep-fp32 {', '.join(unknown)} matches no node of the exported graph",
                         hint=f"pass a node name or part of one, e.g. {', '.join(compute or names[:3])} (report.md "
                              "lists the units --precision auto kept)")


def build(config, plan, backend, host, staged, prepared: Prepared, progress, started) -> Result:
    """Compile, validate, measure and package one plan into `staged`, then publish it to config.out."""
    work = staged / ".work"
    graph, example, stages = prepared.graph, prepared.example, prepared.stages
    _check_keep_fp32(graph.path, config.keep_fp32)
    check_budget_can_judge(graph.reference_outputs, config.budget, prepared.primary)
    kind = _calibration_kind(config, plan)
    calibration = prepared.calibration.get(kind)
    plan = plan.with_fallback_outputs(prepared.primary)  # the search reads what the gate reads
    compile_id = compile_key(prepared.export_key, plan, kind, config)
    with progress.stage("compile") as st:
        with calibration_ranges.kept_in(stages.cache.root / "calibration" if stages.on else None):
            compiled = stages.run("compile", compile_id, f"{config.source} -> {plan.target} {plan.precision}",
                                  lambda: backend.compile(graph, plan, work, calibration, example=example),
                                  save_compiled, lambda entry: load_compiled(entry, work))
        st.result = _compile_line(compiled) + _cached(stages, "compile")
    if plan.measure and compiled.details.get("not_timed"):  # e.g. a GPU here, but no engine it can run
        plan = plan.model_copy(update={"measure": False,
                                       "measure_reason": f"not measured: {compiled.details['not_timed']}"})

    def validate_now() -> dict:
        with backend.runner(compiled.model, compiled.signature, compiled.runtime_settings) as runner:
            accuracy = validate(runner, prepared.evaluation, graph.reference_outputs, config.budget,
                                prepared.classifier, prepared.primary)
            checked = {"accuracy": accuracy, "sample_output": runner.infer(example),
                       "execution_precision": runner.settings.get("execution_precision"),
                       "stand_in": runner.settings.pop("stand_in", None)}
        rounded_runner = getattr(backend, "fp16_rounded_runner", None)
        if rounded_runner is not None:
            rounded = rounded_reading(lambda: rounded_runner(compiled.model, compiled.signature,
                                                             compiled.runtime_settings, work / "fp16-rounded"),
                                      prepared.evaluation, graph.reference_outputs, prepared.classifier)
            if rounded:
                accuracy["fp16_rounded"] = rounded
        return checked

    def save_validation(value: dict, files: Path) -> dict:
        np.savez(files / "sample_output.npz", **value["sample_output"])
        return {k: v for k, v in value.items() if k != "sample_output"}

    def load_validation(entry) -> dict:
        with np.load(entry.file("sample_output.npz")) as data:
            return {**entry.meta, "sample_output": {k: data[k] for k in data.files}}

    with progress.stage("validate") as st:
        checked = stages.run("validate", derived_key("validate", compile_id, budget=config.budget.model_dump()),
                             f"{config.source} -> {plan.target} {plan.precision} (accuracy)", validate_now,
                             save_validation, load_validation)
        accuracy, sample_output = checked["accuracy"], checked["sample_output"]
        execution_precision, stand_in = checked["execution_precision"], checked["stand_in"]
        st.result = _accuracy_line(accuracy) + _cached(stages, "validate")
    bench = None
    measured = {"host": host.fingerprint(), "bench": config.bench.model_dump()}
    bench_id = derived_key("bench", compile_id, **measured)
    with progress.stage("bench") as st:
        if plan.measure:
            bench = stages.run("bench", bench_id, f"{config.source} -> {plan.target} {plan.precision} (latency)",
                               lambda: _measure(backend, compiled, example, config), lambda value, files: value,
                               lambda entry: entry.meta)
            lat = bench["latency_ms"]
            st.result = f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, {bench['throughput_per_s']:.1f}/s"
            if bench.get("throughput_mode"):
                tm = bench["throughput_mode"]
                st.result += (f"; THROUGHPUT hint {tm['throughput_per_s']:.1f}/s "
                              f"({tm['streams']} streams, {tm['infer_requests']} requests)")
            st.result += _cached(stages, "bench")
        else:
            st.result = plan.measure_reason
    analysis = {}
    if bench is not None and config.report.analysis:
        with progress.stage("analyse") as st:
            analysis = stages.run("analyse", derived_key("analyse", bench_id, report=config.report.model_dump()),
                                  f"{config.source} -> {plan.target} {plan.precision} (analysis)",
                                  lambda: analyse(backend, compiled, example, plan, config.report, bench),
                                  lambda value, files: value, lambda entry: entry.meta)
            st.result = analysis_line(analysis) + _cached(stages, "analyse")
    with progress.stage("package") as st:
        runtime_facts = {"execution_precision": execution_precision, "notes": [
            f"validated on {stand_in}: the accuracy is the model's on that stand-in, not measured on the target device"
        ] if stand_in else []}
        report, manifest = _package(config, plan, host, staged, work, prepared, compiled, accuracy, bench, analysis,
                                    sample_output, progress, started, runtime_facts)
        st.result = f"{report['size']['artifact_mib']:.1f} MiB"
    return finish(config, staged, report, manifest, accuracy["gate"], progress)


def finish(config: ExportConfig, staged: Path, report: dict, manifest: dict, gate: dict, progress) -> Result:
    """Every export's last steps: sign the manifest, publish to OUT (or OUT.rejected when the gate failed, with
    exit 4), then write the bundle."""
    if config.sign_key is not None:
        from kiln.artifact.signing import sign

        (staged / SIGNATURE_NAME).write_text(sign((staged / MANIFEST_NAME).read_bytes(), config.sign_key),
                                             encoding="utf-8")
    if not gate["passed"]:
        rejected = rejected_path(config.out)
        publish(staged, rejected)
        raise AccuracyGateError("accuracy gate failed: " + "; ".join(gate["failures"]),
                                hint=f"not published to {config.out}; the rejected artifact and its report are in "
                                     f"{rejected}", stage="validate", report=report)
    publish(staged, config.out)
    if config.bundle is not None:
        with progress.stage("bundle") as st:
            write_bundle(config.out, manifest, config.bundle)
            st.result = f"{config.bundle} ({config.bundle.stat().st_size / 2**20:.1f} MiB)"
    return Result(config.out, report, manifest)


def _measure(backend, compiled, example, config) -> dict:
    bench = measure(lambda: backend.runner(compiled.model, compiled.signature, compiled.runtime_settings),
                    example, config.bench)
    if config.bench.throughput_seconds:
        bench["throughput_mode"] = backend.throughput(compiled.model, compiled.runtime_settings, example,
                                                      config.bench.throughput_seconds)
    return bench


def _cached(stages, stage: str) -> str:
    return " (from the cache)" if stages.outcome.get(stage) == "hit" else ""


def _compile_line(compiled) -> str:
    details = compiled.details
    parts = [compiled.backend]
    if "fusion" in details:
        parts.append(f"fusion {'on' if details['fusion'].get('applied') else 'off'}")
    if "quantization" in details:
        q = details["quantization"]
        parts.append(f"{q.get('tool', 'int8')} ({q['mode']})")
    return ", ".join(parts)


def _accuracy_line(accuracy: dict) -> str:
    parts = []
    for name, m in accuracy["outputs"].items():
        if "cosine_min" in m:
            text = f"{name}: cos min {m['cosine_min']:.4f}"
            if m.get("class_logits"):
                text += f", top-1 {m['top1_agreement'] * 100:.1f}%"
            parts.append(text)
    gate = accuracy["gate"]
    verdict = "" if not gate["checked"] else ("; gate passed" if gate["passed"] else "; gate FAILED")
    return "; ".join(parts) + verdict + ("" if accuracy["meaningful"] else " (synthetic data)")


def _package(config, plan, host, staged, work, prepared, compiled, accuracy, bench, analysis, sample_output, progress,
             started, runtime_facts) -> tuple[dict, dict]:
    graph, extra_files, source_info, example = (prepared.graph, prepared.extra_files, prepared.source_info,
                                                prepared.example)
    model_bytes = sum(p.stat().st_size for p in compiled.files)
    for path in compiled.files:
        target = staged / path.relative_to(compiled.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), target)
    for name, path in sorted(extra_files.items()):
        target = staged / "preprocessing" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    np.savez(staged / "sample_input.npz", **example)
    np.savez(staged / "sample_output.npz", **sample_output)
    runtime = {"backend": compiled.backend, "model": compiled.model.relative_to(compiled.root).as_posix(),
               "settings": compiled.runtime_settings}
    write_json(staged / "runtime.json", runtime)
    if compiled.backend in ("onnxruntime", "openvino"):
        shutil.copyfile(Path(__file__).parent / "artifact" / "device_runner.py", staged / "run.py")
    shutil.rmtree(work, ignore_errors=True)
    stages = dict(progress.timings)
    stages["package"] = 0.0
    notes = list(plan.notes) + runtime_facts["notes"]
    static = compiled.details.get("static_shapes")
    if static:
        shapes = ", ".join(f"{k} {['?' if d is None else d for d in v]}" for k, v in static["shapes"].items())
        notes.append(f"the artifact takes these input shapes only: {shapes} ({static['reason']})")
    if not accuracy["meaningful"]:
        notes.append("accuracy was measured on synthetic inputs: the figures say nothing about real data")
    report = {
        "schema_version": REPORT_SCHEMA, "kiln_version": __version__,
        "status": "ok" if accuracy["gate"]["passed"] else "rejected",
        "model": {"name": Path(source_info.location).name or source_info.location, "source_kind": source_info.kind,
                  "source_sha256": source_info.sha256, "parameters": source_info.details.get("parameters")},
        "target": {"name": plan.target, "backend": plan.backend, "device": plan.device},
        "precision": plan.precision, "plan": plan.model_dump(), "host": host.fingerprint(),
        "settings": {"threads": plan.threads, "batch": bench["batch"] if bench else None,
                     "input_shapes": {k: list(v.shape) for k, v in example.items()},
                     "runtime_settings": compiled.runtime_settings, "bench": config.bench.model_dump()},
        "latency_ms": bench["latency_ms"] if bench else None,
        "throughput_per_s": bench["throughput_per_s"] if bench else None,
        "bench": bench, "bench_skipped": None if bench else plan.measure_reason,
        "accuracy": accuracy, "export": {**graph.record.to_dict(), "check": graph.check},
        "compile": compiled.details, "size": {"model_mib": model_bytes / 2**20}, "cache": prepared.stages.summary(),
        "stages_seconds": stages, "notes": notes, "execution_precision": runtime_facts["execution_precision"],
        **report_extras(prepared.source_bench, bench, analysis, config.report),
    }
    artifact_bytes = sum(p.stat().st_size for p in staged.rglob("*") if p.is_file())
    report["size"]["artifact_mib"] = artifact_bytes / 2**20
    report["stages_seconds"]["package"] = round(time.perf_counter() - started - sum(stages.values()), 3)
    report["total_seconds"] = round(time.perf_counter() - started, 3)
    write_json(staged / "report.json", report)
    (staged / "report.md").write_text(render(report), encoding="utf-8")
    with plots.memo(prepared.stages.cache.root.parent / "plots" if prepared.stages.on else None):
        (staged / "report.html").write_text(render_html(report), encoding="utf-8")
    manifest = {
        "schema_version": MANIFEST_SCHEMA, "kiln_version": __version__,
        "source": source_info.to_dict(),
        "target": {"name": plan.target, "backend": plan.backend, "device": plan.device},
        "precision": plan.precision, "plan": plan.model_dump(),
        "config": config.recorded(),
        "io": compiled.signature.to_dict(),
        "export": graph.record.to_dict(timings=False),
        "runtime": runtime,
        "toolchain": toolchain_versions(), "host": host.fingerprint(),
        "summary": {
            "status": report["status"],
            "accuracy": {n: {k: m.get(k) for k in ("cosine_min", "max_abs_error", "top1_agreement")}
                         for n, m in accuracy["outputs"].items()},
            "accuracy_meaningful": accuracy["meaningful"],
            "model_mib": report["size"]["model_mib"],
        },
        "reproducibility": reproducibility(plan, compiled.details.get("engine")),
        "files": file_entries(staged),
    }
    engine = compiled.details.get("engine")
    if engine is not None:
        trt = plan.tensorrt
        manifest["engine"] = {k: v for k, v in engine.items() if k not in ("schema_version", "warnings")}
        if "engines" in engine:  # build timings are measurements: in report.json, not in the manifest
            manifest["engine"]["engines"] = [{k: v for k, v in e.items() if not k.endswith("_seconds")}
                                             for e in engine["engines"]]
        manifest["engine"]["compatibility"] = {"hardware_compatibility": trt.hardware_compatibility,
                                               "version_compatible": trt.version_compatible}
    write_json(staged / MANIFEST_NAME, manifest)
    return report, manifest


def failure_report(error: KilnError) -> dict:
    return {"schema_version": REPORT_SCHEMA, "kiln_version": __version__, "status": "failed", "error": error.to_dict()}
