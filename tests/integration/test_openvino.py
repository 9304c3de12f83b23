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
    # the same data for every precision (weights-only ignores the calibration): one export stage for all four, and
    # the one the TensorRT and report tests' MiniLM exports reuse later in the session
    common = (str(minilm_path), "--eval", str(eval_sentences), "--eval-limit", "100", "--calibration",
              str(zoo.CALIBRATION_SENTENCES), "--calibration-limit", "100")
    return {
        "int8": export(tmp, "int8", *common, "--precision", "int8", "--min-cosine", "0.99"),
        "int8-weights": export(tmp, "w8", *common, "--precision", "int8-weights"),
        "int4-weights": export(tmp, "w4", *common, "--precision", "int4-weights"),
        "int4-weights-g64-r80": export(tmp, "w4b", *common, "--precision", "int4-weights", "--group-size", "64",
                                       "--ratio", "0.8", "--asymmetric"),
    }


@pytest.fixture(scope="module")
def efficientnet(tmp_path_factory, image_dirs):
    tmp = tmp_path_factory.mktemp("ov-effnet")
    # the data every EfficientNet export of the session has: one export stage, from the stage cache after the first
    common = ("benchmarks.zoo:efficientnet_lite0", *zoo.EFFICIENTNET_CLI, "--eval", str(image_dirs["eval"]),
              "--calibration", str(image_dirs["calibration"]))
    return {"fp32": export(tmp, "fp32", *common), "bf16": export(tmp, "bf16", *common, "--precision", "bf16"),
            "auto": export(tmp, "auto", *common, "--precision", "auto", "--max-top1-disagreement", "0.10")}


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
    """bf16 where the CPU has bf16 instructions. Elsewhere (an AVX2-only EPYC) OpenVINO's CPU plugin runs the IR in
    f32, and the report says what ran, not what was asked for."""
    from kiln.targets import detect_host

    report = efficientnet["bf16"]
    out = report["accuracy"]["outputs"]["output"]
    if not {"avx512_bf16", "amx_bf16"} & detect_host().cpu_flags:
        assert report["execution_precision"] == "f32" and out["top1_agreement"] == 1.0
        return
    assert report["execution_precision"] == "bf16"
    assert 0.85 <= out["top1_agreement"] < 1.0  # bf16 does move some ambiguous images: measured, not hidden
    assert out["top1_agreement_confident"] == 1.0


def test_auto_with_a_top1_budget_searches_keeps_few_units_and_holds_the_budget_on_images_it_never_saw(efficientnet):
    """The top-1 search end to end: NNCF's plain int8 misses 10 % disagreement on EfficientNet-Lite0 (84.5 % on the
    evaluation images, Zen 4), the search reads the tuning split's expected flip rate, keeps a few units in float,
    and the gate on the 168 evaluation images (never tuned on) passes with every confident image kept. The tuning and
    calibration halves are disjoint, counted and hashed in the report."""
    report = efficientnet["auto"]
    block, split = report["compile"]["mixed_precision"], report["compile"]["data_split"]
    assert split["tuning"]["count"] == 42 and split["calibration"]["count"] == 42
    assert split["tuning"]["sha256"] != split["calibration"]["sha256"]
    low = block["search"]["curve"][0]
    assert low["kept"] == 0 and not low["passed"]
    assert low["tuning"]["output"]["top1_expected_disagreement"] > 0.10, low  # plain int8 is over budget
    chosen = block["search"]["chosen"]
    assert chosen["passed"] and 1 <= chosen["kept"] <= 12 < block["units"], chosen
    assert chosen["tuning"]["output"]["top1_expected_disagreement"] <= 0.10 * 0.75 + 1e-9, chosen  # 1/4 of the slack
    # mixed ships only where it timed faster than float (a ratio of this host, not asserted as a speed here)
    assert block["shipped"] in ("mixed", "high"), block
    assert (block["shipped"] == "mixed") == (block["p50_ms"]["chosen"] < block["p50_ms"]["high"]), block["p50_ms"]
    if block["shipped"] == "mixed":
        assert block["kept_fp32"] == chosen["kept_units"]
    out = report["accuracy"]["outputs"]["output"]
    assert out["top1_agreement"] >= 0.90 and out["top1_agreement_confident"] == 1.0, out
    assert report["accuracy"]["gate"]["passed"]


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


def test_weight_compression_options_reach_nncf_and_move_accuracy(minilm):
    """--group-size 64 --ratio 0.8 --asymmetric: smaller groups and 20 % of layers left in int8 must be
    recorded as asked and recover accuracy over the default int4 (group 128, all layers int4)."""
    q = minilm["int4-weights-g64-r80"]["compile"]["quantization"]
    assert (q["weights"], q["group_size"], q["ratio"], q["symmetric"]) == ("int4_asym", 64, 0.8, False)
    assert minilm["int4-weights-g64-r80"]["plan"]["quantization"]["compression"]["group_size"] == 64
    tuned = minilm["int4-weights-g64-r80"]["accuracy"]["outputs"]["sentence_embedding"]["cosine_min"]
    default = minilm["int4-weights"]["accuracy"]["outputs"]["sentence_embedding"]["cosine_min"]
    assert tuned > default + 0.01
    assert minilm["int4-weights-g64-r80"]["size"]["model_mib"] > minilm["int4-weights"]["size"]["model_mib"]


def test_throughput_hint_and_compiled_cache(tmp_path, tiny_onnx):
    """The THROUGHPUT-hint run reports the streams and requests OpenVINO chose; the shipped compiled-model
    cache is hashed in the manifest, loads faster than a cold compile, and `kiln bench --threads` does not
    write a second blob into the artifact."""
    out = tmp_path / "cached"
    result = run_cli("export", tiny_onnx, "--target", "openvino", "--synthetic-data", "--compiled-cache",
                     "--min-seconds", "0.2", "--runs", "20", "--throughput-seconds", "0.5", "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    from kiln.schemas import validate_document

    assert validate_document(report, "report") == []
    assert validate_document(json.loads((out / "manifest.json").read_text()), "manifest") == []
    tm = report["bench"]["throughput_mode"]
    assert tm["hint"] == "THROUGHPUT" and tm["streams"] >= 1 and tm["infer_requests"] >= 1
    assert tm["inferences"] > 10 and tm["throughput_per_s"] > 0 and tm["execution_precision"] == "f32"
    cache = report["compile"]["compiled_cache"]
    assert cache["written"] and cache["device"] == "CPU"
    files = {f["path"] for f in json.loads((out / "manifest.json").read_text())["files"]}
    assert {f"openvino/cache/{name}" for name in cache["files"]} <= files
    assert report["settings"]["runtime_settings"]["cache_dir"] == "cache"
    blobs = sorted((out / "openvino" / "cache").iterdir())
    bench = run_cli("bench", out, "--threads", "1", "--min-seconds", "0.2", "--runs", "10", "--json")
    assert bench.returncode == 0, bench.stderr
    assert sorted((out / "openvino" / "cache").iterdir()) == blobs
    assert json.loads(bench.stdout)["runtime_settings"]["config"]["INFERENCE_NUM_THREADS"] == "1"


def test_weight_options_on_a_precision_without_them_are_refused(tmp_path, tiny_onnx):
    result = run_cli("export", tiny_onnx, "--target", "openvino", "--precision", "int8-weights", "--group-size", "64",
                     "--out", tmp_path / "x", "--synthetic-data")
    assert result.returncode == 2
    assert "--group-size and --ratio apply to int4-weights" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x").exists()
