"""`kiln bench ARTIFACT`: re-measure an artifact with its recorded runtime settings and sample input."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiln.artifact import load_manifest, verify_files
from kiln.artifact.paths import checked_relative_path
from kiln.backends import get_backend
from kiln.bench import measure
from kiln.config import BenchSettings
from kiln.errors import UnsupportedTargetError, UsageError
from kiln.signature import Signature
from kiln.targets import detect_host, find_target, host_can_run


def bench_artifact(root: Path, settings: BenchSettings, *, threads: int | None = None) -> dict:
    manifest = load_manifest(root)
    runtime = manifest["runtime"]
    model = root / checked_relative_path(runtime["model"], "manifest.json runtime.model")
    verify_files(root, manifest)  # measure only what the manifest vouches for
    spec = find_target(manifest["target"]["name"])
    ok, why = host_can_run(spec, detect_host())
    if not ok:
        raise UnsupportedTargetError(f"this host cannot measure target '{spec.name}': {why}",
                                     hint="run kiln bench on a machine of that target")
    if runtime["backend"] == "llamacpp":
        run_settings = {**runtime["settings"], **({"n_threads": threads} if threads else {})}
        return _bench_language_model(root, manifest, model, run_settings, settings)
    backend = get_backend(runtime["backend"])
    backend.check_environment(spec)
    run_settings = dict(runtime["settings"])
    if threads:
        run_settings = backend.with_threads(run_settings, threads)
    if "language_model" in runtime:
        return _bench_language_model(root, manifest, model, run_settings, settings)
    sample = root / "sample_input.npz"
    if not sample.exists():
        raise UsageError(f"{root} has no sample_input.npz to measure with", hint="export the artifact again")
    with np.load(sample, allow_pickle=False) as data:
        feed = {k: data[k] for k in data.files}
    signature = Signature.from_dict(manifest["io"])
    result = measure(lambda: backend.runner(model, signature, run_settings), feed, settings)
    if settings.throughput_seconds:
        result["throughput_mode"] = backend.throughput(model, run_settings, feed, settings.throughput_seconds)
    return {"schema_version": "kiln.bench/1", "artifact": str(root), "target": manifest["target"],
            "precision": manifest["precision"], "recorded": _recorded(root), **result}


def _bench_language_model(root: Path, manifest: dict, model: Path, settings: dict, bench: BenchSettings) -> dict:
    """Time to first token and decode tokens/s with a fixed random prompt (speed does not depend on the words)."""
    from kiln.llm.measure import speed

    layout = manifest["runtime"]["language_model"]
    prompt = np.random.default_rng(0).integers(0, layout["vocab_size"], PROMPT_TOKENS, dtype=np.int64)
    make = language_model_decoder(model, manifest["runtime"]["backend"], settings, layout)
    result = speed(make, prompt, NEW_TOKENS, max(1, min(bench.min_runs, 5)))
    return {"schema_version": "kiln.bench/1", "artifact": str(root), "target": manifest["target"],
            "precision": manifest["precision"], "language_model": result, "runtime_settings": settings}


PROMPT_TOKENS, NEW_TOKENS = 128, 64


def _language_model_artifact(root: Path, flag: str) -> tuple[dict, dict]:
    """The manifest and report of a language-model artifact whose files match its manifest."""
    import json

    manifest = load_manifest(root)
    if "language_model" not in manifest["runtime"]:
        raise UsageError(f"{flag} measures language-model artifacts; this one takes one input at a time",
                         hint=f"drop {flag} (kiln bench reports its throughput)")
    verify_files(root, manifest)
    return manifest, json.loads((root / "report.json").read_text(encoding="utf-8"))


def bench_serving(root: Path, threads: int | None) -> dict:
    """What the export's serve stage measures (kiln.llm.serving_bench), again, on this machine."""
    from transformers import AutoTokenizer

    from kiln.llm.concurrency import server_for
    from kiln.llm.serving_bench import measure_serving

    manifest, report = _language_model_artifact(root, "--serving")
    runtime = manifest["runtime"]
    threads = threads or int(report["settings"]["threads"])
    server_for(root, report, threads, 1)  # refuses in one line what has no serving engine, before loading anything
    if not (root / "tokenizer_config.json").is_file():
        raise UsageError("--serving writes its prompts with the artifact's tokenizer, and this one has none",
                         hint="export the artifact again from a source with a tokenizer")
    decoder = serving_decoder(root, runtime, report["serving"]["settings"], threads)
    served = measure_serving(root, report, decoder, AutoTokenizer.from_pretrained(str(root)), threads)
    return {"schema_version": "kiln.bench/1", "artifact": str(root), "target": manifest["target"],
            "precision": manifest["precision"], "serving": served}


def bench_concurrency(root: Path, levels: list[int], new_tokens: int, threads: int | None) -> dict:
    """The artifact served by its engine at each number of concurrent requests (kiln.llm.concurrency)."""
    from kiln.llm.concurrency import measure_concurrency

    manifest, report = _language_model_artifact(root, "--concurrency")
    layout = manifest["runtime"]["language_model"]
    threads = threads or int(report["settings"]["threads"])
    curve = measure_concurrency(root, report, levels, _questions(root, max(levels), layout["vocab_size"]), new_tokens,
                                threads)
    return {"schema_version": "kiln.bench/1", "artifact": str(root), "target": manifest["target"],
            "precision": manifest["precision"], "concurrency": curve}


def _questions(root: Path, count: int, vocab_size: int) -> list[list[int]]:
    """`count` short questions through the artifact's tokenizer and chat template (the export's serve stage asks the
    same); random token ids where the artifact has no tokenizer."""
    from kiln.llm.concurrency import random_prompts
    from kiln.llm.serving_bench import QUESTIONS, chat_prompts

    if not (root / "tokenizer_config.json").is_file():
        return random_prompts(count, vocab_size)
    from transformers import AutoTokenizer

    texts = [QUESTIONS[i % len(QUESTIONS)] + (f" (request {i + 1})" if i >= len(QUESTIONS) else "") for i in range(count)]
    return [list(map(int, ids)) for ids in chat_prompts(AutoTokenizer.from_pretrained(str(root)), texts)]


def serving_decoder(root: Path, runtime: dict, engine_settings: dict, threads: int):
    """kiln's decoder of the language-model artifact at `root` (`runtime`: its manifest's runtime block) under its
    engine's settings and `threads`, so that its tokens and the engine's can be compared."""
    settings = dict(runtime["settings"])
    if runtime["backend"] == "openvino":
        settings["config"] = {**settings.get("config", {}), **engine_settings, "INFERENCE_NUM_THREADS": str(threads)}
    else:
        settings["intra_op_num_threads"] = threads
    model = root / checked_relative_path(runtime["model"], "runtime.model")
    return language_model_decoder(model, runtime["backend"], settings, runtime["language_model"])()


def language_model_decoder(model: Path, backend: str, settings: dict, layout: dict):
    """A function that loads a language-model artifact's decoder as its runtime.json says to run it."""
    from kiln.llm.runners import OpenVinoDecoder, OrtDecoder

    if backend == "llamacpp":
        from kiln.llamacpp.decoder import LlamaCppDecoder
        from kiln.llamacpp.toolchain import find

        build = find()
        return lambda: LlamaCppDecoder(build, model, int(settings["n_threads"]), int(settings["n_ctx"]))
    if backend == "onnxruntime":
        return lambda: OrtDecoder(model, settings, layout)
    return lambda: OpenVinoDecoder(model, settings)


def _recorded(root: Path) -> dict | None:
    """p50/p99 measured at export, from report.json (measurements are not in the manifest)."""
    import json

    try:
        latency = json.loads((root / "report.json").read_text(encoding="utf-8")).get("latency_ms")
    except (OSError, ValueError):
        return None
    return {k: latency[k] for k in ("p50", "p99")} if isinstance(latency, dict) else None
