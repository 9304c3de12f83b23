"""manifest.json: what the artifact is, where it came from, and the hash of every file in it."""

from __future__ import annotations

import json
import math
from pathlib import Path

from kiln.artifact.paths import checked_relative_path
from kiln.errors import UsageError, VerificationError
from kiln.exporters.base import sha256_file

MANIFEST_SCHEMA = "kiln.manifest/2"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
# What was measured on this run: different on every run, so not hashed in the manifest and not bundled.
MEASUREMENT_FILES = ("report.json", "report.md", "report.html")
UNLISTED = (MANIFEST_NAME, SIGNATURE_NAME, *MEASUREMENT_FILES)


def file_entries(root: Path, exclude: tuple[str, ...] = UNLISTED) -> list[dict]:
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in exclude:
            continue
        entries.append({"path": rel, "sha256": sha256_file(path), "bytes": path.stat().st_size})
    return entries


def _plain(value):
    """Strict JSON: NaN/Inf become null (jq, JavaScript and Go parsers reject them), paths become strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def dumps(data: dict) -> str:
    return json.dumps(_plain(data), indent=2, allow_nan=False)


def write_json(path: Path, data: dict) -> None:
    path.write_text(dumps(data) + "\n", encoding="utf-8")


def load_manifest(artifact: Path) -> dict:
    path = artifact / MANIFEST_NAME if artifact.is_dir() else artifact
    if not path.is_file():
        raise UsageError(f"{artifact} is not a kiln artifact (no {MANIFEST_NAME})",
                         hint="give the folder that `kiln export --out` wrote")
    from kiln.schemas import read_document

    return read_document(path.read_bytes(), str(path), "manifest", MANIFEST_SCHEMA,
                         damaged="the artifact is damaged; export it again",
                         other_version="re-export the artifact with this kiln version")


def verify_files(root: Path, manifest: dict) -> None:
    """Every file the manifest lists exists inside `root` and matches its sha256, or one line says which does not:
    a path that is malformed as text is a UsageError (a damaged document, exit 2), a file that differs or resolves
    outside the folder a VerificationError (exit 6). Holds even for a manifest no schema has checked."""
    base = root.resolve()
    for index, entry in enumerate(manifest["files"]):
        rel = checked_relative_path(entry["path"], f"{MANIFEST_NAME} files[{index}].path",
                                    hint="the manifest was damaged or tampered with; do not use this artifact")
        path = root / rel
        if base not in path.resolve().parents:
            raise VerificationError(f"the manifest lists {rel}, which resolves outside the artifact",
                                    hint="the artifact was tampered with (a link?); do not use it")
        if not path.is_file() or sha256_file(path) != entry["sha256"]:
            raise VerificationError(f"{rel} is missing or does not match its sha256 in the manifest",
                                    hint="the artifact was modified or damaged; export it again")
