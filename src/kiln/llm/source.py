"""A local Hugging Face folder of a decoder-only model: recognised, sized and loaded without running its code."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from kiln._deps import require
from kiln.errors import UsageError

# model_type values of decoder-only causal LMs transformers runs without remote code, and kiln has checked
# (export parity test): llama, qwen2, phi3, mistral and gpt2 share the cache layout kiln's wrapper drives.
SUPPORTED = ("llama", "qwen2", "phi3", "mistral", "gpt2")
DECODER_TYPES = SUPPORTED + ("gpt_neo", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi", "gemma", "gemma2",
                             "gemma3", "qwen3", "mixtral", "starcoder2", "olmo", "stablelm", "mpt", "codegen")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "chat_template.jinja", "added_tokens.json")


def read_config(folder: Path) -> dict:
    """config.json of a Hugging Face folder, or a one-line error (read without importing transformers)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise UsageError(f"{folder}/config.json is not readable JSON ({str(exc)[:120]})",
                         hint="is this a Hugging Face model folder?") from None
    if not isinstance(config, dict):
        raise UsageError(f"{folder}/config.json holds a {type(config).__name__}, not an object",
                         hint="is this a Hugging Face model folder?")
    return config


def language_model(source: str, task: str | None, trust_remote_code: bool) -> tuple[Path, dict] | None:
    """(folder, config) when `source` is a Hugging Face folder of a decoder-only model to export as one; (file,
    config) for a GGUF file (its config from its metadata; the export makes the folder in its "source" stage)."""
    folder = Path(source)
    if folder.suffix.lower() == ".gguf" and folder.is_file() and task in (None, "text-generation"):
        from kiln.llm.gguf_source import gguf_config

        return folder, gguf_config(folder)
    if not (folder.is_dir() and (folder / "config.json").is_file()):
        if task == "text-generation":
            raise UsageError(f"{source} is not a Hugging Face folder; --task text-generation needs one",
                             hint="give the folder holding config.json, weights and tokenizer")
        return None
    cfg = read_config(folder)
    if not is_decoder(cfg):
        if task == "text-generation":
            raise UsageError(f"{folder.name} is an encoder ('{cfg.get('model_type', '?')}'), and text-generation "
                             f"needs a decoder-only model", hint="omit --task to export it as an encoder")
        return None
    if task not in (None, "text-generation"):
        return None  # open_huggingface says why an encoder task does not fit
    if cfg.get("auto_map") and not trust_remote_code:
        raise UsageError(f"{folder.name} asks to run its own Python code (auto_map in config.json)",
                         hint="pass --trust-remote-code if you trust this folder's code")
    return folder, cfg


def is_decoder(cfg: dict) -> bool:
    architectures = cfg.get("architectures") or []
    return cfg.get("model_type") in DECODER_TYPES or any(a.endswith("ForCausalLM") for a in architectures)


@dataclass(frozen=True)
class DecoderSpec:
    """What the graph's cache inputs look like, read from config.json."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    layers: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    max_positions: int
    parameters: int  # counted from the weight files' headers, before loading anything
    weight_bytes_fp32: int

    def io_names(self) -> tuple[list[str], list[str]]:
        past = [f"past_key_values.{i}.{kv}" for i in range(self.layers) for kv in ("key", "value")]
        present = [f"present.{i}.{kv}" for i in range(self.layers) for kv in ("key", "value")]
        return ["input_ids", "attention_mask", "position_ids", *past], ["logits", *present]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _safetensors_parameters(folder: Path) -> int:
    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with open(file, "rb") as handle:
            size = struct.unpack("<Q", handle.read(8))[0]
            header = json.loads(handle.read(size))
        for name, meta in header.items():
            if name != "__metadata__":
                count = 1
                for d in meta["shape"]:
                    count *= d
                total += count
    return total


def check_supported(folder: Path, cfg: dict) -> None:
    """The decoder families kiln exports to ONNX Runtime and OpenVINO (llama.cpp's converter says itself which
    architectures it knows)."""
    model_type = cfg.get("model_type", "?")
    if model_type not in SUPPORTED:
        raise UsageError(f"{folder.name} is a '{model_type}' decoder; kiln exports {', '.join(SUPPORTED)} decoders",
                         hint="this architecture's cache layout has not been checked by kiln yet")


def read_spec(folder: Path, cfg: dict) -> DecoderSpec:
    """The sizes kiln needs."""
    model_type = cfg.get("model_type", "?")

    def read(*keys, default=None):  # GPT-2's config names its sizes n_embd, n_layer, n_head, n_inner
        value = next((cfg[k] for k in keys if cfg.get(k) is not None), default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UsageError(f"{folder.name}/config.json has no positive integer {keys[0]} ({value!r})",
                             hint="is config.json complete? transformers' save_pretrained writes every size")
        return value

    heads = int(read("num_attention_heads", "n_head"))
    hidden = int(read("hidden_size", "n_embd"))
    parameters = _safetensors_parameters(folder)
    if not parameters:
        raise UsageError(f"{folder.name} has no .safetensors weights", hint="save the model with safe_serialization "
                                                                          "(kiln does not unpickle .bin weights)")
    return DecoderSpec(model_type, hidden, int(read("intermediate_size", "n_inner", default=4 * hidden)),
                       int(read("num_hidden_layers", "n_layer")), int(read("num_key_value_heads", default=heads)),
                       int(read("head_dim", default=hidden // heads)), int(read("vocab_size")),
                       int(read("max_position_embeddings", "n_positions", default=2048)), parameters, parameters * 4)


def check_memory(spec: DecoderSpec, max_memory: int | None, folder: Path) -> None:
    """Exporting holds the fp32 model and the exported graph, then the quantizer's copy: 2.2-2.3x the fp32
    weights measured for a 1.17 B Llama (docs/benchmarks.md); 3x is asked for, as headroom."""
    if max_memory is None:
        return
    need = 3 * spec.weight_bytes_fp32
    if need > max_memory:
        raise UsageError(f"{folder.name} has {spec.parameters / 1e9:.2f} B parameters: exporting needs about "
                         f"{need / 2**30:.1f} GiB, more than --max-memory {max_memory / 2**30:.1f} GiB",
                         hint="raise --max-memory on a machine with more memory, or export a smaller model")


def load_model(folder: Path, trust_remote_code: bool):
    """The torch model (fp32, eval, SDPA attention) and its tokenizer, offline."""
    transformers = require("transformers", why="loading a Hugging Face language model")
    torch = require("torch", why="loading a Hugging Face language model")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from kiln.quiet import quiet

    try:
        with quiet():
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True,
                                                                   trust_remote_code=trust_remote_code)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=trust_remote_code, dtype=torch.float32,
                attn_implementation="sdpa")
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"transformers cannot load {folder.name}: {str(exc).splitlines()[0][:300]}",
                         hint="check the folder has config.json, .safetensors weights and tokenizer files") from None
    return model.eval(), tokenizer
