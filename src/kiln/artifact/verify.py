"""`kiln verify`: an artifact folder or bundle is exactly what its manifest says, and signed by whom it claims.

Every file's size and sha256 against the manifest, the manifest against its schema, no file the manifest
does not list (except the measurement files of a folder), and, given a public key, the Ed25519 signature
of the manifest. Any mismatch is a VerificationError (exit 6) naming the first file that is wrong.
"""

from __future__ import annotations

from pathlib import Path

from kiln.artifact.bundle import read_members
from kiln.artifact.manifest import MANIFEST_NAME, MANIFEST_SCHEMA, MEASUREMENT_FILES, SIGNATURE_NAME
from kiln.errors import UsageError, VerificationError
from kiln.exporters.base import sha256_file

VERIFY_SCHEMA = "kiln.verify/1"


def _manifest(data: bytes, where: str) -> dict:
    from kiln.schemas import read_document

    return read_document(data, where, "manifest", MANIFEST_SCHEMA, error=VerificationError,
                         reader="this kiln verifies", damaged="the manifest was damaged, edited or replaced",
                         other_version="verify it with the kiln version that wrote it, or export it again")


def _compare(listed: list[dict], found: dict[str, tuple[str, int]], allowed_extra: set[str]) -> None:
    for entry in listed:
        got = found.get(entry["path"])
        if got is None:
            raise VerificationError(f"{entry['path']} is listed in the manifest but missing",
                                    hint="the artifact is incomplete; export or download it again")
        if got[1] != entry["bytes"] or got[0] != entry["sha256"]:
            raise VerificationError(f"{entry['path']} does not match its sha256 in the manifest",
                                    hint="the file was modified or damaged; export or download it again")
    extra = sorted(set(found) - {e["path"] for e in listed} - allowed_extra)
    if extra:
        raise VerificationError(f"{extra[0]} is not listed in the manifest"
                                + (f" (and {len(extra) - 1} more files)" if len(extra) > 1 else ""),
                                hint="a file was added after export; remove it or export again")


def _folder_files(root: Path) -> dict[str, tuple[str, int]]:
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise VerificationError(f"{rel} is a symbolic link", hint="kiln artifacts hold only files and folders")
        if path.is_file():
            found[rel] = (sha256_file(path), path.stat().st_size)
        elif not path.is_dir():
            raise VerificationError(f"{rel} is not a regular file", hint="kiln artifacts hold only files and folders")
    return found


def verify(path: Path, public_key: Path | None = None) -> dict:
    """Check a folder or a .tar.gz bundle; return what was checked (schema kiln.verify/1)."""
    if path.is_dir():
        if not (path / MANIFEST_NAME).is_file():
            raise UsageError(f"{path} is not a kiln artifact (no {MANIFEST_NAME})",
                             hint="give the folder `kiln export --out` wrote, or its --bundle .tar.gz")
        kind = "folder"
        found = _folder_files(path)
        manifest_bytes = (path / MANIFEST_NAME).read_bytes()
        signature = (path / SIGNATURE_NAME).read_text(encoding="utf-8", errors="replace") \
            if (path / SIGNATURE_NAME).is_file() else None
        allowed = {MANIFEST_NAME, SIGNATURE_NAME, *MEASUREMENT_FILES}
    elif path.is_file():
        kind = "bundle"
        contents, found = read_members(path)
        if MANIFEST_NAME not in contents:
            raise VerificationError(f"{path} holds no {MANIFEST_NAME}", hint="not a kiln bundle, or it was tampered with")
        manifest_bytes = contents[MANIFEST_NAME]
        signature = contents[SIGNATURE_NAME].decode("utf-8", errors="replace") if SIGNATURE_NAME in contents else None
        allowed = {MANIFEST_NAME, SIGNATURE_NAME}
    else:
        raise UsageError(f"{path} does not exist", hint="give an artifact folder or a bundle .tar.gz")
    manifest = _manifest(manifest_bytes, f"{path.name}/{MANIFEST_NAME}")
    _compare(manifest["files"], found, allowed)
    if public_key is not None:
        if signature is None:
            raise VerificationError(f"{path} is not signed", hint="export it with --sign-key, or verify without "
                                                                  "--public-key")
        from kiln.artifact.signing import check

        check(manifest_bytes, signature, public_key)
        signed = "valid"
    else:
        signed = "present, not checked (no --public-key)" if signature is not None else "absent"
    return {"schema_version": VERIFY_SCHEMA, "path": str(path), "kind": kind, "ok": True,
            "files": len(manifest["files"]), "bytes": sum(e["bytes"] for e in manifest["files"]),
            "signature": signed, "target": manifest["target"]["name"], "precision": manifest["precision"],
            "reproducibility": manifest.get("reproducibility")}
