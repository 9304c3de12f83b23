"""The published JSON Schemas hold for what `kiln export` really writes, and reject what they should.

Real artifacts of the tiny conv net through the CLI: fp32 measured, int8 not measured (also printed with
--json), int8 rejected by the accuracy gate; and the --json failure reports of a missing model (exit 2)
and of the gate (exit 4).
"""

from __future__ import annotations

import copy
import json
import sys

import pytest

from kiln.errors import MissingDependencyError
from kiln.schemas import SCHEMA_NAMES, load_schema, validate_document
from tests.conftest import REPO, run_cli

SOURCE = "tests.tiny_models:tiny_conv_net"
INPUT = "images=batch=2,3,16,16"
PACKAGE_SCHEMAS = REPO / "src" / "kiln" / "schemas"
DOCS_SCHEMAS = REPO / "docs" / "schemas"
SHA = "0" * 64


def _export(out, *extra):
    return run_cli("export", SOURCE, "--input", INPUT, "--out", out, "--quiet", *extra, timeout=300)


def _artifact(path) -> dict:
    return {"manifest": json.loads((path / "manifest.json").read_text(encoding="utf-8")),
            "report": json.loads((path / "report.json").read_text(encoding="utf-8"))}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("schemas")
    fp32 = _export(root / "fp32", "--runs", "5", "--min-seconds", "0", "--warmup", "1")
    assert fp32.returncode == 0, fp32.stderr
    int8 = _export(root / "int8", "--no-bench", "--precision", "int8", "--synthetic-data", "--json")
    assert int8.returncode == 0, int8.stderr
    # int8 cannot reach cosine 1.0: the gate fails, the artifact is set aside as gate.rejected
    gate = _export(root / "gate", "--no-bench", "--precision", "int8", "--synthetic-data", "--min-cosine", "1.0",
                   "--json")
    assert gate.returncode == 4, gate.stderr
    assert not (root / "gate").exists()
    missing = run_cli("export", root / "missing.onnx", "--out", root / "never", "--json", timeout=120)
    assert missing.returncode == 2, missing.stderr
    return {
        "fp32": _artifact(root / "fp32"), "int8": _artifact(root / "int8"), "rejected": _artifact(root / "gate.rejected"),
        "int8_stdout": json.loads(int8.stdout), "gate_failure": json.loads(gate.stdout),
        "missing_failure": json.loads(missing.stdout),
    }


# --- the schemas themselves ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_valid_draft_2020_12(name):
    import jsonschema

    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == json.loads((PACKAGE_SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_docs_copy_is_byte_identical(name):
    package = (PACKAGE_SCHEMAS / f"{name}.schema.json").read_bytes()
    assert (DOCS_SCHEMAS / f"{name}.schema.json").read_bytes() == package, \
        f"docs/schemas/{name}.schema.json differs from src/kiln/schemas/{name}.schema.json: copy it over"


def test_unknown_schema_name():
    with pytest.raises(ValueError, match="manifest, report"):
        load_schema("bench")


def test_missing_jsonschema_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # makes `import jsonschema` raise ImportError
    with pytest.raises(MissingDependencyError) as info:
        validate_document({}, "report")
    assert info.value.hint == "pip install jsonschema"
    assert load_schema("report")["title"]  # loading needs no jsonschema


# --- real outputs validate -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["manifest", "report"])
@pytest.mark.parametrize("run", ["fp32", "int8", "rejected"])
def test_real_artifact_validates(outputs, run, name):
    assert validate_document(outputs[run][name], name) == []


def test_real_outputs_cover_both_branches(outputs):
    fp32, int8, rejected = (outputs[k]["report"] for k in ("fp32", "int8", "rejected"))
    assert fp32["status"] == "ok" and set(fp32["latency_ms"]) == {"p50", "p90", "p95", "p99", "mean", "std", "min", "max"}
    assert fp32["bench"]["runs"] >= 5
    assert int8["status"] == "ok" and int8["latency_ms"] is None and int8["throughput_per_s"] is None
    assert int8["bench_skipped"] == "--no-bench" and "latency_ms" not in outputs["int8"]["manifest"]["summary"]
    assert rejected["status"] == "rejected" and rejected["accuracy"]["gate"]["failures"]
    assert outputs["rejected"]["manifest"]["summary"]["status"] == "rejected"


def test_json_stdout_is_the_report(outputs):
    assert outputs["int8_stdout"] == outputs["int8"]["report"]
    assert validate_document(outputs["int8_stdout"], "report") == []


def test_failure_report_validates(outputs):
    doc = outputs["missing_failure"]
    assert doc["status"] == "failed" and doc["error"]["kind"] == "usage" and doc["error"]["exit_code"] == 2
    assert validate_document(doc, "report") == []


def test_gate_failure_prints_the_rejected_report_with_its_numbers(outputs):
    """CI reading --json on exit 4 gets the full measured report (status rejected), not just an error."""
    doc = outputs["gate_failure"]
    assert doc == outputs["rejected"]["report"]
    assert doc["status"] == "rejected" and doc["accuracy"]["gate"]["failures"]
    assert validate_document(doc, "report") == []


# --- the schemas catch what CI relies on -----------------------------------------------------------------------


def _errors(doc: dict, name: str, change) -> list[str]:
    doc = copy.deepcopy(doc)
    change(doc)
    return validate_document(doc, name)


def test_bad_file_hash_fails(outputs):
    def change(m):
        m["files"][0]["sha256"] = "xyz"

    errors = _errors(outputs["fp32"]["manifest"], "manifest", change)
    assert len(errors) == 1 and errors[0].startswith("files[0].sha256:"), errors


def test_report_without_latency_fails(outputs):
    for run in ("fp32", "int8"):
        errors = _errors(outputs[run]["report"], "report", lambda r: r.pop("latency_ms"))
        assert errors == ["(document): 'latency_ms' is a required property"], errors


@pytest.mark.parametrize("run, name", [("fp32", "manifest"), ("fp32", "report"), ("missing_failure", "report")])
def test_unknown_top_level_key_fails(outputs, run, name):
    doc = outputs[run] if run.endswith("failure") else outputs[run][name]

    def change(d):
        d["sumary"] = {}

    errors = _errors(doc, name, change)
    assert errors == ["(document): Additional properties are not allowed ('sumary' was unexpected)"], errors


MANIFEST_BREAKS = {
    "schema version": (lambda m: m.update(schema_version="kiln.manifest/1"), "schema_version"),
    "measured latency": (lambda m: m["summary"].update(latency_ms={"p50": 1.0}), "summary"),
    "report listed": (lambda m: m["files"].append({"path": "report.json", "sha256": "0" * 64, "bytes": 1}),
                      "files["),
    "reproducibility": (lambda m: m.pop("reproducibility"), "(document)"),
    "precision": (lambda m: m.update(precision="int3"), "precision"),
    "dim": (lambda m: m["io"]["outputs"][0]["shape"].append(2.5), "io.outputs[0].shape[2]"),
    "bytes": (lambda m: m["files"][0].update(bytes=-1), "files[0].bytes"),
    "path escapes": (lambda m: m["files"][0].update(path="../model.onnx"), "files[0].path"),
    "toolchain": (lambda m: m["toolchain"].pop("onnxruntime"), "toolchain"),
    "toolchain value": (lambda m: m["toolchain"].update(onnx=1.17), "toolchain.onnx"),
    "source hash": (lambda m: m["source"].update(sha256="ABC"), "source.sha256"),
    "runtime": (lambda m: m["runtime"].pop("settings"), "runtime"),
    "summary status": (lambda m: m["summary"].update(status="failed"), "summary.status"),
}

REPORT_BREAKS = {
    "status": (lambda r: r.update(status="passed"), "status"),
    "status vs gate": (lambda r: r.update(status="rejected"), "accuracy.gate.passed"),
    "percentile": (lambda r: r["latency_ms"].pop("p95"), "latency_ms"),
    "latency value": (lambda r: r["latency_ms"].update(p99="fast"), "latency_ms.p99"),
    "throughput": (lambda r: r.update(throughput_per_s="1000"), "throughput_per_s"),
    "half-measured": (lambda r: r.update(latency_ms=None), "latency_ms"),
    "gate": (lambda r: r["accuracy"]["gate"].pop("checked"), "accuracy.gate"),
    "gate failures": (lambda r: r["accuracy"]["gate"].update(failures=["output: too far"]), "accuracy.gate.failures"),
    "output metric": (lambda r: r["accuracy"]["outputs"]["output"].pop("cosine_min"), "accuracy.outputs.output"),
    "stage": (lambda r: r["stages_seconds"].pop("export"), "stages_seconds"),
    "size": (lambda r: r["size"].update(model_mib=None), "size.model_mib"),
    "settings": (lambda r: r["settings"].pop("threads"), "settings"),
}

FAILURE_BREAKS = {
    "kind": (lambda f: f["error"].update(kind="oops"), "error.kind"),
    "exit code vs kind": (lambda f: f["error"].update(exit_code=5), "error.exit_code"),
    "message": (lambda f: f["error"].pop("message"), "error"),
    "extra fields": (lambda f: f.update(latency_ms=None), "(document)"),
}


def test_status_must_follow_the_gate(outputs):
    errors = _errors(outputs["rejected"]["report"], "report", lambda r: r.update(status="ok"))
    assert errors == ["accuracy.gate.passed: True was expected"], errors


@pytest.mark.parametrize("case", MANIFEST_BREAKS)
def test_manifest_breaks(outputs, case):
    change, where = MANIFEST_BREAKS[case]
    errors = _errors(outputs["fp32"]["manifest"], "manifest", change)
    assert errors and all(e.startswith(where) for e in errors), errors


@pytest.mark.parametrize("case", REPORT_BREAKS)
def test_report_breaks(outputs, case):
    change, where = REPORT_BREAKS[case]
    errors = _errors(outputs["fp32"]["report"], "report", change)
    assert errors and any(e.startswith(where) for e in errors), errors


@pytest.mark.parametrize("case", FAILURE_BREAKS)
def test_failure_report_breaks(outputs, case):
    change, where = FAILURE_BREAKS[case]
    errors = _errors(outputs["missing_failure"], "report", change)
    assert errors and all(e.startswith(where) for e in errors), errors
