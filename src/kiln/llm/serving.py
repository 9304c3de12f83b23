"""Language-model artifacts that the engines people serve with load as they are, checked by loading them there.

openvino-genai (LLMPipeline, ContinuousBatchingPipeline: continuous batching, prompt lookup, speculative decoding)
reads a folder with `openvino_model.xml/.bin` (a stateful IR with a dynamic batch, beam_idx and attention kept as
ScaledDotProductAttention: openvino_export.py), the tokenizer and detokenizer IRs openvino-tokenizers writes (the
chat template inside), and `generation_config.json`. onnxruntime-genai (og.Model, Generator, n-gram and draft
speculation) reads the model builder's `genai_config.json` beside `model.onnx` and the tokenizer files.

kiln writes those files into the artifact's root, then loads the artifact in the engine and generates greedily:
the engine's tokens must be the artifact's own (kiln's generator, same settings). The settings under which they are
(EXACT_OPENVINO) are in the report; OpenVINO's defaults quantize activations and the KV cache on the fly, which
splits greedy decoding at near-ties between batched and single requests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

# openvino-genai settings under which the engine's greedy tokens are the artifact's own, batched or not (measured
# with SmolLM2-135M: 8 of 8 concurrent requests equal to one at a time with them, 1 of 8 without)
EXACT_OPENVINO = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0", "KV_CACHE_PRECISION": "f32"}
CHECK_TOKENS = 16
OPENVINO_MODEL = "openvino_model.xml"  # the only name openvino-genai looks for (besides openvino_language_model.xml)
OPENVINO_FEATURES = ("greedy and sampled generation", "continuous batching (ContinuousBatchingPipeline)",
                     "prompt lookup decoding", "speculative decoding with a draft model")
ONNXRUNTIME_FEATURES = ("greedy and sampled generation", "batched generation (Generator, og.Engine)",
                        "n-gram speculation", "speculative decoding with a draft model")


def write_openvino_tokenizers(tokenizer, staged: Path) -> dict:
    """openvino_tokenizer/_detokenizer IRs from the source's tokenizer (openvino-tokenizers), for openvino-genai to
    take text in and out; without the package the engine takes token ids only, and the report says so."""
    try:
        import openvino as ov
        from openvino_tokenizers import convert_tokenizer
    except ImportError:
        return {"tokenizer_ir": False, "tokenizer_reason": "openvino-tokenizers is not installed (pip install "
                                                 "'modelkiln[serving]'): the engine takes token ids only"}
    from kiln.quiet import quiet

    try:
        with quiet():
            encoder, decoder = convert_tokenizer(tokenizer, with_detokenizer=True)
    except Exception as exc:  # openvino-tokenizers raises its own types for tokenizers it cannot convert
        return {"tokenizer_ir": False, "tokenizer_reason": f"openvino-tokenizers could not convert the tokenizer: "
                                                 f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"}
    ov.save_model(encoder, str(staged / "openvino_tokenizer.xml"))
    ov.save_model(decoder, str(staged / "openvino_detokenizer.xml"))
    return {"tokenizer_ir": True}


def write_generation_config(staged: Path, tokenizer) -> None:
    """generation_config.json, which both engines read for the end-of-text token: the source's, else one from the
    tokenizer's special tokens (a GGUF source has no file of its own)."""
    if (staged / "generation_config.json").is_file() or tokenizer is None:
        return
    config = {k: v for k, v in (("bos_token_id", tokenizer.bos_token_id), ("eos_token_id", tokenizer.eos_token_id),
                                ("pad_token_id", tokenizer.pad_token_id)) if v is not None}
    (staged / "generation_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def write_genai_config(builder_config: Path, staged: Path, settings: dict) -> None:
    """The model builder's genai_config.json at the artifact's root, with kiln's threads and optimisation level in
    its session options (onnxruntime-genai 0.18 takes no session config entries or disabled optimisers)."""
    config = json.loads(builder_config.read_text(encoding="utf-8"))
    options = config["model"]["decoder"].setdefault("session_options", {})
    options.update(intra_op_num_threads=int(settings.get("intra_op_num_threads", 0)),
                   inter_op_num_threads=int(settings.get("inter_op_num_threads", 1)),
                   graph_optimization_level=settings.get("graph_optimization_level", "ORT_ENABLE_ALL"))
    config["model"]["decoder"]["filename"] = "model.onnx"
    (staged / "genai_config.json").write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def check_openvino_genai(staged: Path, prompt: np.ndarray, settings: dict, threads: int) -> dict:
    """Load the artifact in openvino-genai's LLMPipeline (its paged-attention backend: the one continuous batching,
    prompt lookup and speculation use), generate greedily, and compare with kiln's own generator on the same IR and
    settings."""
    version = _version("openvino-genai")
    if version is None:
        return {"engine": "openvino-genai", "loads": None,
                "reason": "openvino-genai is not installed here (pip install 'modelkiln[serving]')"}
    import openvino as ov
    import openvino_genai

    from kiln.llm.runners import OpenVinoDecoder, generate

    exact = {**EXACT_OPENVINO, "INFERENCE_NUM_THREADS": str(threads)}
    try:
        pipe = openvino_genai.LLMPipeline(str(staged), "CPU", ATTENTION_BACKEND="PA", **exact)
        config = openvino_genai.GenerationConfig()
        config.max_new_tokens, config.min_new_tokens, config.do_sample = CHECK_TOKENS, CHECK_TOKENS, False
        result = pipe.generate(ov.Tensor(prompt[None].astype(np.int64)), config)
        got = [int(t) for t in result.tokens[0]]
    except Exception as exc:  # the engine raises RuntimeError with its whole log; its first line names the cause
        return {"engine": "openvino-genai", "version": version, "loads": False,
                "reason": str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__}
    del pipe
    own = OpenVinoDecoder(staged / OPENVINO_MODEL, {**settings, "config": {**settings.get("config", {}), **exact}})
    expected = [int(t) for t in generate(own, prompt, CHECK_TOKENS).tokens]
    return {"engine": "openvino-genai", "version": version, "loads": True, "settings": EXACT_OPENVINO,
            "tokens_identical": _identical(expected, got), "tokens_checked": len(expected),
            "features": list(OPENVINO_FEATURES)}


def check_onnxruntime_genai(staged: Path, prompt: np.ndarray, expected: list[int]) -> dict:
    """Load the artifact in onnxruntime-genai (og.Model) and generate greedily; `expected` is kiln's own generator's
    greedy continuation of `prompt` on the same graph."""
    version = _version("onnxruntime-genai")
    if version is None:
        return {"engine": "onnxruntime-genai", "loads": None,
                "reason": "onnxruntime-genai is not installed here (pip install 'modelkiln[llm]')"}
    if not (staged / "genai_config.json").is_file():
        return {"engine": "onnxruntime-genai", "version": version, "loads": None,
                "reason": "the graph is the TorchScript export (the model builder does not take this architecture), "
                          "which onnxruntime-genai has no configuration for"}
    import onnxruntime_genai as og

    try:
        model = og.Model(str(staged))
        params = og.GeneratorParams(model)
        length = len(prompt) + len(expected)  # kiln's generator does not stop at the end-of-text token either
        params.set_search_options(do_sample=False, max_length=length, min_length=length)
        generator = og.Generator(model, params)
        generator.append_tokens(prompt[None].astype(np.int64))
        got = []
        while not generator.is_done() and len(got) < len(expected):
            generator.generate_next_token()
            got.append(int(generator.get_next_tokens()[0]))
    except Exception as exc:
        return {"engine": "onnxruntime-genai", "version": version, "loads": False,
                "reason": str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__}
    return {"engine": "onnxruntime-genai", "version": version, "loads": True, "settings": {},
            "tokens_identical": _identical(expected, got), "tokens_checked": len(expected),
            "features": list(ONNXRUNTIME_FEATURES)}


def _identical(expected: list[int], got: list[int]) -> int:
    """How many leading tokens agree."""
    same = 0
    for a, b in zip(expected, got):
        if a != b:
            break
        same += 1
    return same


def copy_tokenizer_files(folder: Path, staged: Path, names) -> list[str]:
    """The source's tokenizer files at the artifact's root, where both engines and generate.py read them."""
    copied = []
    for name in names:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, staged / name)
            copied.append(name)
    return copied
