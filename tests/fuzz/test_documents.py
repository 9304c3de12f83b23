"""Fuzzed manifest.json and report.json: load_manifest, kiln verify, verify_files and kiln compare raise only
kiln's own one-line errors, never pass a folder the manifest does not describe, never read outside it."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from kiln.artifact.manifest import (MANIFEST_NAME, MANIFEST_SCHEMA, dumps,
                                    load_manifest, verify_files)
from kiln.artifact.verify import verify
from kiln.compare import REPORT_SCHEMA, Thresholds, compare_reports, load_report_file, render_markdown
from kiln.errors import UsageError, VerificationError
from tests.fuzz.common import (BENCHED, BENCHED_EDITS, CANARY, CANARY_SHA, Edit, FEW, FILES_EDITS, FOLDER_OPS, FUZZ, MANIFEST_EDITS, OUTSIDE_ABS, OUTSIDE_PATHS, REPORT_EDITS, apply_edits, apply_folder_ops, assert_hashed_inside, document_bytes, folder_matches, hashing_spy, json_documents, manifest_module, stable_words, verify_module, workspace)


# -- 2. manifest.json: load_manifest, verify, and load_manifest + verify_files ---------------------------

MANIFEST_CONTENT = st.one_of(json_documents(MANIFEST_SCHEMA), MANIFEST_EDITS, FILES_EDITS)


@FUZZ
@given(content=MANIFEST_CONTENT)
@example(content=b"")
@example(content=b"\xff\xfe")
@example(content=b"NaN")
@example(content=b'{"schema_version": "kiln.manifest/2"}')
@example(content=b'{"schema_version": "kiln.manifest/2", "files": [{"path": "../x"}]}')
def test_load_manifest_raises_only_usage_error(artifact, content):
    with workspace(artifact) as root:
        data = document_bytes(content, artifact.manifest, root.parent / "outside.bin")
        (root / MANIFEST_NAME).write_bytes(data)
        for where in (root, root / MANIFEST_NAME):
            try:
                manifest = load_manifest(where)
            except UsageError as exc:
                assert exc.hint, exc.message
            else:
                assert isinstance(manifest, dict) and manifest["schema_version"] == MANIFEST_SCHEMA


def check_verify(root: Path) -> dict | None:
    """verify(root): a refusal with a hint, or ok only when the folder matches its manifest independently."""
    with hashing_spy(verify_module) as spy:
        try:
            result = verify(root)
        except (UsageError, VerificationError) as exc:
            assert exc.hint, exc.message
            event(f"verify: {type(exc).__name__}: {stable_words(exc.message)}")
            result = None
    assert_hashed_inside(spy, root)
    if result is not None:
        event("verify: ok")
        assert result["ok"] is True
        manifest = json.loads((root / MANIFEST_NAME).read_bytes())
        assert folder_matches(root, manifest), f"verify said ok, but the folder does not match: {manifest['files']}"
        dumps(result)  # what `kiln verify --json` prints
    return result


@FUZZ
@given(content=MANIFEST_CONTENT, ops=st.one_of(st.just([]), FOLDER_OPS))
@example(content=[], ops=[])
@example(content=[Edit(("files", 0), {"path": "../outside.bin", "sha256": CANARY_SHA, "bytes": len(CANARY)})], ops=[])
@example(content=[Edit(("files", 0), {"path": OUTSIDE_ABS, "sha256": CANARY_SHA, "bytes": len(CANARY)})], ops=[])
@example(content=[Edit(("files", 0, "bytes"), 1055.0)], ops=[])
@example(content=[Edit(("files", 0, "path"), "./model.onnx")], ops=[])
@example(content=[Edit(("files", 5), {"path": "report.json", "sha256": "0" * 64, "bytes": 0}, insert=True)], ops=[])
@example(content=[Edit(("files", 5), {"path": "model.onnx", "sha256": "0" * 64, "bytes": 0}, insert=True)], ops=[])
@example(content=[Edit(("summary", "model_mib"), float("nan"))], ops=[])
@example(content=[Edit(("host", "memory_gib"), 10**400)], ops=[])
def test_verify_refuses_or_the_folder_matches_its_manifest(artifact, content, ops):
    with workspace(artifact) as root:
        data = document_bytes(content, artifact.manifest, root.parent / "outside.bin")
        (root / MANIFEST_NAME).write_bytes(data)
        apply_folder_ops(root, ops)
        check_verify(root)


@FUZZ
@given(ops=FOLDER_OPS)
@example(ops=[("symlink", "model.onnx")])
@example(ops=[("add", "report.json")])
@example(ops=[("add", "sub/report.json")])
@example(ops=[("fifo", "extra")])
def test_verify_of_the_real_manifest_is_ok_exactly_when_the_folder_matches(artifact, ops):
    """The real manifest is schema-valid, so here verify must also say ok whenever the folder does match."""
    with workspace(artifact) as root:
        apply_folder_ops(root, ops)
        expected = folder_matches(root, artifact.manifest)
        assert (check_verify(root) is not None) == expected, ops


@FUZZ
@given(edits=MANIFEST_EDITS)
@example(edits=[Edit(("files",))])
@example(edits=[Edit(("files",), None)])
@example(edits=[Edit(("files", 0, "path"), None)])
# issue 19: the NUL byte reached Path.resolve() and escaped as ValueError (hypothesis 6.15x drew it on a fresh clone)
@example(edits=[Edit(at=("io", "inputs", 0), value={"name": "x", "dtype": "float32", "shape": ["batch", 8]}, insert=True),
                Edit(("files", 0, "path"), "model.onnx\x00")])
def test_load_manifest_then_verify_files_raises_only_kiln_errors(artifact, edits):
    with workspace(artifact) as root:
        (root / MANIFEST_NAME).write_bytes(document_bytes(edits, artifact.manifest, root.parent / "outside.bin"))
        try:
            verify_files(root, load_manifest(root))
        except (UsageError, VerificationError) as exc:
            assert exc.hint, exc.message


@pytest.mark.parametrize("path", ["model.onnx\x00", "model.onnx\x00/../x", "sub//model.onnx", "./model.onnx", "a\\b",
                                  "x" * 256, "\ud800.onnx", "C:model.onnx", "/abs", "model.onnx\n"])
def test_verify_files_refuses_a_malformed_path_of_an_unchecked_manifest_as_text(artifact, path):
    """verify_files holds without the schema (a manifest edited after load_manifest): one UsageError line naming the
    entry, before any filesystem call could raise ValueError or UnicodeEncodeError."""
    manifest = copy.deepcopy(artifact.manifest)
    manifest["files"][0]["path"] = path
    with workspace(artifact) as root:
        with pytest.raises(UsageError, match=r"manifest.json files\[0\]\.path") as caught:
            verify_files(root, manifest)
    assert len(caught.value.one_line().splitlines()) == 1 and caught.value.exit_code == 2


@FUZZ
@given(path=OUTSIDE_PATHS, at=st.integers(0, 4), replace=st.booleans())
@example(path="../outside.bin", at=0, replace=False)
def test_verify_files_never_reads_outside_the_artifact(artifact, path, at, replace):
    entry = {"path": path, "sha256": CANARY_SHA, "bytes": len(CANARY)}
    with workspace(artifact) as root:
        edits = [Edit(("files", at), entry, insert=not replace)]
        (root / MANIFEST_NAME).write_bytes(document_bytes(edits, artifact.manifest, root.parent / "outside.bin"))
        with hashing_spy(manifest_module) as spy:
            with pytest.raises((UsageError, VerificationError)):
                verify_files(root, load_manifest(root))
        assert_hashed_inside(spy, root)


# -- 3. report.json: load_report_file, compare_reports, render_markdown ----------------------------------

REPORT_CONTENT = st.one_of(json_documents(REPORT_SCHEMA), REPORT_EDITS, BENCHED_EDITS)


@FUZZ
@given(content=REPORT_CONTENT)
@example(content=b"")
@example(content=b"[]")
@example(content=b'{"schema_version": "kiln.report/1", "status": "ok"}')
@example(content=b'{"schema_version": "kiln.report/1", "status": "ok", "accuracy": {}, "size": {}, "target": {}}')
def test_load_report_file_raises_only_usage_error(artifact, content):
    with tempfile.TemporaryDirectory(prefix="kiln-fuzz-") as tmp:
        file = Path(tmp) / "report.json"
        file.write_bytes(document_bytes(content, artifact.report))
        for where in (file, Path(tmp)):
            try:
                report = load_report_file(where)
            except UsageError as exc:
                assert exc.hint, exc.message
                event(f"refused: {stable_words(exc.message)}")
            else:
                event("accepted")
                assert report["schema_version"] == REPORT_SCHEMA and report["status"] in ("ok", "rejected")


def load_report(content, base: dict) -> dict | None:
    with tempfile.TemporaryDirectory(prefix="kiln-fuzz-") as tmp:
        file = Path(tmp) / "report.json"
        file.write_bytes(document_bytes(content, base))
        try:
            return load_report_file(file)
        except UsageError:
            return None


def test_compare_of_the_real_reports_passes(artifact):
    real, benched = artifact.report, apply_edits(artifact.report, BENCHED)
    for new, old in ((real, real), (benched, benched), (real, benched), (benched, real)):
        result = compare_reports(new, old, Thresholds())
        assert result["passed"], result
        render_markdown(result)


@FUZZ
@given(new=st.one_of(REPORT_EDITS, BENCHED_EDITS), old=st.one_of(st.just([]), st.just(BENCHED), REPORT_EDITS,
                                                                  BENCHED_EDITS))
@example(new=[Edit(("model",), None)], old=[])
@example(new=[Edit(("accuracy", "outputs"), None)], old=[])
@example(new=[Edit(("accuracy", "outputs"), ["logits"])], old=[])
@example(new=[Edit(("accuracy", "outputs", "logits"), None)], old=[])
@example(new=[Edit(("accuracy", "outputs", "logits", "cosine_min"), "1")], old=[])
@example(new=[Edit(("accuracy", "outputs", "logits", "cosine_min"), -(10**400))], old=[])
@example(new=[Edit(("size", "model_mib"), "1")], old=[])
@example(new=[Edit(("size", "model_mib"), 10**400)], old=[])
@example(new=[Edit(("latency_ms",), {})], old=BENCHED)
@example(new=[*BENCHED, Edit(("latency_ms", "p50"), "1.5")], old=BENCHED)
@example(new=[*BENCHED, Edit(("latency_ms", "p50"), 10**400)], old=BENCHED)
def test_compare_of_accepted_reports_never_raises(artifact, new, old):
    new_report, old_report = load_report(new, artifact.report), load_report(old, artifact.report)
    if new_report is None or old_report is None:
        return
    for a, b in ((new_report, old_report), (old_report, new_report)):
        result = compare_reports(a, b, Thresholds())
        render_markdown(result)
        dumps(result)  # what `kiln compare --json` prints



@pytest.mark.parametrize("reader", ["load_manifest", "verify", "load_report_file"])
@FEW
@given(depth=st.integers(3_000, 200_000), opener=st.sampled_from(["[", '{"k":']))
@example(depth=100_000, opener="[")
def test_deeply_nested_json_is_a_usage_error(reader, depth, opener):
    closer = "]" if opener == "[" else "}"
    data = (opener * depth + "0" + closer * depth).encode()
    with tempfile.TemporaryDirectory(prefix="kiln-fuzz-") as tmp:
        root = Path(tmp)
        (root / ("report.json" if reader == "load_report_file" else MANIFEST_NAME)).write_bytes(data)
        read = {"load_manifest": load_manifest, "verify": verify, "load_report_file": load_report_file}[reader]
        with pytest.raises((UsageError, VerificationError)):
            read(root)
