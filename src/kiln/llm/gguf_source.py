"""A GGUF file as a language-model source: read by transformers (which dequantizes it to fp32) into a Hugging Face
folder, which every target then exports and measures against, as for any folder.

The fidelity figures are then against the GGUF's own weights, dequantized: a Q4_1 file is the model its publisher
shipped, rounded to 4 bits, and that is what the user has. transformers' `save_pretrained` refuses a model loaded
from GGUF ("quantized with gguf and is not serializable"), so the model is built from its config and the
dequantized tensors loaded into it, as transformers' own GGUF loader does.
"""

from __future__ import annotations

import os
from pathlib import Path

from kiln._deps import require
from kiln.errors import UsageError


def _gguf_error(path: Path, exc: Exception) -> UsageError:
    return UsageError(f"transformers cannot read {path.name} as a language model: {str(exc).splitlines()[0][:200]}",
                      hint="give a GGUF of an architecture transformers reads (llama, qwen2, mistral, phi3, gpt2...), "
                           "or its Hugging Face folder")


def gguf_config(path: Path) -> dict:
    """config.json's content for the GGUF's model, from its metadata alone (no tensors read)."""
    transformers = require("transformers", why="reading a GGUF language model")
    require("gguf", why="reading a GGUF language model")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from kiln.quiet import quiet

    try:
        with quiet():
            config = transformers.AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise _gguf_error(path, exc) from None
    cfg = config.to_dict()
    if not cfg.get("architectures"):
        names = transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        if config.model_type in names:
            cfg["architectures"] = [names[config.model_type]]
    return cfg


def folder_from_gguf(path: Path, out: Path) -> Path:
    """The GGUF as a Hugging Face folder under `out` (fp32 safetensors, config, tokenizer)."""
    transformers = require("transformers", why="reading a GGUF language model")
    torch = require("torch", why="reading a GGUF language model")
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from kiln.quiet import quiet

    try:
        with quiet():
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            config = transformers.AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    except (OSError, ValueError, KeyError, RuntimeError, NotImplementedError) as exc:
        raise _gguf_error(path, exc) from None
    missing, _ = model.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()}, strict=False)
    model.tie_weights()
    untied = [name for name in missing if "lm_head" not in name]
    if untied:
        raise UsageError(f"{path.name} lacks {len(untied)} of the model's tensors (first: {untied[0]})",
                         hint="is the GGUF complete?")
    out.mkdir(parents=True, exist_ok=True)
    with quiet():  # transformers draws a "Writing model shards" bar on stderr
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return out


def cached_folder_from_gguf(path: Path, out: Path, sha256: str, use_cache: bool = True) -> tuple[Path, bool]:
    """folder_from_gguf through the stage cache (key: the GGUF's bytes and the transformers release that reads it),
    linked into `out`: dequantizing SmolLM2-135M's GGUF takes about 30 s, and a user exports one GGUF to several
    targets, one after the other. Returns (the folder, whether it came from the cache)."""
    from importlib import metadata

    from kiln.artifact.cache import Cache, make_key
    from kiln.stage_cache import StageCache

    cache = Cache()
    stages = StageCache(cache if use_cache and _usable(cache.root) else None)
    key = make_key({"stage": "gguf-source", "logic": 1, "gguf": sha256,
                    "transformers": metadata.version("transformers"), "gguf_reader": metadata.version("gguf")})

    def save(folder: Path, files: Path) -> dict:
        _link_tree(folder, files)
        return {}

    def load(entry) -> Path:
        _link_tree(entry.path / "files", out)
        return out

    stages.run("gguf-source", key, f"{path.name} read into a Hugging Face folder",
               lambda: folder_from_gguf(path, out), save, load)
    return out, stages.outcome["gguf-source"] == "hit"


def _usable(root: Path) -> bool:
    """A cache folder kiln cannot write (read-only home, full disk) means reading without it, as the stages do."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        return os.access(root, os.W_OK)
    except OSError:
        return False


def _link_tree(src: Path, dest: Path) -> None:
    """Hard links where the file system allows (no copy of the fp32 weights), else copies. The entry's own folder is
    never handed out: a file added or replaced in `out` leaves the entry as it was (and an in-place edit of a linked
    file would fail the entry's hashes at the next lookup, which then reads the GGUF again)."""
    import shutil

    for file in sorted(p for p in src.rglob("*") if p.is_file()):
        target = dest / file.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(file, target)
        except OSError:
            shutil.copy2(file, target)
