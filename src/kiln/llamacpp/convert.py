"""A Hugging Face decoder folder to a GGUF file by llama.cpp's own converter (the commit the runtime was built from:
the pre-tokenizer hash table and the tensor names must match the runtime that reads them), and what a GGUF holds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from kiln._deps import require
from kiln.errors import ExportError, MissingDependencyError, UnsupportedTargetError
from kiln.llamacpp.toolchain import COMMIT, LlamaCpp

OUTTYPES = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}


def known_architectures(build: LlamaCpp) -> frozenset[str]:
    """The Hugging Face architectures the converter registers (`@ModelBase.register("LlamaForCausalLM", ...)`), read
    from its source without importing it (that imports torch)."""
    names: set[str] = set()
    for path in (build.converter.parent / "conversion").glob("*.py"):
        for block in re.findall(r"@ModelBase\.register\(([^)]*)\)", path.read_text(encoding="utf-8")):
            names.update(re.findall(r"[\"']([A-Za-z0-9_]+)[\"']", block))
    return frozenset(names)


def check_architecture(build: LlamaCpp, folder: Path, cfg: dict) -> None:
    """Refuse before any work a plain text model whose architecture the converter does not register (a model
    with a text_config is routed by the converter itself, so it is left to it)."""
    architectures = cfg.get("architectures") or []
    if not architectures or "text_config" in cfg:
        return
    if architectures[0] not in known_architectures(build):
        raise UnsupportedTargetError(f"llama.cpp ({COMMIT}) cannot convert {folder.name}: its converter does not "
                                     f"know the architecture {architectures[0]}",
                                     hint="export it with --target onnxruntime or --target openvino")


def convert(build: LlamaCpp, folder: Path, out: Path, precision: str) -> dict:
    """`convert_hf_to_gguf.py FOLDER --outtype f32|f16|bf16`, run with this Python (torch, transformers) and the
    converter's own gguf-py; its refusals become one-line errors."""
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(build.converter), str(folder), "--outfile", str(out),
                             "--outtype", OUTTYPES[precision]], capture_output=True, text=True, env=env,
                            errors="replace")
    log = result.stdout + result.stderr
    if result.returncode != 0 or not out.is_file():
        _refusal(log, folder)
        tail = " | ".join(line.strip() for line in log.strip().splitlines()[-2:])
        raise ExportError(f"llama.cpp's converter failed on {folder.name}: {tail[-300:]}")
    record = inspect(out)
    if record["tokenizer"]["model"] == "gpt2" and not record["tokenizer"]["pre"]:
        raise ExportError(f"the GGUF of {folder.name} has no tokenizer.ggml.pre: llama.cpp would fall back to the "
                          f"default pre-tokenizer and generate worse text",
                          hint="a tokenizer this llama.cpp commit does not know; use --target onnxruntime or openvino")
    record.update({"converter": f"llama.cpp {COMMIT} convert_hf_to_gguf.py", "outtype": OUTTYPES[precision],
                   "seconds": round(time.perf_counter() - started, 2)})
    return record


def _refusal(log: str, folder: Path) -> None:
    unsupported = re.search(r"Model (\S+) is not supported", log)
    if unsupported:
        raise UnsupportedTargetError(f"llama.cpp ({COMMIT}) cannot convert {folder.name}: its converter does not "
                                     f"know the architecture {unsupported.group(1)}",
                                     hint="export it with --target onnxruntime or --target openvino")
    if "pre-tokenizer was not recognized" in log:
        raise UnsupportedTargetError(f"llama.cpp ({COMMIT}) does not know {folder.name}'s pre-tokenizer (its hash is "
                                     f"not in convert_hf_to_gguf.py's table)",
                                     hint="export it with --target onnxruntime or --target openvino")
    missing = re.search(r"No module named '([\w.]+)'", log)
    if missing:
        raise MissingDependencyError(f"llama.cpp's converter needs the Python package '{missing.group(1)}'",
                                     hint="pip install 'modelkiln[llamacpp]'")


def inspect(path: Path) -> dict:
    """Architecture, tokenizer metadata and tensor types of a GGUF file (read with the `gguf` package)."""
    gguf = require("gguf", why="reading GGUF files")
    reader = gguf.GGUFReader(str(path))

    def field(name: str):
        f = reader.fields.get(name)
        if f is None:
            return None
        value = f.contents()
        return value

    types = Counter(t.tensor_type.name for t in reader.tensors)
    parameters = sum(int(t.n_elements) for t in reader.tensors)
    tensor_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    return {"architecture": field("general.architecture"), "file_type": field("general.file_type"),
            "tokenizer": {"model": field("tokenizer.ggml.model"), "pre": field("tokenizer.ggml.pre"),
                          "tokens": len(reader.fields["tokenizer.ggml.tokens"].data)
                          if "tokenizer.ggml.tokens" in reader.fields else 0,
                          "chat_template": field("tokenizer.chat_template") is not None},
            "tensors": len(reader.tensors), "tensor_types": dict(sorted(types.items())), "parameters": parameters,
            "bytes": path.stat().st_size, "tensor_bytes": tensor_bytes,
            "bits_per_weight": round(tensor_bytes * 8 / max(parameters, 1), 3)}
