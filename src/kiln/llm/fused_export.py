"""The decoder for ONNX Runtime as onnxruntime-genai's model builder writes it: attention fused.

The builder (the `llm` extra: onnxruntime-genai) writes the graph ONNX Runtime's own LLM runtime uses: one
GroupQueryAttention node per layer (rotary embedding and the KV-cache append inside), SkipSimplifiedLayerNorm,
q/k/v packed into one MatMul. About 340 nodes for SmolLM2-135M where the TorchScript trace leaves 3,300 after
ONNX Runtime's optimizer, most of them shape arithmetic: measured here, the int4 decoder goes from 2.2x to
4.6x torch eager with the runner's in-place cache (docs/benchmarks.md). It runs in a child process: it puts its
own modules (`builders`, `quantization`) on sys.path, and the memory it takes is returned when it exits.

kiln asks it for fp32 only and checks that graph against the torch model like any export; the weight-only
precisions are then applied by kiln's own quantizer (compile.py), the same for every export flavour.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kiln.errors import ExportError
from kiln.llm.export import DATA_NAME, parity
from kiln.llm.source import DecoderSpec
from kiln.signature import default_opset

# Architectures whose builder graphs were checked against the torch model here (tests/integration).
ARCHITECTURES = {"LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM", "Phi3ForCausalLM"}
EXPORTER = "onnxruntime-genai model builder"


def builder_version() -> str | None:
    """The installed onnxruntime-genai's version, or None when the `llm` extra is missing."""
    if importlib.util.find_spec("onnxruntime_genai") is None:
        return None
    from importlib.metadata import version

    return version("onnxruntime-genai")


def unsupported_reason(cfg: dict) -> str | None:
    """Why the builder is not used for this model, or None when it is."""
    if builder_version() is None:
        return "onnxruntime-genai is not installed (pip install 'kiln[llm]'): the TorchScript graph is used"
    architecture = (cfg.get("architectures") or ["?"])[0]
    if architecture not in ARCHITECTURES:
        return f"the model builder is not used for {architecture}"
    long_rope = cfg.get("original_max_position_embeddings", cfg.get("max_position_embeddings")) != \
        cfg.get("max_position_embeddings")
    if architecture == "Phi3ForCausalLM" and (cfg.get("rope_scaling") or long_rope):
        return "Phi-3 with long-context RoPE (LongRoPE) is not checked with the model builder"
    return None


def export_fused(model, spec: DecoderSpec, source: Path, folder: Path) -> dict:
    """Write folder/model.onnx (+ data) with the builder and check it against the torch model."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    work = folder / "builder"
    start = time.perf_counter()
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(work),
               "-p", "fp32", "-e", "cpu", "-c", str(folder / "builder-cache"),
               "--extra_options", "hf_token=false", "filename=model.onnx"]
    log = folder / "builder.log"
    with open(log, "wb") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if done.returncode != 0 or not (work / "model.onnx").is_file():
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        raise ExportError(f"the model builder failed (exit {done.returncode}): {(lines or ['no output'])[-1][:300]}",
                          hint="kiln falls back to the TorchScript export; --debug keeps the log")
    log.unlink()
    for name in ("model.onnx", DATA_NAME, "genai_config.json"):  # the last for onnxruntime-genai (llm/serving.py)
        shutil.move(str(work / name), str(folder / name))
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(folder / "builder-cache", ignore_errors=True)
    seconds = time.perf_counter() - start
    checks = parity(model, spec, folder / "model.onnx")
    return {"exporter": EXPORTER, "exporter_version": builder_version(), "opset": default_opset(onnx.load(str(folder / "model.onnx"), load_external_data=False)),
            "seconds": round(seconds, 3), "checks": checks,
            "notes": ["one graph for prompt and decoding: past length 0 for the prompt",
                      "attention fused: GroupQueryAttention with rotary embedding, packed q/k/v, "
                      "SkipSimplifiedLayerNormalization (ONNX Runtime contrib ops)"]}
