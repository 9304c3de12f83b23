"""`kiln build PLAN --out DIR`: every model of a plan as its own comparison matrix, one index over them; a model
that cannot be built is recorded with its one-line error and does not stop the others. The plan's models are the
matrix test's (com.microsoft.Inverse: OpenVINO cannot convert it, so that cell fails for real) and a small MLP."""

from __future__ import annotations

import json

import pytest

from kiln.build_plan import load_plan
from kiln.errors import UsageError
from kiln.schemas import validate_document
from tests.conftest import run_cli, tiny_mlp_onnx
from tests.integration.test_matrix import _inverse_model

BUILD_FAST = ("--runs", "20", "--min-seconds", "0.2", "--warmup", "2", "--throughput-seconds", "0", "--no-analysis")


def write_plan(folder, models) -> object:
    path = folder / "plan.json"
    path.write_text(json.dumps({"models": models}))
    return path


def two_models(folder, targets) -> list[dict]:
    _inverse_model(folder / "inv.onnx")
    tiny_mlp_onnx(folder / "mlp.onnx")
    return [{"name": "inverse", "source": "inv.onnx", "targets": targets, "precisions": ["fp32"],
             "synthetic_data": True},
            {"name": "mlp", "source": "mlp.onnx", "targets": targets, "precisions": ["fp32", "int8-dynamic"],
             "synthetic_data": True, "min_cosine": 0.9}]


def test_a_plan_builds_every_model_and_a_broken_one_stops_nothing(tmp_path):
    models = two_models(tmp_path, ["onnxruntime", "openvino"])
    models.append({"name": "missing", "source": "nowhere.onnx", "targets": ["onnxruntime"], "precisions": ["fp32"]})
    out = tmp_path / "out"
    done = run_cli("build", write_plan(tmp_path, models), "--out", out, "--json", "--quiet", *BUILD_FAST, timeout=600)
    assert done.returncode == 2, done.stderr  # the highest of the models' codes: the missing source is bad input
    assert "1 of 3 models have no artifact within their budget or failed" in done.stderr
    assert "Traceback" not in done.stderr
    index = json.loads(done.stdout)
    assert index == json.loads((out / "index.json").read_text())
    assert validate_document(index, "build_index") == []
    entries = {m["name"]: m for m in index["models"]}
    assert entries["inverse"]["cells"] == {"ok": 1, "failed": 1} and entries["inverse"]["exit_code"] == 0
    assert entries["mlp"]["cells"] == {"ok": 3, "refused": 1}  # OpenVINO has no int8-dynamic
    assert entries["missing"]["status"] == "failed" and entries["missing"]["exit_code"] == 2
    assert "nowhere.onnx" in entries["missing"]["reason"] and entries["missing"]["comparison"] is None
    for name in ("inverse", "mlp"):
        comparison = json.loads((out / entries[name]["comparison"]).read_text())
        assert validate_document(comparison, "comparison") == []
        assert comparison["recommendation"] == entries[name]["recommendation"] is not None
        assert (out / name / "onnxruntime-cpu-fp32" / "manifest.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "index.md", "inverse", "mlp", "report.html"]
    assert "| missing | failed | 2 |" in (out / "index.md").read_text()
    assert 'href="mlp/report.html"' in (out / "report.html").read_text()


@pytest.mark.parametrize(("text", "suffix", "problem"), [
    ("models: [{name: a, source: m.onnx, targets: [ort], precisions: [fp32], colour: red}]", ".yaml",
     "models.0.colour: Extra inputs are not permitted"),
    ('{"models": [{"name": "a", "source": "m", "targets": ["ort"], "precisions": ["fp32"]}, '
     '{"name": "a", "source": "n", "targets": ["ort"], "precisions": ["fp32"]}]}', ".json", "model names must differ"),
    ('{"models": [{"name": "../up", "source": "m", "targets": ["ort"], "precisions": ["fp32"]}]}', ".json",
     "becomes its folder"),
    ('{"models": []}', ".json", "models: List should have at least 1 item"),
    ("{not json", ".json", "is not valid JSON"),
    ("models: [unclosed", ".yaml", "is not valid YAML"),
])
def test_a_bad_plan_is_one_line_before_any_work(tmp_path, text, suffix, problem):
    path = tmp_path / f"plan{suffix}"
    path.write_text(text)
    with pytest.raises(UsageError, match="plan") as caught:
        load_plan(path)
    assert problem in caught.value.one_line() and "\n" not in caught.value.one_line()


def test_plan_paths_are_read_from_the_plan_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.onnx").write_bytes(b"")
    path = tmp_path / "sub" / "plan.yaml"
    path.write_text("models:\n  - {name: m, source: m.onnx, targets: [ort], precisions: [fp32], eval: e.txt}\n")
    model = load_plan(path).models[0]
    assert model.source == str(tmp_path / "sub" / "m.onnx") and model.eval == tmp_path / "sub" / "e.txt"
