"""`--draft DRAFT`: a second kiln language-model artifact shipped inside the first as its speculative-decoding draft.

The draft guesses tokens that the model checks in one pass (speculate.generate_with_draft), so both must read and
write the same token ids: the draft's tokenizer and logits width must be the model's, or the export is refused in one
line. The draft's files go into `draft/` and are hashed with the rest by the artifact's manifest, so a bundle carries
both. The engines take it from there: openvino-genai as `draft_model("ARTIFACT/draft")`, onnxruntime-genai through
`draft/speculative.json`, an overlay of the artifact's genai_config.json (its n-gram and draft speculation cannot be
switched off per request, so the root configuration stays plain).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kiln.errors import UsageError

DRAFT_DIR = "draft"
OVERLAY = "speculative.json"


def check_draft_artifact(path: Path, backend: str) -> None:
    """Before any work: `path` is a language-model artifact of `backend`, intact, that its engine loaded; a one-line
    UsageError where it is not."""
    from kiln.artifact import load_manifest, verify_files

    if not (path / "manifest.json").is_file():
        raise UsageError(f"--draft {path} is not a kiln artifact (no manifest.json)",
                         hint=f"export the draft first: kiln export DRAFT_MODEL --target {backend} --out DRAFT")
    manifest = load_manifest(path)
    runtime = manifest["runtime"]
    if "language_model" not in runtime:
        raise UsageError(f"--draft {path} is not a language-model artifact", hint="pass a decoder's artifact")
    if runtime["backend"] != backend:
        raise UsageError(f"--draft {path} runs on {runtime['backend']}, the model on {backend}: the engine loads "
                         f"both", hint=f"export the draft with --target {backend}")
    verify_files(path, manifest)
    report = json.loads((path / "report.json").read_text(encoding="utf-8"))
    if not (report.get("serving") or {}).get("loads"):
        raise UsageError(f"--draft {path}: its serving engine did not load it at export",
                         hint="export the draft again with the serving extra installed")


def check_draft_tokens(path: Path, tokenizer, vocab_size: int) -> dict:
    """The draft at `path` reads and writes the model's token ids (same tokenizer, same logits width), else a
    one-line UsageError; what the report says of it."""
    from kiln.artifact import load_manifest

    manifest = load_manifest(path)
    runtime = manifest["runtime"]
    report = json.loads((path / "report.json").read_text(encoding="utf-8"))
    if runtime["language_model"]["vocab_size"] != vocab_size:
        raise UsageError(f"--draft {path} scores {runtime['language_model']['vocab_size']} tokens, the model "
                         f"{vocab_size}: a draft must share the model's tokenizer", hint="pick a draft of the same family")
    _same_tokenizer(path, tokenizer)
    return {"artifact": path.name, "target": manifest["target"]["name"], "precision": manifest["precision"],
            "source": manifest.get("source", {}).get("location"),
            "parameters": report["model"].get("parameters"), "weights_mib": report["size"]["model_mib"]}


def _same_tokenizer(path: Path, tokenizer) -> None:
    if not (path / "tokenizer.json").is_file():
        raise UsageError(f"--draft {path} has no tokenizer.json to compare with the model's",
                         hint="export the draft again from a source with a tokenizer")
    from tokenizers import Tokenizer

    theirs = Tokenizer.from_file(str(path / "tokenizer.json")).get_vocab(with_added_tokens=True)
    ours = tokenizer.get_vocab()
    differ = sum(ours.get(token) != index for token, index in theirs.items()) + len(set(ours) - set(theirs))
    if differ:
        raise UsageError(f"--draft {path} has another tokenizer: {differ} of {max(len(ours), len(theirs))} tokens "
                         f"differ in id; a draft must read and write the model's token ids",
                         hint="pick a draft of the same family (same tokenizer)")


def bundle_draft(path: Path, staged: Path, backend: str) -> list[str]:
    """The draft's files in `staged/draft/` (what its manifest lists, and the manifest), and for
    onnxruntime-genai the overlay that adds it to the model's configuration."""
    from kiln.artifact import load_manifest

    manifest = load_manifest(path)
    folder = staged / DRAFT_DIR
    names = [entry["path"] for entry in manifest["files"]] + ["manifest.json"]
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path / name, folder / name)
    if backend == "onnxruntime":
        config = json.loads((path / "genai_config.json").read_text(encoding="utf-8"))
        decoder = config["model"]["decoder"]
        decoder["filename"] = f"{DRAFT_DIR}/{decoder['filename']}"
        overlay = {"model": {"draft": decoder}, "speculative": {"max_draft_tokens": 4}}
        (folder / OVERLAY).write_text(json.dumps(overlay, indent=4) + "\n", encoding="utf-8")
        names.append(OVERLAY)
    return [f"{DRAFT_DIR}/{name}" for name in names]
