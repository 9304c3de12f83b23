"""What the fuzz tests share: bounded hypothesis settings, one real artifact exported by the CLI, and
strategies that edit its manifest and report (how to run more examples: tests/fuzz/__init__.py)."""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from kiln.artifact.bundle import write_bundle
from kiln.artifact.manifest import (MANIFEST_NAME, MEASUREMENT_FILES, SIGNATURE_NAME, write_json)
from kiln.artifact.verify import verify
from kiln.exporters.base import sha256_file
from tests.conftest import REPO, tiny_mlp_onnx

verify_module = sys.modules["kiln.artifact.verify"]  # `kiln.artifact.verify` the attribute is the function
manifest_module = sys.modules["kiln.artifact.manifest"]

EXAMPLES = int(os.environ.get("KILN_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("KILN_FUZZ_RANDOM") != "1",
                database=None,  # nothing written to .hypothesis/: with derandomize the examples are fixed anyway
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
FEW = settings(FUZZ, max_examples=min(EXAMPLES, 20))  # tests whose every example is large

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")  # what config._IDENT means to accept (as a fullmatch)
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines() splits on


def stable_words(message: str) -> str:
    """The gist of an error message for hypothesis statistics (--hypothesis-show-statistics): quoted parts,
    paths and numbers dropped."""
    verb = re.search(r" (is|does|has|breaks|holds|appears|points) .*", message)  # after the name of the culprit
    return " ".join(re.sub(r"'[^']*'|\([^)]*\)|\S*/\S*|\d+", " ", verb.group(0) if verb else message).split()[:6])


def one_line(text: str) -> bool:
    return len(text.splitlines()) == 1


def has_line_break(text: str) -> bool:
    return any(c in text for c in LINE_BREAKS)



# -- the real artifact, and JSON edits of its manifest and report ----------------------------------------

@dataclass(frozen=True)
class Artifact:
    folder: Path
    bundle: Path
    manifest: dict = field(repr=False)
    report: dict = field(repr=False)
    tar: bytes = field(repr=False)  # the bundle, decompressed

    def _repr_pretty_(self, printer, cycle) -> None:  # hypothesis prints fixtures of failing examples this way
        printer.text(f"Artifact({self.folder})")


_REAL: dict[str, Artifact] = {}  # filled by the `artifact` fixture; strategies that need it are st.deferred


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Artifact:
    root = tmp_path_factory.mktemp("fuzz-artifact")
    source = tiny_mlp_onnx(root / "tiny.onnx")
    out, bundle = root / "art", root / "art.tar.gz"
    env = {**os.environ, "KILN_CACHE_DIR": str(root / "cache")}
    result = subprocess.run([sys.executable, "-m", "kiln.cli", "export", str(source), "--out", str(out), "--no-bench",
                             "--synthetic-data", "--no-analysis", "--bundle", str(bundle), "--quiet"],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    manifest, report = (_pinned_host(json.loads((out / name).read_text("utf-8"))) for name in (MANIFEST_NAME, "report.json"))
    write_json(out / MANIFEST_NAME, manifest)
    write_json(out / "report.json", report)
    write_bundle(out, manifest, bundle)
    real = Artifact(folder=out, bundle=bundle, manifest=manifest, report=report, tar=gzip.decompress(bundle.read_bytes()))
    assert real.report["status"] == "ok"
    assert verify(out)["ok"] and verify(bundle)["ok"]  # the base the edits start from is valid
    _REAL["artifact"] = real
    yield real
    _REAL.pop("artifact", None)


# The examples hypothesis draws walk the structure of the real manifest and report, and their host section (ISA
# flags, cores, memory) differs between machines: an AMX Xeon lists more flags than a Zen 5 EPYC, which shifted
# every later draw, so a derandomised run tested other examples on another CPU. Pinned, the examples depend only on
# hypothesis' version (pinned in the dev extra) and this file.
PINNED_HOST = {"arch": "x86_64", "cpu_model": "fuzz host", "isa_flags": ["avx", "avx2", "avx512f", "fma"],
               "logical_cores": 2, "physical_cores": 2, "memory_gib": 24.0, "os": "Linux"}


def _pinned_host(doc: dict) -> dict:
    return {**doc, "host": dict(PINNED_HOST)} if "host" in doc else doc


class _Delete:
    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()  # as an Edit's value: remove the key


@dataclass(frozen=True)
class Edit:
    """Set (or delete, or insert into a list) the value at `at`, a path of keys and indices; () is the root."""

    at: tuple
    value: object = DELETE
    insert: bool = False


def _get(doc, at: tuple):
    for key in at:
        doc = doc[key]
    return doc


def apply_edits(base, edits: list[Edit]):
    doc = copy.deepcopy(base)
    for edit in edits:
        value = copy.deepcopy(edit.value)
        if not edit.at:
            doc = value
            continue
        try:
            parent, key = _get(doc, edit.at[:-1]), edit.at[-1]
            if edit.value is DELETE:
                del parent[key]
            elif edit.insert and isinstance(parent, list):
                parent.insert(key, value)
            else:
                parent[key] = value
        except (KeyError, IndexError, TypeError):  # an earlier edit removed or retyped the place: skip this one
            continue
    return doc


def _locations(doc, here: tuple = ()):
    yield here
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _locations(value, (*here, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from _locations(value, (*here, index))


NASTY_SCALARS = st.sampled_from([
    10**30, -10**30, 10**400, -(10**400), 2**63, 2**64 + 1, -1, 0, 1e308, -1e308, 5e-324, float("nan"), float("inf"),
    float("-inf"), "NaN", "Infinity", "-1", "1e999", "", " ", "../x", "/etc/passwd", "\x00", "\ud800", True, False,
    None])
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12), NASTY_SCALARS)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
    st.text(max_size=8), kids, max_size=4), max_leaves=12)
NASTY = st.one_of(NASTY_SCALARS, JSON_VALUES)


def _retyped(value) -> st.SearchStrategy:
    """The same information under another JSON type."""
    return st.sampled_from([str(value), [value], {"value": value}, None, json.dumps(value, allow_nan=True)])


@st.composite
def _edit_lists(draw, base, special=None, only_special: bool = False) -> list[Edit]:
    doc, edits = copy.deepcopy(base), []
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(special(doc)) if special is not None and (only_special or draw(st.booleans())) else None
        if edit is None:
            at = draw(st.sampled_from(list(_locations(doc))))
            op = draw(st.sampled_from(["delete", "replace", "retype", "insert"])) if at else "replace"
            if op == "delete":
                edit = Edit(at)
            elif op == "replace":
                edit = Edit(at, draw(NASTY))
            elif op == "retype":
                edit = Edit(at, draw(_retyped(_get(doc, at))))
            elif isinstance(_get(doc, at[:-1]), dict):
                edit = Edit((*at[:-1], draw(st.text(max_size=8))), draw(NASTY))
            else:
                edit = Edit(at, draw(st.one_of(NASTY, st.just(_get(doc, at)))), insert=True)
        edits.append(edit)
        doc = apply_edits(doc, [edit])
    return edits


CANARY = b"a file beside the artifact, outside it\n"
CANARY_SHA = hashlib.sha256(CANARY).hexdigest()
OUTSIDE_ABS = "@OUTSIDE_ABS@"  # replaced by the absolute path of the canary when the manifest is written
OUTSIDE_PATHS = st.sampled_from(["../outside.bin", OUTSIDE_ABS, "./../outside.bin", "sub/../../outside.bin"])
SNEAK = OUTSIDE_PATHS.map(lambda path: {"path": path, "sha256": CANARY_SHA, "bytes": len(CANARY)})
SUSPICIOUS_PATHS = st.one_of(OUTSIDE_PATHS, st.sampled_from([
    "..", ".", "", "/", "../x", "/etc/passwd", "//etc/passwd", "./model.onnx", "model.onnx/", "sub/../model.onnx",
    "../art/model.onnx", "model.onnx\n", "model.onnx\x00", "\\model.onnx", "C:\\model.onnx", "C:model.onnx",
    "report.json", "manifest.json", "manifest.json.sig", "MODEL.ONNX", "model.onnx ", "\u217fodel.onnx"]),
    st.text(max_size=12))
SHAS = st.one_of(st.sampled_from(["", "0" * 64, "A" * 64, CANARY_SHA, CANARY_SHA.upper(), "0" * 63, "g" * 64]),
                 st.text(max_size=64))
SIZES = st.one_of(st.sampled_from([0, -1, 1, 10**30, 2**63, 1.0, 1.5, float("nan"), "1", None, True]), st.integers())


def _manifest_file_edits(doc) -> st.SearchStrategy:
    """Edits of files[]: suspicious paths, files outside the folder with their true hash, drops, duplicates."""
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list) or not files:
        return st.none()
    entries = [i for i, e in enumerate(files) if isinstance(e, dict)] or [0]
    index = st.sampled_from(entries)
    return st.one_of(
        st.builds(lambda i, p: Edit(("files", i, "path"), p), index, SUSPICIOUS_PATHS),
        st.builds(lambda i, e: Edit(("files", i), e), index, SNEAK),
        st.builds(lambda i, e: Edit(("files", i), e, insert=True), st.integers(0, len(files)), SNEAK),
        index.map(lambda i: Edit(("files", i))),
        index.map(lambda i: Edit(("files", len(files)), files[i], insert=True)),
        st.builds(lambda i, h: Edit(("files", i, "sha256"), h), index, SHAS),
        st.builds(lambda i, n: Edit(("files", i, "bytes"), n), index, SIZES),
    )


MANIFEST_EDITS = st.deferred(lambda: _edit_lists(_REAL["artifact"].manifest, _manifest_file_edits))
FILES_EDITS = st.deferred(lambda: _edit_lists(_REAL["artifact"].manifest, _manifest_file_edits, only_special=True))
REPORT_EDITS = st.deferred(lambda: _edit_lists(_REAL["artifact"].report))
# The real report was exported with --no-bench: these edits make it look measured, so the latency code runs.
BENCHED = [Edit(("latency_ms",), {"p50": 1.5, "p90": 1.7, "p95": 1.8, "p99": 2.0, "mean": 1.55, "std": 0.1,
                                  "min": 1.4, "max": 2.5}),
           Edit(("bench",), {"runs": 249, "latency_ms": {"p50": 1.5, "std": 0.1}})]
BENCHED_EDITS = st.deferred(lambda: _edit_lists(apply_edits(_REAL["artifact"].report, BENCHED))).map(
    lambda edits: BENCHED + edits)


def to_json_bytes(value, ascii_only: bool = False) -> bytes:
    return json.dumps(value, allow_nan=True, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def tagged(schema: str) -> st.SearchStrategy:
    """Arbitrary JSON objects that at least carry the right schema_version."""
    return st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=6).map(lambda d: {**d, "schema_version": schema})


def json_documents(schema: str) -> st.SearchStrategy:
    return st.one_of(st.binary(max_size=300), st.builds(to_json_bytes, JSON_VALUES, st.booleans()),
                     st.builds(to_json_bytes, tagged(schema), st.booleans()))


def document_bytes(content, base: dict, outside: Path | None = None) -> bytes:
    """`content` is raw bytes, or edits of `base`."""
    if isinstance(content, bytes):
        return content
    data = to_json_bytes(apply_edits(base, content))
    if outside is not None:
        data = data.replace(OUTSIDE_ABS.encode(), json.dumps(str(outside))[1:-1].encode())
    return data


@contextlib.contextmanager
def workspace(real: Artifact):
    """A fresh copy of the artifact folder (ROOT/art), with the canary file beside it (ROOT/outside.bin)."""
    with tempfile.TemporaryDirectory(prefix="kiln-fuzz-") as tmp:
        root = Path(tmp) / "art"
        shutil.copytree(real.folder, root)
        (Path(tmp) / "outside.bin").write_bytes(CANARY)
        yield root


@contextlib.contextmanager
def hashing_spy(module):
    """Record every file `module` hashes."""
    with mock.patch.object(module, "sha256_file", wraps=sha256_file) as spy:
        yield spy


def assert_hashed_inside(spy, root: Path) -> None:
    inside = root.resolve()
    for call in spy.call_args_list:
        hashed = Path(call.args[0]).resolve()
        assert hashed.is_relative_to(inside), f"hashed {hashed}, outside the artifact {inside}"


FOLDER_ALLOWED = {MANIFEST_NAME, SIGNATURE_NAME, *MEASUREMENT_FILES}


def folder_matches(root: Path, manifest: dict) -> bool:
    """Independently of kiln: the folder holds plain files and folders only, exactly the files listed (besides
    manifest.json, its signature and the report.* files at the root), each with its listed sha256 and size."""
    actual = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            return False
        if path.is_file() and rel not in FOLDER_ALLOWED:
            actual[rel] = (sha256_file(path), path.stat().st_size)
    files = manifest["files"]
    return {e["path"] for e in files} == set(actual) and all(
        actual[e["path"]] == (e["sha256"], e["bytes"]) for e in files)


LISTED = st.sampled_from(["model.onnx", "run.py", "runtime.json", "sample_input.npz", "sample_output.npz"])
NEW_NAMES = st.one_of(st.sampled_from([
    "extra.bin", "sub/extra.bin", "sub/model.onnx", "report.json", "report.md", "report.html", "manifest.json.sig",
    "REPORT.json", "sub/report.json", "model.onnx.orig", ".hidden", "\u00fcn\u00efcode.bin", " "]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=12)
    .filter(lambda s: s not in (".", "..") and len(s.encode()) < 200))
FOLDER_OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), NEW_NAMES), st.tuples(st.just("remove"), LISTED), st.tuples(st.just("modify"), LISTED),
    st.tuples(st.just("truncate"), LISTED), st.tuples(st.just("mkdir"), NEW_NAMES),
    st.tuples(st.just("symlink"), st.one_of(LISTED, NEW_NAMES)), st.tuples(st.just("fifo"), NEW_NAMES)), max_size=3)


def apply_folder_ops(root: Path, ops) -> None:
    outside = root.parent / "outside.bin"
    for op, name in ops:
        with contextlib.suppress(OSError):  # e.g. "sub/x" after a file named "sub": skip that op
            apply_folder_op(root / name, op, outside)


def apply_folder_op(path: Path, op: str, outside: Path) -> None:
    exists = path.exists() or path.is_symlink()
    if op == "add" and not exists:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"added after export\n")
    elif op == "mkdir" and not exists:
        path.mkdir(parents=True)
    elif op == "fifo" and not exists:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
    elif op == "remove" and path.is_file():
        path.unlink()
    elif op == "modify" and path.is_file():
        path.write_bytes(path.read_bytes() + b"\0")
    elif op == "truncate" and path.is_file():
        path.write_bytes(path.read_bytes()[:-1])
    elif op == "symlink" and (path.is_file() or path.is_symlink() or not exists):
        # a listed file (or a new one) becomes a link to the file beside the artifact
        if exists:
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(outside)



def tar_member(path: Path, name: str) -> bytes:
    with tarfile.open(path, "r:gz") as tar:
        return tar.extractfile(name).read()
