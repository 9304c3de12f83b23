"""Fuzzed bundles: read_members and kiln verify on random bytes, damaged real bundles and tar files built from
random members refuse with UsageError or account for every member, with plain relative names."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from kiln.artifact.bundle import read_members
from kiln.artifact.manifest import (MANIFEST_NAME, SIGNATURE_NAME)
from kiln.artifact.verify import verify
from kiln.errors import UsageError, VerificationError
from tests.fuzz.common import (FUZZ, stable_words, tar_member)


# -- 4. bundles: read_members and verify ------------------------------------------------------------------

def assert_plain_names(names) -> None:
    for name in names:
        parts = name.replace("\\", "/").split("/")
        assert name and not PurePosixPath(name).is_absolute() and not name.startswith("/"), name
        assert ".." not in parts and "." not in parts and "" not in parts, name


def check_read_members(path: Path):
    try:
        contents, digests = read_members(path)
    except UsageError as exc:
        assert exc.hint, exc.message
        event(f"refused: {stable_words(exc.message)}")
        return None
    event("read")
    assert_plain_names(digests)
    assert set(contents) <= set(digests)
    return contents, digests


@dataclass(frozen=True)
class ByteEdit:
    """Damage to the real bundle's tar stream: overwrite bytes at `at` (modulo its length), then maybe cut it."""

    writes: tuple[tuple[int, bytes], ...]
    keep: float | None = None  # keep this fraction of the bytes


BYTE_EDITS = st.builds(ByteEdit, st.lists(st.tuples(st.integers(0, 2**20), st.binary(min_size=1, max_size=8)),
                                          max_size=4).map(tuple), st.one_of(st.none(), st.floats(0, 1)))


def damaged(tar: bytes, edit: ByteEdit) -> bytes:
    data = bytearray(tar)
    for at, chunk in edit.writes:
        at %= len(data)
        data[at:at + len(chunk)] = chunk
    if edit.keep is not None:
        data = data[:int(len(data) * edit.keep)]
    return gzip.compress(bytes(data), mtime=0)


@FUZZ
@given(content=st.one_of(st.binary(max_size=600), st.binary(max_size=2000).map(lambda b: gzip.compress(b, mtime=0)),
                         BYTE_EDITS))
@example(content=b"")
@example(content=gzip.compress(b"", mtime=0))
@example(content=gzip.compress(b"\0" * 1024, mtime=0))
@example(content=gzip.compress(b"x" * 512, mtime=0)[:-6])
def test_read_members_of_fuzzed_bytes_raises_only_usage_error(artifact, content):
    with tempfile.TemporaryDirectory(prefix="kiln-fuzz-") as tmp:
        path = Path(tmp) / "bundle.tar.gz"
        path.write_bytes(content if isinstance(content, bytes) else damaged(artifact.tar, content))
        check_read_members(path)


MEMBER_TYPES = [tarfile.REGTYPE, tarfile.REGTYPE, tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE]
FILE_TYPES = {tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE}
MEMBER_NAMES = st.one_of(
    st.sampled_from(["manifest.json", "manifest.json.sig", "model.onnx", "a/b.txt", "..", "../x", "a/../../x",
                     "/etc/passwd", "/", "", ".", "./a", "a/./b", "a//b", "a/", "a/..", "../", "C:x", "C:\\x", "a\\..\\b",
                     "\u65e5\u672c/\u8a9e", "~/x", "...", " ", "a\x00b", "x" * 150]),
    st.lists(st.sampled_from(["a", "b", "..", ".", "", "\u65e5\u672c", "\u00f1"]), min_size=1, max_size=4).map("/".join),
    st.lists(st.sampled_from(["a", "b", "model.onnx", "\u65e5\u672c", "x" * 60]), min_size=1, max_size=3).map("/".join),
    st.text(max_size=20))
MEMBERS = st.lists(st.fixed_dictionaries({
    "name": MEMBER_NAMES, "type": st.sampled_from(MEMBER_TYPES), "size": st.integers(0, 3000),
    "linkname": st.sampled_from(["", "a", "../outside", "/etc/passwd", "model.onnx"])}), max_size=6)


def build_tar(members: list[dict], fmt: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A tar.gz of `members`, and the (name, bytes) of its regular files; data is unique per member."""
    for attempt_format in (fmt, tarfile.PAX_FORMAT):  # USTAR cannot hold every name: fall back to PAX
        buffer, files = io.BytesIO(), []
        try:
            with tarfile.open(fileobj=buffer, mode="w", format=attempt_format) as tar:
                for index, member in enumerate(members):
                    info = tarfile.TarInfo(member["name"])
                    info.type, info.mode, info.mtime = member["type"], 0o644, 0
                    data = None
                    if member["type"] in FILE_TYPES:
                        data = (f"member {index}\n".encode() * (member["size"] // 8 + 1))[:member["size"]]
                        info.size = len(data)
                        files.append((member["name"], data))
                    if member["type"] in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                        info.linkname = member["linkname"]
                    tar.addfile(info, io.BytesIO(data) if data is not None else None)
        except ValueError:
            continue
        return gzip.compress(buffer.getvalue(), mtime=0), files
    raise AssertionError("PAX holds any name")


def folder_like(member: dict) -> bool:
    """An AREGTYPE member named 'x/' (tar cuts names at NUL): tarfile may read it as a folder and then, if it has
    data, not skip that data: the trigger of SILENT_STOP below."""
    return member["type"] == tarfile.AREGTYPE and member["name"].split("\x00")[0].endswith("/")


def read_built(members: list[dict], fmt: int):
    """read_members of a bundle of `members` (None if refused), and the (name, (sha256, size)) of its files."""
    blob, files = build_tar(members, fmt)
    with tempfile.TemporaryDirectory(prefix="kiln-fuzz-") as tmp:
        path = Path(tmp) / "bundle.tar.gz"
        path.write_bytes(blob)
        result = check_read_members(path)
    return result, [(name, (hashlib.sha256(data).hexdigest(), len(data))) for name, data in files]


@FUZZ
@given(members=MEMBERS, fmt=st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]))
@example(members=[{"name": "../x", "type": tarfile.REGTYPE, "size": 1, "linkname": ""}], fmt=tarfile.PAX_FORMAT)
@example(members=[{"name": "a", "type": tarfile.SYMTYPE, "size": 0, "linkname": "/etc/passwd"}], fmt=tarfile.PAX_FORMAT)
@example(members=[{"name": "a", "type": tarfile.REGTYPE, "size": 1, "linkname": ""},
                  {"name": "a/", "type": tarfile.REGTYPE, "size": 2, "linkname": ""}], fmt=tarfile.PAX_FORMAT)
@example(members=[{"name": "d/", "type": tarfile.AREGTYPE, "size": 0, "linkname": ""},
                  {"name": "d/f", "type": tarfile.CONTTYPE, "size": 5, "linkname": ""}], fmt=tarfile.GNU_FORMAT)
def test_read_members_of_built_bundles(members, fmt):
    members = [{**m, "size": 0} if folder_like(m) else m for m in members]  # SILENT_STOP has its own tests
    result, written = read_built(members, fmt)
    if result is None:
        return
    contents, digests = result
    special = [m for m in members if m["type"] not in FILE_TYPES | {tarfile.DIRTYPE}]
    assert not special, f"links, devices or fifos were accepted: {special}"
    # Each file returned is one that was written, under its own name, with its sha256 and size (that none is
    # left out: test_read_members_accounts_for_every_member).
    for name, digest in digests.items():
        assert any(digest == d and ("\x00" in w or name == str(PurePosixPath(w))) for w, d in written), name
    for name, data in contents.items():  # bytes are kept for the manifest and its signature only
        assert (data is not None) == (name in (MANIFEST_NAME, SIGNATURE_NAME)), name
        assert data is None or (hashlib.sha256(data).hexdigest(), len(data)) == digests[name]


SILENT_STOP = ("bug: tarfile ends iteration without an error at an invalid header after the first member, so "
               "read_members never sees what follows it. A kiln bundle + one 512-byte block of 'X' + a member "
               "'evil.py' passes `kiln verify` (ok, 5 files), while GNU tar lists and extracts evil.py (after "
               "'Skipping to next header'). Same with an AREGTYPE member named 'a/' of size 1: tarfile reads it as a "
               "folder, does not skip its data block, stops there and drops every later member. read_members "
               "should require that nothing but zero blocks follows the last member")


@FUZZ
@given(members=MEMBERS, fmt=st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]))
@example(members=[{"name": "a/", "type": tarfile.AREGTYPE, "size": 1, "linkname": ""},
                  {"name": "manifest.json", "type": tarfile.REGTYPE, "size": 0, "linkname": ""}],
         fmt=tarfile.PAX_FORMAT)
def test_read_members_accounts_for_every_member(members, fmt):
    result, written = read_built(members, fmt)
    if result is not None:  # every REGTYPE / CONTTYPE file is returned (file data is unique per member)
        plain = {digest for (name, digest), m in zip(written, [m for m in members if m["type"] in FILE_TYPES])
                 if m["type"] != tarfile.AREGTYPE}
        assert plain <= set(result[1].values()), (sorted(result[1]), [name for name, _ in written])


@FUZZ
@given(junk=st.binary(min_size=1, max_size=512).filter(lambda b: b.strip(b"\0")),
       name=st.sampled_from(["evil.py", "run.py", "model.onnx", "../evil.py", "/etc/cron.d/evil"]),
       data=st.binary(max_size=64))
@example(junk=b"X" * 512, name="evil.py", data=b"print('not in the manifest')\n")
def test_verify_sees_members_hidden_after_a_damaged_header(artifact, junk, name, data):
    body = artifact.tar.rstrip(b"\0")
    body += b"\0" * (-len(body) % 512) + junk + b"\0" * (-len(junk) % 512)
    extra = io.BytesIO()
    with tarfile.open(fileobj=extra, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with tempfile.TemporaryDirectory(prefix="kiln-fuzz-") as tmp:
        path = Path(tmp) / "bundle.tar.gz"
        path.write_bytes(gzip.compress(body + extra.getvalue(), mtime=0))
        with pytest.raises((UsageError, VerificationError)):
            verify(path)


@FUZZ
@given(edit=BYTE_EDITS)
@example(edit=ByteEdit(writes=()))
def test_verify_of_a_damaged_bundle_refuses_or_its_members_match(artifact, edit):
    with tempfile.TemporaryDirectory(prefix="kiln-fuzz-") as tmp:
        path = Path(tmp) / "bundle.tar.gz"
        path.write_bytes(damaged(artifact.tar, edit))
        try:
            result = verify(path)
        except (UsageError, VerificationError) as exc:
            assert exc.hint, exc.message
            event(f"verify: {type(exc).__name__}: {stable_words(exc.message)}")
            return
        event("verify: ok")
        assert result["ok"] is True
        # Independently of read_members: the members are the manifest, maybe its signature, and exactly the listed
        # files with their sha256 and size.
        with tarfile.open(path, "r:gz") as tar:
            members = tar.getmembers()
            assert all(m.isfile() or m.isdir() for m in members)
            found = {m.name: (hashlib.sha256(tar.extractfile(m).read()).hexdigest(), m.size)
                     for m in members if m.isfile()}
        manifest = json.loads(tar_member(path, MANIFEST_NAME))
        listed = {e["path"]: (e["sha256"], e["bytes"]) for e in manifest["files"]}
        assert {k: v for k, v in found.items() if k not in (MANIFEST_NAME, SIGNATURE_NAME)} == listed
