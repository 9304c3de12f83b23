"""`kiln export --target a,b --precision x,y`: every cell built and measured in one process, failures recorded
and not fatal, the fastest cell within the accuracy budget recommended; report.html checked in a real browser.

The model multiplies by a weight and inverts the result with com.microsoft.Inverse: ONNX Runtime runs it,
OpenVINO cannot convert it, so the OpenVINO fp32 cell fails for real."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.schemas import validate_document
from tests.browser import find_chromium, render_in_browser
from tests.conftest import run_cli

pytest.importorskip("openvino", reason="the openvino extra is not installed")
FAST = ("--runs", "20", "--min-seconds", "0.2", "--warmup", "2", "--throughput-seconds", "0", "--synthetic-data",
        "--batch-sizes", "1,4")


def _inverse_model(path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((np.eye(4) * 2 + rng.standard_normal((4, 4)) * 0.1).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
             helper.make_node("Inverse", ["m"], ["inv"], name="inverse", domain="com.microsoft"),
             helper.make_node("Add", ["inv", "x"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "inv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix")
    out = root / "out"
    done = run_cli("export", _inverse_model(root / "inv.onnx"), "--target", "onnxruntime,openvino", "--precision",
                   "fp32,int8-dynamic,fp8", "--out", out, "--json", "--quiet", "--price-per-hour", "2", *FAST,
                   timeout=600)
    return done, out


def _cells(comparison) -> dict:
    return {(c["target"], c["precision"]): c for c in comparison["cells"]}


def test_every_cell_is_recorded_and_the_failure_does_not_stop_the_others(matrix):
    done, out = matrix
    assert done.returncode == 0, done.stderr
    comparison = json.loads(done.stdout)
    assert comparison == json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    assert validate_document(comparison, "comparison") == []
    cells = _cells(comparison)
    assert len(cells) == 6
    statuses = {k: (c["status"], c["exit_code"]) for k, c in cells.items()}
    assert statuses == {
        ("onnxruntime-cpu", "fp32"): ("ok", 0), ("onnxruntime-cpu", "int8-dynamic"): ("ok", 0),
        ("onnxruntime-cpu", "fp8"): ("refused", 3), ("openvino-cpu", "fp32"): ("failed", 5),
        ("openvino-cpu", "int8-dynamic"): ("refused", 3), ("openvino-cpu", "fp8"): ("refused", 3)}
    failed = cells[("openvino-cpu", "fp32")]
    assert "com.microsoft.Inverse" in failed["reason"] and "\n" not in failed["reason"]
    assert "cannot run precision 'fp8'" in cells[("onnxruntime-cpu", "fp8")]["reason"]
    # nothing half-written where a finished artifact would be, and no scratch left behind
    assert not (out / "openvino-cpu-fp32").exists()
    assert sorted(p.name for p in out.iterdir()) == ["comparison.json", "comparison.md", "onnxruntime-cpu-fp32",
                                                     "onnxruntime-cpu-int8-dynamic", "report.html"]


def test_ok_cells_carry_measured_numbers_against_the_source(matrix):
    done, out = matrix
    comparison = json.loads(done.stdout)
    source_p50 = comparison["source_bench"]["latency_ms"]["p50"]
    for cell in comparison["cells"]:
        if cell["status"] != "ok":
            assert cell["p50_ms"] is None and not cell["recommended"]
            continue
        report = json.loads((out / cell["report"]).read_text(encoding="utf-8"))
        assert cell["p50_ms"] == report["latency_ms"]["p50"]
        assert cell["speedup_vs_source"] == pytest.approx(source_p50 / cell["p50_ms"])
        assert cell["cost_per_million"] == pytest.approx(2 / 3600 / cell["throughput_per_s"] * 1e6)
        assert cell["accuracy_metric"] == "cosine_min" and 0.99 < cell["accuracy"] <= 1.0 + 1e-6


def test_the_fastest_cell_within_the_budget_is_recommended(matrix):
    comparison = json.loads(matrix[0].stdout)
    ok = [c for c in comparison["cells"] if c["status"] == "ok" and c["meets_budget"]]
    best = min(ok, key=lambda c: c["p50_ms"])
    assert [c for c in comparison["cells"] if c["recommended"]] == [best]
    assert (comparison["recommendation"]["target"], comparison["recommendation"]["precision"]) == (
        best["target"], best["precision"])
    table = (matrix[1] / "comparison.md").read_text(encoding="utf-8")
    assert f"| ★ | {best['target']} | {best['precision']} | ok |" in table


def test_no_cell_within_the_budget_exits_4_with_the_table(tmp_path):
    out = tmp_path / "strict"
    done = run_cli("export", _inverse_model(tmp_path / "inv.onnx"), "--target", "onnxruntime", "--precision",
                   "int8-dynamic,fp8", "--min-cosine", "0.99999999", "--out", out, "--quiet", *FAST, timeout=300)
    assert done.returncode == 4, done.stderr
    assert "no artifact within the accuracy budget" in done.stderr
    comparison = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    assert [c["status"] for c in comparison["cells"]] == ["rejected", "refused"]
    assert comparison["recommendation"] is None
    assert (out / "onnxruntime-cpu-int8-dynamic.rejected" / "report.json").is_file()
    # every cell refused by its target: exit 5, and the comparison still says why, cell by cell
    none = tmp_path / "none"
    done = run_cli("export", tmp_path / "inv.onnx", "--target", "onnxruntime,openvino", "--precision", "fp8,q8_0",
                   "--out", none, "--quiet", *FAST, timeout=300)
    assert done.returncode == 5 and "(none could be built)" in done.stderr and "Traceback" not in done.stderr
    comparison = json.loads((none / "comparison.json").read_text(encoding="utf-8"))
    assert [c["status"] for c in comparison["cells"]] == ["refused"] * 4 and all(c["reason"] for c in comparison["cells"])
    assert sorted(p.name for p in none.iterdir()) == ["comparison.json", "comparison.md", "report.html"]


def test_comparison_page_loads_in_a_real_browser_with_every_section(matrix, tmp_path):
    if find_chromium() is None:
        pytest.skip("chromium is not installed (scripts/test.sh installs it on Debian)")
    page = render_in_browser(matrix[1] / "report.html", tmp_path / "matrix.png")
    assert page.console_errors == []
    for section in ("summary", "matrix", "scatter", "cost", "cells"):
        assert f'id="{section}"' in page.dom
    assert "★" in page.dom and "com.microsoft.Inverse" in page.dom
    assert 'data-plots-failed="0"' in page.dom
