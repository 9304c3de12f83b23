"""The OpenVINO backend on the real models: IR in the artifact, the execution precision the runtime reports,
and the accuracy each precision keeps against the source model (real OpenVINO and NNCF)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli, zoo

pytest.importorskip("openvino", reason="the openvino extra is not installed")
pytestmark = pytest.mark.slow


def export(tmp: Path, name: str, *args: str) -> dict:
    out = tmp / name
    result = run_cli("export", *args, "--target", "openvino", "--out", out, "--no-bench", "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    report["_files"] = {f["path"] for f in json.loads((out / "manifest.json").read_text())["files"]}
    return report


@pytest.fixture(scope="module")
def minilm(tmp_path_factory, minilm_path, eval_sentences):
    tmp = tmp_path_factory.mktemp("ov-minilm")
    common = (str(minilm_path), "--eval", str(eval_sentences), "--eval-limit", "150")
    return {
        "int8": export(tmp, "int8", *common, "--precision", "int8", "--calibration", str(zoo.CALIBRATION_SENTENCES),
                       "--calibration-limit", "100", "--min-cosine", "0.99"),
        "int8-weights": export(tmp, "w8", *common, "--precision", "int8-weights"),
        "int4-weights": export(tmp, "w4", *common, "--precision", "int4-weights"),
    }


@pytest.fixture(scope="module")
def efficientnet(tmp_path_factory, image_dirs):
    tmp = tmp_path_factory.mktemp("ov-effnet")
    common = ("benchmarks.zoo:efficientnet_lite0", *zoo.EFFICIENTNET_CLI, "--eval", str(image_dirs["eval"]))
    return {"fp32": export(tmp, "fp32", *common), "bf16": export(tmp, "bf16", *common, "--precision", "bf16")}


def test_ir_is_in_the_artifact_and_hashed(efficientnet):
    assert {"openvino/model.xml", "openvino/model.bin"} <= efficientnet["fp32"]["_files"]


def test_fp32_runs_in_f32_explicitly_and_matches_the_source(efficientnet):
    """Without the hint OpenVINO runs bf16 on this CPU; kiln's fp32 must really be f32."""
    report = efficientnet["fp32"]
    assert report["execution_precision"] == "f32"
    assert report["settings"]["runtime_settings"]["config"]["INFERENCE_PRECISION_HINT"] == "f32"
    out = report["accuracy"]["outputs"]["output"]
    assert out["top1_agreement"] == 1.0 and out["cosine_min"] > 0.9999


def test_bf16_runs_in_bf16_and_its_drift_is_measured(efficientnet):
    report = efficientnet["bf16"]
    assert report["execution_precision"] == "bf16"
    out = report["accuracy"]["outputs"]["output"]
    assert 0.85 <= out["top1_agreement"] < 1.0  # bf16 does move some ambiguous images: measured, not hidden
    assert out["top1_agreement_confident"] == 1.0


def test_minilm_int8_keeps_every_sentence_within_cosine_0_99(minilm):
    report = minilm["int8"]
    q = report["compile"]["quantization"]
    assert (q["tool"], q["model_type"], q["smooth_quant_alpha"]) == ("nncf.quantize", "transformer", 0.8)
    assert report["accuracy"]["outputs"]["sentence_embedding"]["cosine_min"] >= 0.99
    assert report["accuracy"]["gate"]["passed"] and report["execution_precision"] == "f32"


def test_minilm_weight_compression_keeps_accuracy_and_shrinks_weights(minilm):
    w8, w4 = minilm["int8-weights"], minilm["int4-weights"]
    assert w8["compile"]["quantization"]["weights"] == "int8_asym"
    assert w4["compile"]["quantization"]["weights"] == "int4_sym" and w4["compile"]["quantization"]["group_size"] == 128
    assert w8["accuracy"]["outputs"]["sentence_embedding"]["cosine_min"] >= 0.998
    # int4 is meant for LLM-sized MatMuls; on MiniLM's 384-wide layers it costs real accuracy (measured 0.914)
    assert 0.88 <= w4["accuracy"]["outputs"]["sentence_embedding"]["cosine_min"] < 0.99
    fp32_mib = 22.7e6 * 4 / 2**20
    assert w8["size"]["model_mib"] < 0.4 * fp32_mib
    assert w4["size"]["model_mib"] < w8["size"]["model_mib"]


def test_a_target_whose_device_is_absent_refuses_to_measure_but_compiles(tmp_path, tiny_onnx):
    result = run_cli("export", tiny_onnx, "--target", "intel-igpu", "--precision", "fp16", "--out", tmp_path / "gpu",
                     "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "gpu" / "report.json").read_text())
    assert report["bench"] is None and "GPU" in report["bench_skipped"]
    assert report["settings"]["runtime_settings"]["device"] == "GPU"
    assert any("validated on CPU (no GPU on this host)" in note for note in report["notes"])
    assert report["accuracy"]["outputs"]["logits"]["cosine_min"] > 0.999
