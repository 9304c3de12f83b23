"""`kiln export` for a decoder-only model: resolve, load, export, compile, validate, bench, package.

The same contract as every export: the artifact is assembled in a hidden sibling and renamed into place when
complete, an artifact outside the accuracy budget goes to OUT.rejected/, and errors are one line. Not cached
yet (the report says so): the stage cache keys encoder and CNN stages only. `build_llm` is one artifact from a
loaded model and its backend's export: the comparison matrix (llm/matrix.py) calls it once per cell, with the
model loaded and each export made once.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path

from kiln import __version__
from kiln.artifact import (MANIFEST_NAME, check_output_path, clean_leftovers, discard, file_entries,
                           missing_parents, staging_dir, write_json)
from kiln.artifact.manifest import MANIFEST_SCHEMA
from kiln.artifact.reproducibility import reproducibility
from kiln.calibration.text import check_text_file
from kiln.config import ExportConfig, Plan, QuantizationPlan
from kiln.errors import ExportError, KilnError, UnsupportedTargetError, UsageError
from kiln.llm import compile as llm_compile
from kiln.llm import fused_export, serving
from kiln.llm.draft import DRAFT_DIR, bundle_draft, check_draft_artifact, check_draft_tokens
from kiln.llm.export import export_decoder
from kiln.llm.loaded import Loaded, load
from kiln.llm.measure import fidelity, speed
from kiln.llm.openvino_export import export_openvino
from kiln.llm.report import LLM_REPORT_SCHEMA, render_llm_markdown
from kiln.llm.runners import OpenVinoDecoder, OrtDecoder, generate
from kiln.llm.source import TOKENIZER_FILES, check_supported
from kiln.targets import detect_host, find_target
from kiln.toolchain import toolchain_versions

PRECISIONS = ("fp32", "int8-weights", "int4-weights")
BACKENDS = ("onnxruntime", "openvino")


def resolve_llm(config: ExportConfig, host, folder: Path, cfg: dict, matrix_cell: bool = False) -> Plan:
    """`matrix_cell`: one cell of a comparison matrix, where --calibration serves the cells that take it and the
    others say they did not use it (a single export refuses it instead)."""
    spec = find_target(config.target)
    if config.llm.draft is not None and spec.backend not in BACKENDS:
        raise UnsupportedTargetError(f"--draft is served by openvino-genai and onnxruntime-genai; '{spec.name}' is "
                                     f"{spec.backend}", hint="use --target openvino or onnxruntime with --draft")
    if spec.backend == "llamacpp":
        return _resolve_llamacpp(config, host, spec, folder, cfg)
    if spec.backend not in BACKENDS or spec.device != "cpu":
        raise UnsupportedTargetError(f"language models are exported for CPU targets of {', '.join(BACKENDS)}; "
                                     f"'{spec.name}' is {spec.backend} on {spec.device}",
                                     hint="use --target onnxruntime or --target openvino")
    if config.llm.draft is not None:
        check_draft_artifact(config.llm.draft, spec.backend)
    if config.precision not in PRECISIONS:
        raise UnsupportedTargetError(f"precision '{config.precision}' is not offered for language models",
                                     hint=f"use one of {', '.join(PRECISIONS)} (weight-only: activations stay fp32)")
    if config.calibration is not None and config.precision != "int4-weights" and not matrix_cell:
        raise UsageError(f"{config.precision} takes no calibration data for a language model (only int4-weights "
                         "does: AWQ and scale estimation)", hint="pass the text as --eval (used for fidelity and "
                                                                 "perplexity), or drop --calibration")
    if config.calibration is not None:
        check_text_file(config.calibration.path, "--calibration", "int4 calibration for a language model")
    check_supported(folder, cfg)
    threads = config.threads or host.physical_cores
    notes = ["language model: fidelity is measured against the torch model in this process"]
    if config.calibration is not None and config.precision != "int4-weights":
        notes.append(f"--calibration is not used: {config.precision} takes no calibration data")
    quant = None
    if config.precision != "fp32":
        bits = 4 if config.precision == "int4-weights" else 8
        symmetric = llm_compile.is_symmetric({"symmetric": config.weight_compression.symmetric}, bits, spec.backend)
        how = "block-wise" if bits == 4 or spec.backend == "onnxruntime" else "per channel"
        weights = f"int{bits}, {how}, {'symmetric' if symmetric else 'asymmetric'}"
        if bits == 4 and config.calibration is not None:
            weights += ", AWQ and scale estimation from the calibration text (NNCF)"
        elif bits == 4:
            notes.append("int4 rounded to nearest: --calibration TEXT.txt gives AWQ and scale estimation (measured "
                         "on SmolLM2-135M: perplexity +6 to +9 % instead of +22 %)")
        quant = QuantizationPlan(mode="weights", weights=weights, activations="fp32 (weight-only)")
    ok_here = spec.backend == "onnxruntime" or host.arch == "x86_64"
    return Plan(target=spec.name, backend=spec.backend, device=spec.device, precision=config.precision,
                quantization=quant, threads=threads, measure=config.measure and ok_here,
                measure_reason="" if config.measure else "--no-bench", notes=tuple(notes))


def _resolve_llamacpp(config: ExportConfig, host, spec, folder: Path, cfg: dict) -> Plan:
    """llama.cpp: a float GGUF, or one quantized by llama-quantize; --calibration text makes the importance matrix
    the k-quants use. Fails here, before any work, when llama.cpp is not built for this CPU."""
    from kiln.llamacpp.convert import check_architecture
    from kiln.llamacpp.quantize import GGUF_TYPES, USES_IMATRIX
    from kiln.llamacpp.toolchain import find

    if config.precision not in spec.precisions:
        raise UnsupportedTargetError(f"target '{spec.name}' does not write precision '{config.precision}'",
                                     hint=f"use one of {', '.join(spec.precisions)}")
    if config.calibration is not None:
        check_text_file(config.calibration.path, "--calibration", "llama.cpp's importance matrix")
    check_architecture(find(), folder, cfg)
    notes = ["language model: fidelity is measured against the torch model in this process, the GGUF run by "
             "libllama (llama.cpp's own runtime)"]
    quant = None
    if config.precision in GGUF_TYPES:
        imatrix = config.calibration is not None and config.precision in USES_IMATRIX
        if config.calibration is not None and not imatrix:
            notes.append(f"--calibration is not used: {GGUF_TYPES[config.precision]} takes no importance matrix")
        quant = QuantizationPlan(mode="weights", weights=f"{GGUF_TYPES[config.precision]} (llama-quantize"
                                 + (", importance matrix from the calibration text)" if imatrix else ")"),
                                 activations="fp32 (llama.cpp's quantized kernels round them to 8 bits per dot "
                                             "product)")
    elif config.calibration is not None:
        notes.append(f"--calibration is not used: {config.precision} is not quantized")
    return Plan(target=spec.name, backend=spec.backend, device=spec.device, precision=config.precision,
                quantization=quant, threads=config.threads or host.physical_cores, measure=config.measure,
                measure_reason="" if config.measure else "--no-bench", notes=tuple(notes))


class Exports:
    """Each backend's export (llama.cpp's: the float master GGUF) made once under `work` and handed to every build
    that compiles from it; an export that failed fails every build needing it, with the same one-line error.
    `shared`: more builds may follow, so compiling must leave the export in place (a single export lets llama.cpp
    move its master into the artifact)."""

    def __init__(self, work: Path, shared: bool):
        self.work, self.shared = work, shared
        self._records: dict[str, dict] = {}
        self._errors: dict[str, tuple[type, str, str | None]] = {}
        self.imatrix: tuple[Path, dict] | None = None  # llama-imatrix's output, the same for every k-quant

    def get(self, key: str, make) -> tuple[dict, bool]:
        """(a copy of the export record, whether it was made by an earlier build); `make(out_dir)` exports."""
        if key in self._errors:  # a fresh error each time: a kept traceback would keep the torch model alive
            kind, message, hint = self._errors[key]
            raise kind(message, hint=hint)
        made_before = key in self._records
        if not made_before:
            out = self.work / f"export-{key}"
            shutil.rmtree(out, ignore_errors=True)
            try:
                self._records[key] = make(out)
            except KilnError as error:
                self._errors[key] = (type(error), error.message, error.hint)
                raise
            except Exception as error:  # noqa: BLE001 - remembered as failed; the caller reports it as a kiln bug
                first = str(error).splitlines()[0][:200] if str(error) else ""
                self._errors[key] = (ExportError, f"the {key} export failed: {type(error).__name__}: {first}",
                                     "rerun with --debug and report it to kiln")
                raise
        return copy.deepcopy(self._records[key]), made_before


def run_llm(config: ExportConfig, folder: Path, cfg: dict, progress, started: float):
    from kiln.pipeline import _check_delivery, rejected_path

    host = detect_host()
    with progress.stage("resolve") as st:
        plan = resolve_llm(config, host, folder, cfg)
        check_output_path(config.out)
        check_output_path(rejected_path(config.out))
        clean_leftovers(config.out)
        _check_delivery(config)
        st.result = f"{plan.target}, {plan.precision}, {plan.threads} threads (language model)"
    created = missing_parents(config.out)
    staged = staging_dir(config.out)
    try:
        work = staged / ".work"
        loaded = load(config, folder, cfg, work, plan.threads, uses_calibration_windows(plan), progress)
        return build_llm(config, plan, host, loaded, Exports(work, shared=False), staged, progress, started)
    except BaseException:
        discard(staged, created)
        raise


def uses_calibration_windows(plan: Plan) -> bool:
    """Data-aware int4 on ONNX Runtime and OpenVINO runs on tokenized windows (llama.cpp reads the text itself)."""
    return plan.precision == "int4-weights" and plan.backend in BACKENDS


def build_llm(config: ExportConfig, plan: Plan, host, loaded: Loaded, exports: Exports, staged: Path, progress,
              started: float):
    """Export (or take the shared export), compile, validate, bench and package one artifact into `staged`, then
    publish it (kiln.pipeline.finish)."""
    if plan.backend == "llamacpp":
        return _build_gguf(config, plan, host, loaded, exports, staged, progress, started)
    from kiln.pipeline import finish

    spec = loaded.spec
    options = {"block_size": config.llm.block_size, "accuracy_level": config.llm.accuracy_level,
               "keep_embeddings": config.llm.keep_embeddings, "group_size": config.weight_compression.group_size,
               "ratio": config.weight_compression.ratio, "symmetric": config.weight_compression.symmetric}
    calibration_windows, calibration = _int4_calibration(plan, loaded)
    draft = None
    if config.llm.draft is not None:  # refused in one line before minutes of export
        draft = check_draft_tokens(config.llm.draft, loaded.tokenizer, spec.vocab_size)
    with progress.stage("export") as st:
        record, shared = exports.get(plan.backend, lambda out: _export(plan, loaded.model, spec, loaded.folder, loaded.cfg, out))
        export_dir = exports.work / f"export-{plan.backend}"
        st.result = _checks_line(record) + (" (made once for the matrix)" if shared else "")
    inputs, outputs = spec.io_names()
    layout = {"past": inputs[3:], "present": outputs[1:], "kv_heads": spec.kv_heads, "head_dim": spec.head_dim,
              "layers": spec.layers, "vocab_size": spec.vocab_size,
              # the model builder's GroupQueryAttention appends to a cache buffer bound as both past and present
              "kv_buffer": "shared" if record["exporter"] == fused_export.EXPORTER else "copied"}
    with progress.stage("compile") as st:
        if plan.backend == "onnxruntime":
            graph = export_dir / "model.onnx"
            from kiln.backends.onnxruntime.session import default_settings
            from kiln.llm.data_aware import onnx_feeds

            feeds = onnx_feeds(calibration_windows, layout, _graph_inputs(graph)) if calibration_windows else None
            details = llm_compile.compile_onnxruntime(graph, staged, plan.precision, options, feeds)
            model_rel, settings = "model.onnx", default_settings(plan.threads)
            if details.get("nodes", {}).get("DequantizeLinear"):  # fused into MatMulNBits at load, at this level
                settings["config_entries"][llm_compile.SESSION_ACCURACY_LEVEL] = str(details["accuracy_level"])
        else:
            from kiln.backends.openvino.session import default_settings

            details = llm_compile.compile_openvino(export_dir / "model.xml", staged / serving.OPENVINO_MODEL,
                                                   plan.precision, options, spec, calibration_windows)
            model_rel, settings = serving.OPENVINO_MODEL, default_settings("CPU", plan.precision, plan.threads)
        if calibration:
            details["calibration"] = calibration
        model_path = staged / model_rel
        weights = llm_compile.weight_bytes(model_path)
        st.result = (f"{details.get('tool', 'fp32').split(' (')[0]}, {details.get('method', 'fp32')}: "
                     f"{weights / 2**20:.1f} MiB of weights")

    def candidate():
        if plan.backend == "onnxruntime":
            return OrtDecoder(model_path, settings, layout)
        return OpenVinoDecoder(model_path, settings)

    found, gate, bench, source = _measure(config, plan, loaded, progress, candidate)
    if not exports.shared:
        loaded.release_model()  # a single export compares nothing more with it: its memory goes before packaging
    with progress.stage("engine") as st:
        served = _serving(plan, loaded, staged, export_dir, settings, candidate)
        st.result = (f"{served['engine']} loads it: {served['tokens_identical']} of {served['tokens_checked']} greedy "
                     f"tokens identical" if served["loads"] else f"{served['engine']}: {served.get('reason')}")
    if draft is not None:
        served["draft"] = {**draft, "files": bundle_draft(config.llm.draft, staged, plan.backend)}
    with progress.stage("serve") as st:
        reason = _serving_unmeasured(plan, loaded, exports, served)
        if reason is None:
            served.update(_measure_serving(plan, loaded, staged, served, settings, layout, draft is not None))
            st.result = "; ".join(served["recommendation"])
        else:
            served["measure_reason"] = st.result = reason
    with progress.stage("package") as st:
        report, manifest = _package(config, plan, host, loaded, staged, record, details, settings, model_rel, layout,
                                    found, gate, bench, source, weights, progress, started, served)
        st.result = f"{report['size']['artifact_mib']:.1f} MiB"
    return finish(config, staged, report, manifest, gate, progress)


def _serving(plan: Plan, loaded: Loaded, staged: Path, export_dir: Path, settings: dict, candidate) -> dict:
    """The files the serving engine reads (serving.py), written into the artifact's root, and the engine's check."""
    files = serving.copy_tokenizer_files(loaded.folder, staged, TOKENIZER_FILES)
    if (loaded.folder / "generation_config.json").is_file():
        shutil.copyfile(loaded.folder / "generation_config.json", staged / "generation_config.json")
    serving.write_generation_config(staged, loaded.tokenizer)
    files.append("generation_config.json")
    prompt = loaded.prompts[0]
    if plan.backend == "openvino":
        tokenizer = serving.write_openvino_tokenizers(loaded.tokenizer, staged)
        files += ["openvino_tokenizer.xml", "openvino_detokenizer.xml"] if tokenizer["tokenizer_ir"] else []
        checked = serving.check_openvino_genai(staged, prompt, settings, plan.threads)
        return {**checked, **tokenizer, "files": [serving.OPENVINO_MODEL, *files]}
    if (export_dir / "genai_config.json").is_file():
        serving.write_genai_config(export_dir / "genai_config.json", staged, settings)
        files.append("genai_config.json")
    expected = [int(t) for t in generate(candidate(), prompt, serving.CHECK_TOKENS).tokens]
    return {**serving.check_onnxruntime_genai(staged, prompt, expected), "files": ["model.onnx", *files]}


def _serving_unmeasured(plan: Plan, loaded: Loaded, exports: Exports, served: dict) -> str | None:
    """Why the serve stage measures nothing, or None when it measures."""
    if not plan.measure:
        return plan.measure_reason
    if exports.shared:
        return "a matrix cell (kiln bench ARTIFACT --concurrency 1,2,4,8 measures it)"
    if not served["loads"]:
        return f"{served['engine']} does not load the artifact"
    if loaded.tokenizer is None:
        return "the source has no tokenizer to write the prompts with"
    return None


def _measure_serving(plan: Plan, loaded: Loaded, staged: Path, served: dict, settings: dict, layout: dict,
                     with_draft: bool) -> dict:
    """Prompt lookup, draft speculation, the concurrency curve and the recommendation (serving_bench.py), with kiln's
    generator under the engine's settings, so that its tokens and the engine's can be compared."""
    from kiln.bench_artifact import serving_decoder
    from kiln.llm.serving_bench import measure_serving

    model = serving.OPENVINO_MODEL if plan.backend == "openvino" else "model.onnx"
    own = {"backend": plan.backend, "settings": settings, "model": model, "language_model": layout}
    decoder = serving_decoder(staged, own, served["settings"], plan.threads)
    draft_decoder = None
    if with_draft:
        runtime = json.loads((staged / DRAFT_DIR / "manifest.json").read_text(encoding="utf-8"))["runtime"]
        draft_decoder = serving_decoder(staged / DRAFT_DIR, runtime, served["settings"], plan.threads)
    report = {"target": {"backend": plan.backend}, "serving": served}
    return measure_serving(staged, report, decoder, loaded.tokenizer, plan.threads, draft_decoder)


def _int4_calibration(plan: Plan, loaded: Loaded) -> tuple[list | None, str | None]:
    """The calibration windows for data-aware int4 and what they are; none without --calibration, or (said so in
    the record) when the graph is too large for NNCF to run it from one protobuf."""
    if loaded.calibration_windows is None or not uses_calibration_windows(plan):
        return None, None
    from kiln.llm.data_aware import PROTOBUF_LIMIT

    if plan.backend == "onnxruntime" and loaded.spec.weight_bytes_fp32 > PROTOBUF_LIMIT:
        return None, (f"not used: NNCF runs the ONNX graph from one protobuf, and "
                      f"{loaded.spec.weight_bytes_fp32 / 2**30:.1f} GiB of fp32 weights exceed its 2 GB limit; "
                      "rounded to nearest (--target openvino has no limit)")
    return loaded.calibration_windows, loaded.calibration


def _graph_inputs(graph: Path) -> set[str]:
    import onnx

    return {i.name for i in onnx.load(str(graph), load_external_data=False).graph.input}


def _checks_line(record: dict) -> str:
    return record["exporter"] + (f", opset {record['opset']}" if record["opset"] else "") + ", " + "; ".join(
        f"{c['inputs']}: {c['max_rel_error']:.1g}" for c in record["checks"])


def _measure(config, plan, loaded: Loaded, progress, candidate, extra=None):
    """The validate and bench stages, the same for every backend: fidelity against the torch model, the gate, then
    speed (and the torch model's, for the report's analysis, measured once per loaded model). `extra(bench)` adds a
    backend's own speed figures."""
    with progress.stage("validate") as st:
        found = fidelity(loaded.reference, candidate(), loaded.prompts, loaded.references(), loaded.windows,
                         loaded.perplexity())
        gate = _gate(config, found)
        st.result = (f"greedy agreement {found['greedy_agreement']:.1%}, next-token KL {found['next_token_kl_mean']:.3g},"
                     f" perplexity {found['perplexity_source']:.2f} -> {found['perplexity']:.2f}"
                     + ("" if not gate["checked"] else ("; gate passed" if gate["passed"] else "; gate FAILED")))
    bench = source = None
    with progress.stage("bench") as st:
        if plan.measure:
            bench = speed(candidate, loaded.speed_prompt, config.llm.new_tokens, config.llm.rounds)
            if extra is not None:
                extra(bench)
            if config.report.analysis:
                source = loaded.speed(config.llm.new_tokens, config.llm.rounds)
            st.result = (f"TTFT {bench['ttft_ms']:.1f} ms ({bench['prompt_tokens']} tokens), "
                         f"{bench['decode_tokens_per_s']:.1f} tokens/s"
                         + (f"; torch eager {source['decode_tokens_per_s']:.1f} tokens/s" if source else ""))
        else:
            st.result = plan.measure_reason
    return found, gate, bench, source


def _build_gguf(config, plan, host, loaded: Loaded, exports: Exports, staged, progress, started):
    """llama.cpp: convert and check (export), quantize (compile), then the same validate and bench as every
    language model, the GGUF run by libllama."""
    from kiln.llamacpp.decoder import LlamaCppDecoder
    from kiln.llamacpp.stages import FLOAT, compile_gguf, export_gguf, llama_bench
    from kiln.llamacpp.toolchain import find
    from kiln.pipeline import finish

    build = find()
    master_precision = plan.precision if plan.precision in FLOAT else "fp32"
    with progress.stage("export") as st:
        record, shared = exports.get(f"gguf-{master_precision}", lambda out: export_gguf(
            build, loaded.reference, loaded.folder, out, master_precision, plan.threads))
        st.result = _checks_line(record) + (" (made once for the matrix)" if shared else "")
    with progress.stage("compile") as st:
        calibration = _calibration_text(config, staged / ".work") if config.calibration else None
        details = compile_gguf(build, Path(record.pop("master_path")), record["master"]["outtype"], staged,
                               plan.precision, plan.threads, calibration, keep_master=exports.shared,
                               imatrix=exports.imatrix)
        if exports.shared and details["imatrix"] and exports.imatrix is None:  # kept for the other k-quant cells
            kept = exports.work / "imatrix.gguf"
            shutil.copyfile(staged / "imatrix.gguf", kept)
            exports.imatrix = (kept, details["imatrix"])
        model_path = staged / "model.gguf"
        weights = model_path.stat().st_size
        st.result = (f"{details['tool']}: {weights / 2**20:.1f} MiB, {details['gguf'].get('bits_per_weight', 0):.2f} "
                     f"bits per weight")
    n_ctx = max(512, config.sequence_length + config.llm.new_tokens + 8)
    settings = {"n_threads": plan.threads, "n_ctx": n_ctx, "n_gpu_layers": 0}

    def candidate():
        return LlamaCppDecoder(build, model_path, plan.threads, n_ctx)

    def runtime_bench(bench: dict) -> None:
        bench["llama_bench"] = llama_bench(build, model_path, plan.threads, len(loaded.speed_prompt),
                                           config.llm.new_tokens, config.llm.rounds)

    found, gate, bench, source = _measure(config, plan, loaded, progress, candidate, runtime_bench)
    if not exports.shared:
        loaded.release_model()
    layout = {"vocab_size": loaded.spec.vocab_size, "llama_cpp": build.versions()}
    with progress.stage("package") as st:
        report, manifest = _package(config, plan, host, loaded, staged, record, details, settings, "model.gguf",
                                    layout, found, gate, bench, source, weights, progress, started)
        st.result = f"{report['size']['artifact_mib']:.1f} MiB"
    return finish(config, staged, report, manifest, gate, progress)


def _calibration_text(config: ExportConfig, work: Path) -> Path:
    """The --calibration text as llama-imatrix reads it: the file's non-empty lines (up to its limit), one text."""
    from kiln.calibration.text import read_lines

    source = config.calibration
    work.mkdir(parents=True, exist_ok=True)
    path = work / "calibration.txt"
    path.write_text("\n".join(read_lines(source.path, source.limit)) + "\n", encoding="utf-8")
    return path


def _export(plan, model, spec, folder: Path, cfg: dict, out: Path) -> dict:
    """ONNX Runtime gets the model builder's fused graph where it applies; otherwise, or if it fails, the
    TorchScript graph. OpenVINO converts from PyTorch. Each is checked against the torch model; the record
    names every attempt."""
    if plan.backend == "openvino":
        return export_openvino(model, spec, out)
    attempts = []
    reason = fused_export.unsupported_reason(cfg)
    if reason is None:
        try:
            record = fused_export.export_fused(model, spec, folder, out)
            record["attempts"] = [{"exporter": record["exporter"], "ok": True, "seconds": record["seconds"]}]
            return record
        except ExportError as exc:
            reason = f"the model builder's graph was not used: {exc}"
            attempts.append({"exporter": fused_export.EXPORTER, "ok": False, "error": str(exc)})
            shutil.rmtree(out, ignore_errors=True)
    record = export_decoder(model, spec, out)
    record["attempts"] = attempts + record["attempts"]
    record["notes"] = record["notes"] + [reason]
    return record


def _openvino_io(path: Path) -> dict:
    """The stateful IR's inputs and outputs (the cache is inside it), dynamic dimensions as "?"."""
    import openvino as ov

    model = ov.Core().read_model(str(path))

    def tensor(port):
        shape = [d.get_length() if d.is_static else "?" for d in port.get_partial_shape()]
        return {"name": port.get_any_name(), "dtype": str(port.get_element_type().to_dtype()), "shape": shape}

    return {"inputs": [tensor(p) for p in model.inputs], "outputs": [tensor(p) for p in model.outputs]}


def _gate(config: ExportConfig, found: dict) -> dict:
    """--min-cosine applies to the worst next-token logits cosine, --min-agreement to greedy agreement,
    --max-perplexity-increase to the perplexity on the evaluation text relative to the torch model's."""
    failures = []
    if config.budget.min_cosine is not None and found["logits_cosine_min"] < config.budget.min_cosine:
        failures.append(f"next-token logits cosine min {found['logits_cosine_min']:.4f} < {config.budget.min_cosine}")
    if config.llm.min_agreement is not None and found["greedy_agreement"] < config.llm.min_agreement:
        failures.append(f"greedy agreement {found['greedy_agreement']:.3f} < {config.llm.min_agreement}")
    limit = config.llm.max_perplexity_increase
    increase = found["perplexity"] / found["perplexity_source"] - 1
    if limit is not None and increase > limit:
        failures.append(f"perplexity {found['perplexity']:.3f} is {increase:+.1%} of torch's "
                        f"{found['perplexity_source']:.3f} (limit +{limit:.1%})")
    checked = config.budget.min_cosine is not None or config.llm.min_agreement is not None or limit is not None
    return {"checked": checked, "passed": not failures, "failures": failures}


def _package(config, plan, host, loaded: Loaded, staged, record, details, settings, model_rel, layout, found, gate,
             bench, source, weights, progress, started, served: dict | None = None) -> tuple[dict, dict]:
    from kiln.exporters.base import sha256_tree
    from kiln.signature import read_signature

    folder, origin, spec, where = loaded.folder, loaded.origin, loaded.spec, loaded.where
    gguf = plan.backend == "llamacpp"
    if not gguf and (folder / "config.json").is_file():  # the tokenizer went in with the engine's files
        shutil.copyfile(folder / "config.json", staged / "config.json")
    shutil.rmtree(staged / ".work", ignore_errors=True)
    runner = Path(__file__).parent.parent / "llamacpp" / "generate.py" if gguf else Path(__file__).parent / \
        "device_generate.py"
    shutil.copyfile(runner, staged / "generate.py")
    runtime = {"backend": plan.backend, "model": model_rel, "settings": settings, "language_model": layout}
    write_json(staged / "runtime.json", runtime)
    toolchain = toolchain_versions()
    if gguf:
        io = {"inputs": [{"name": "tokens", "dtype": "int32", "shape": ["?"]}],
              "outputs": [{"name": "logits", "dtype": "float32", "shape": ["?", spec.vocab_size]}]}
        v = layout["llama_cpp"]
        toolchain["llama_cpp"] = f"{v['llama_cpp_commit']} (llama-cpp-python {v['llama_cpp_python']}, ggml {v['ggml']})"
    elif plan.backend == "onnxruntime":
        import onnx

        io = read_signature(onnx.load(str(staged / "model.onnx"), load_external_data=False)).to_dict()
    else:
        io = _openvino_io(staged / model_rel)
    stages = dict(progress.timings)
    stages["package"] = 0.0
    weights_in = list(folder.glob("*.safetensors")) + [folder / "config.json"]
    source_sha = origin["gguf"] or sha256_tree([p for p in weights_in if p.is_file()], folder)
    speedup = (bench["decode_tokens_per_s"] / source["decode_tokens_per_s"]) if bench and source else None
    notes = list(plan.notes) + [f"prompts and perplexity text: {where}"]
    if found["perplexity_tokens"] < 500:
        notes.append(f"perplexity over {found['perplexity_tokens']} tokens only: a rough figure")
    report = {
        "schema_version": LLM_REPORT_SCHEMA, "kiln_version": __version__,
        "status": "ok" if gate["passed"] else "rejected",
        "model": {"name": origin["name"], "source_kind": origin["kind"], "source_sha256": source_sha,
                  "model_type": spec.model_type, "parameters": spec.parameters, "layers": spec.layers},
        "target": {"name": plan.target, "backend": plan.backend, "device": plan.device},
        "precision": plan.precision, "plan": plan.model_dump(), "host": host.fingerprint(),
        "settings": {"threads": plan.threads, "batch": 1, "prompt_tokens": config.sequence_length,
                     "new_tokens": config.llm.new_tokens, "rounds": config.llm.rounds, "runtime_settings": settings},
        "weights": {"bytes": weights, "fp32_bytes": spec.weight_bytes_fp32,
                    "ratio_to_fp32": weights / spec.weight_bytes_fp32},
        "fidelity": found, "gate": gate, "bench": bench, "source_bench": source,
        "decode_speedup_vs_source": speedup, "bench_skipped": None if bench else plan.measure_reason,
        "export": {k: v for k, v in record.items()}, "compile": details, **({"serving": served} if served else {}),
        "size": {"model_mib": weights / 2**20}, "stages_seconds": stages, "notes": notes,
        "cache": {"enabled": False, "reason": "language-model stages are not cached yet", "root": None, "stages": {}},
    }
    report["size"]["artifact_mib"] = sum(p.stat().st_size for p in staged.rglob("*") if p.is_file()) / 2**20
    report["stages_seconds"]["package"] = round(time.perf_counter() - started - sum(stages.values()), 3)
    report["total_seconds"] = round(time.perf_counter() - started, 3)
    write_json(staged / "report.json", report)
    (staged / "report.md").write_text(render_llm_markdown(report), encoding="utf-8")
    manifest = {
        "schema_version": MANIFEST_SCHEMA, "kiln_version": __version__,
        "source": {"kind": origin["kind"], "location": origin["location"], "sha256": source_sha,
                   "details": {"task": "text-generation", **spec.to_dict()}},
        "target": report["target"], "precision": plan.precision, "plan": plan.model_dump(),
        "config": config.recorded(), "io": io,
        "export": {"exporter": record["exporter"], "opset": record["opset"],
                   "attempts": [{"exporter": a["exporter"], "ok": a["ok"]} for a in record["attempts"]],
                   "notes": record["notes"]},
        "runtime": runtime, "toolchain": toolchain, "host": host.fingerprint(),
        "summary": {"status": report["status"], "accuracy": {"next_token": {
            "cosine_min": found["logits_cosine_min"], "max_abs_error": None, "top1_agreement": found["greedy_agreement"]}},
            "accuracy_meaningful": not config.synthetic_data or config.evaluation is not None,
            "model_mib": weights / 2**20},
        "reproducibility": reproducibility(plan),
        "files": file_entries(staged),
    }
    write_json(staged / MANIFEST_NAME, manifest)
    return report, manifest
