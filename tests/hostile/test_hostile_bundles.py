"""Hostile bundles and artifact folders for `kiln verify [--public-key PEM] [--extract DIR]` and `kiln bench`.

Malicious or malformed archives (path traversal, links, devices, duplicates, not gzip at all) are refused as bad
input (exit 2) before anything is unpacked. An archive or folder whose content does not match its manifest, or
whose manifest does not match its signature, fails verification (exit 6). A refused --extract writes nothing:
neither the destination nor anything beside it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from tests.hostile.helpers import (USAGE, VERIFY_FAILED, assert_refused, error_line, file_entry, kiln,
                                   rebundle, snapshot, special_entry, write_tar_gz)


def verify(path: Path, *extra):
    return kiln("verify", path, "--quiet", *extra)


def _flip_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:]


def _unsafe_entry(kind: str, tmp_path: Path) -> tuple[str, tuple]:
    """(the name kiln must report, the hostile (TarInfo, data) entry)."""
    if kind == "dotdot":
        return "../evil.txt", file_entry("../evil.txt", b"pwned\n")
    if kind == "absolute":
        name = str(tmp_path / "absolute-evil.txt")  # absolute, and unique to this test
        return name, file_entry(name, b"pwned\n")
    if kind == "symlink":
        return "model-link", special_entry("model-link", tarfile.SYMTYPE, linkname=str(tmp_path / "outside.txt"))
    if kind == "hardlink":
        return "runner-link", special_entry("runner-link", tarfile.LNKTYPE, linkname="/etc/passwd")
    if kind == "char_device":
        return "zero", special_entry("zero", tarfile.CHRTYPE, devmajor=1, devminor=5)
    if kind == "fifo":
        return "pipe", special_entry("pipe", tarfile.FIFOTYPE)
    if kind == "dot_slash_duplicate":
        return "./model.onnx", file_entry("./model.onnx", b"replacement")
    raise AssertionError(kind)


UNSAFE_NEEDLE = {"dotdot": "points outside the bundle", "absolute": "points outside the bundle",
                 "symlink": "is a link", "hardlink": "is a link", "char_device": "is a device, fifo",
                 "fifo": "is a device, fifo", "dot_slash_duplicate": "points outside the bundle"}


# -- malicious archive structure: exit 2, nothing unpacked ---------------------------------------------------------

@pytest.mark.parametrize("kind", list(UNSAFE_NEEDLE))
def test_unsafe_bundle_entry_is_refused(built, tmp_path, kind):
    """A real bundle plus one unsafe entry (.., absolute, link, device, fifo, ./ alias): exit 2 naming the entry."""
    name, entry = _unsafe_entry(kind, tmp_path)
    bundle = rebundle(tmp_path / "evil.tar.gz", built.members, [entry])
    error_line(verify(bundle), USAGE, f"bundle entry '{name}'", UNSAFE_NEEDLE[kind])


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "char_device"])
def test_unsafe_bundle_is_not_extracted(built, tmp_path, kind):
    """`verify --extract DEST` of a bundle with an unsafe entry: exit 2, DEST not created, nothing written outside."""
    name, entry = _unsafe_entry(kind, tmp_path)
    bundle = rebundle(tmp_path / "evil.tar.gz", built.members, [entry])
    work = tmp_path / "work"
    work.mkdir()
    dest = work / "dest"
    error_line(verify(bundle, "--extract", dest), USAGE, f"bundle entry '{name}'")
    assert not dest.exists()
    assert list(work.iterdir()) == [], "something was written beside the destination"
    assert not (tmp_path / "absolute-evil.txt").exists() and not (tmp_path / "outside.txt").exists()


def test_duplicate_manifest_entries_are_refused(built, tmp_path):
    """A second manifest.json after the real one (a swap attack on extraction): exit 2, appears twice."""
    forged = json.loads(built.unsigned_members["manifest.json"])
    forged["files"] = []
    bundle = rebundle(tmp_path / "dup.tar.gz", built.unsigned_members,
                      [file_entry("manifest.json", json.dumps(forged).encode())])
    error_line(verify(bundle), USAGE, "bundle entry 'manifest.json' appears twice")


def test_truncated_bundle_is_refused(built, tmp_path):
    """The first half of a real bundle's bytes: exit 2, truncated or corrupt."""
    data = built.bundle.read_bytes()
    bundle = tmp_path / "cut.tar.gz"
    bundle.write_bytes(data[: len(data) // 2])
    error_line(verify(bundle), USAGE, f"{bundle} is truncated or corrupt")


@pytest.mark.parametrize("kind", ["text", "empty", "uncompressed_tar"])
def test_file_that_is_not_a_gzip_bundle_is_refused(built, tmp_path, kind):
    """A .tar.gz that is plain text, empty, or an uncompressed tar: exit 2, not a readable .tar.gz bundle."""
    bundle = tmp_path / f"{kind}.tar.gz"
    if kind == "text":
        bundle.write_text("this is the release bundle, promise\n", encoding="utf-8")
    elif kind == "empty":
        bundle.write_bytes(b"")
    else:
        with tarfile.open(bundle, "w") as tar:
            for name, data in built.members.items():
                info, _ = file_entry(name, data)
                tar.addfile(info, io.BytesIO(data))
    error_line(verify(bundle), USAGE, f"{bundle} is not a readable .tar.gz bundle")


# -- content that does not match the manifest: exit 6 -------------------------------------------------------------

def test_bundle_with_one_flipped_byte_in_the_model_fails_verification(built, tmp_path):
    """A real bundle rewritten with one bit of model.onnx flipped: exit 6 naming model.onnx."""
    members = dict(built.unsigned_members, **{"model.onnx": _flip_byte(built.unsigned_members["model.onnx"])})
    bundle = rebundle(tmp_path / "tampered.tar.gz", members)
    error_line(verify(bundle), VERIFY_FAILED, "model.onnx does not match its sha256 in the manifest")


def test_bundle_with_an_extra_unlisted_file_fails_verification(built, tmp_path):
    """A real bundle plus sitecustomize.py the manifest does not list: exit 6 naming it."""
    bundle = rebundle(tmp_path / "extra.tar.gz", built.unsigned_members,
                      [file_entry("sitecustomize.py", b"import os; os.system('id')\n")])
    error_line(verify(bundle), VERIFY_FAILED, "sitecustomize.py is not listed in the manifest")


def test_bundle_missing_a_listed_file_fails_verification(built, tmp_path):
    """A real bundle without run.py, which the manifest lists: exit 6, listed but missing."""
    members = {k: v for k, v in built.unsigned_members.items() if k != "run.py"}
    error_line(verify(rebundle(tmp_path / "short.tar.gz", members)), VERIFY_FAILED,
               "run.py is listed in the manifest but missing")


def test_bundle_without_manifest_fails_verification(built, tmp_path):
    """A bundle of the artifact's files but no manifest.json: exit 6, holds no manifest."""
    members = {k: v for k, v in built.unsigned_members.items() if k != "manifest.json"}
    bundle = rebundle(tmp_path / "bare.tar.gz", members)
    error_line(verify(bundle), VERIFY_FAILED, f"{bundle} holds no manifest.json")


def _edit_manifest(manifest: bytes, edit: str) -> bytes:
    if edit == "not_json":
        return manifest[: len(manifest) // 2]
    data = json.loads(manifest)
    if edit == "wrong_sha256":
        entry = next(e for e in data["files"] if e["path"] == "model.onnx")
        entry["sha256"] = "0" * 64
    elif edit == "unlisted_model":
        data["files"] = [e for e in data["files"] if e["path"] != "model.onnx"]
    elif edit == "future_schema":
        data["schema_version"] = "kiln.manifest/99"
    elif edit == "no_files_key":
        del data["files"]
    return json.dumps(data).encode()


@pytest.mark.parametrize("edit,needle", [("wrong_sha256", "model.onnx does not match its sha256"),
                                         ("unlisted_model", "model.onnx is not listed in the manifest"),
                                         ("future_schema", "has schema 'kiln.manifest/99'"),
                                         ("no_files_key", "breaks the manifest schema"),
                                         ("not_json", "manifest.json is not valid JSON")])
def test_bundle_whose_manifest_was_edited_fails_verification(built, tmp_path, edit, needle):
    """An unsigned bundle whose manifest.json was edited (a hash, the file list, the schema, cut short): exit 6."""
    members = dict(built.unsigned_members)
    members["manifest.json"] = _edit_manifest(members["manifest.json"], edit)
    error_line(verify(rebundle(tmp_path / "edited.tar.gz", members)), VERIFY_FAILED, needle)


# -- signatures: exit 6 when the signature is absent, wrong or broken ---------------------------------------------

def test_signed_bundle_verified_with_another_key_fails(built):
    """A genuinely signed bundle checked against a different Ed25519 public key: exit 6."""
    error_line(verify(built.bundle, "--public-key", built.other_public_key), VERIFY_FAILED,
               "signature does not verify with this public key")


def test_signed_bundle_whose_manifest_was_edited_fails_with_the_right_key(built, tmp_path):
    """A signed bundle whose manifest says int8 instead of fp32 (files untouched), right key: exit 6."""
    members = dict(built.members)
    manifest = json.loads(members["manifest.json"])
    manifest["precision"] = "int8"
    members["manifest.json"] = json.dumps(manifest, indent=2).encode()
    error_line(verify(rebundle(tmp_path / "relabelled.tar.gz", members), "--public-key", built.public_key),
               VERIFY_FAILED, "signature does not verify with this public key")


def test_signed_bundle_with_a_garbage_signature_file_fails(built, tmp_path):
    """A signed bundle whose manifest.json.sig was replaced by garbage: exit 6, malformed signature."""
    members = dict(built.members, **{"manifest.json.sig": b"kiln.signature/1 ed25519\n!!!not base64!!!\n"})
    error_line(verify(rebundle(tmp_path / "badsig.tar.gz", members), "--public-key", built.public_key),
               VERIFY_FAILED, "signature")


def test_unsigned_bundle_verified_with_a_public_key_fails(built):
    """An unsigned bundle checked with --public-key: exit 6, not signed."""
    error_line(verify(built.unsigned_bundle, "--public-key", built.public_key), VERIFY_FAILED,
               f"{built.unsigned_bundle} is not signed")


@pytest.mark.parametrize("kind", ["private_key", "text", "missing"])
def test_public_key_that_is_not_a_public_pem_key(built, tmp_path, kind):
    """--public-key that is the private key, plain text, or missing: exit 2 naming the key file."""
    if kind == "private_key":
        key = built.key
    else:
        key = tmp_path / "pub.pem"
        if kind == "text":
            key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA user@host\n", encoding="utf-8")
    needle = f"cannot read the public key {key}" if kind == "missing" else f"{key} is not an unencrypted PEM public key"
    error_line(verify(built.bundle, "--public-key", key), USAGE, needle)


# -- artifact folders ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change,needle", [("flip_model_byte", "model.onnx does not match its sha256"),
                                           ("symlink", "passwd is a symbolic link"),
                                           ("fifo", "pipe is not a regular file"),
                                           ("extra_file", "notes.py is not listed in the manifest")])
def test_tampered_artifact_folder_fails_verification(built, tmp_path, change, needle):
    """A copy of a real artifact folder with a flipped byte, a symlink, a fifo or an extra file: exit 6."""
    folder = tmp_path / "artifact"
    shutil.copytree(built.artifact, folder)
    if change == "flip_model_byte":
        (folder / "model.onnx").write_bytes(_flip_byte((folder / "model.onnx").read_bytes()))
    elif change == "symlink":
        (folder / "passwd").symlink_to("/etc/passwd")
    elif change == "fifo":
        os.mkfifo(folder / "pipe")
    else:
        (folder / "notes.py").write_text("print('hi')\n", encoding="utf-8")
    error_line(verify(folder), VERIFY_FAILED, needle)


def test_bench_refuses_a_tampered_artifact(built, tmp_path):
    """`kiln bench` on an artifact whose model.onnx has a flipped byte: exit 6 as `kiln verify`, never runs the model."""
    folder = tmp_path / "artifact"
    shutil.copytree(built.artifact, folder)
    (folder / "model.onnx").write_bytes(_flip_byte((folder / "model.onnx").read_bytes()))
    error_line(kiln("bench", folder, "--quiet", "--runs", "1", "--warmup", "0", "--min-seconds", "0"),
               VERIFY_FAILED, "model.onnx is missing or does not match its sha256")


def test_bench_refuses_a_manifest_without_runtime(built, tmp_path):
    """`kiln bench` on an artifact whose manifest lost its runtime section: exit 2, breaks the manifest schema."""
    folder = tmp_path / "artifact"
    shutil.copytree(built.artifact, folder)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    del manifest["runtime"]
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    error_line(kiln("bench", folder, "--quiet", "--runs", "1", "--warmup", "0", "--min-seconds", "0"), USAGE,
               "manifest.json breaks the manifest schema", "'runtime'")


# -- --extract ----------------------------------------------------------------------------------------------------

def test_extract_into_an_existing_folder_is_refused(built, tmp_path):
    """`verify --extract DEST` of a good bundle where DEST already exists: exit 2, DEST left as it was."""
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("mine\n", encoding="utf-8")
    before = snapshot(dest)
    assert_refused(verify(built.bundle, "--extract", dest), USAGE, f"{dest} already exists", out=dest,
                   before=before)


def test_extract_of_an_artifact_folder_is_refused(built, tmp_path):
    """`verify --extract DEST` given a folder, not a bundle: exit 2, DEST not created."""
    dest = tmp_path / "dest"
    assert_refused(verify(built.artifact, "--extract", dest), USAGE, "--extract unpacks a bundle", out=dest)


def test_extract_under_a_regular_file_is_refused(built, tmp_path):
    """`verify --extract notes.txt/dest` where notes.txt is a file: exit 2 in one line, notes.txt untouched."""
    notes = tmp_path / "notes.txt"
    notes.write_text("keep\n", encoding="utf-8")
    assert_refused(verify(built.bundle, "--extract", notes / "dest"), USAGE, str(notes), out=notes, before=b"keep\n")


def test_bundle_with_a_folder_entry_shadowing_a_listed_file_is_refused(built, tmp_path):
    """A folder entry 'model.onnx/' before the real model.onnx, with --extract: exit 2, appears twice, DEST not made."""
    entries = [special_entry("model.onnx", tarfile.DIRTYPE)]
    entries += [file_entry(name, data) for name, data in built.unsigned_members.items()]
    bundle = write_tar_gz(tmp_path / "shadow.tar.gz", entries)
    work = tmp_path / "work"
    work.mkdir()
    result = verify(bundle, "--extract", work / "dest")
    error_line(result, USAGE, "bundle entry 'model.onnx' appears twice")
    assert list(work.iterdir()) == [], "the destination or a staging folder was left behind"
