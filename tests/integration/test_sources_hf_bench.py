"""Hugging Face folders, `kiln bench` on an artifact, and byte-identical re-exports, through the real pipeline."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conftest import run_cli, tiny_mlp_onnx, zoo
from tests.hostile.helpers import VERIFY_FAILED
from tests.integration.source_checks import (OK, USAGE, sha256, read_artifact, export, signature, files, assert_files_hashed, assert_near_exact,
    assert_checked_at_other_shape, ext_data_onnx)


# --- 6. Hugging Face folders built offline ----------------------------------------------------------------

SEQUENCE_LENGTH = 16
EVAL_LINES = [
    "Return the next size number of bytes from the stream.",
    "Whether this path is a symbolic link.",
    "The source code is returned as a single string.",
    "A kiln turns clay into something that lasts.",
    "Measure twice, cut once.",
    "Latency percentiles say more than the mean.",
    "The quick brown fox jumps over the lazy dog.",
    "Tokenizers split words into word pieces.",
    "An artifact carries its manifest and hashes.",
    "Integers overflow; floats round.",
    "Open the file, read the header, close the file.",
    "Every error message should say what to do next.",
    "Short.",
    "A much longer sentence that certainly runs past sixteen word pieces once the tokenizer has split it up.",
    "Numbers like 3.14159 and 2718 are tokens too.",
    "Unicode: café, naïve, Zürich.",
    "Caching saves time when nothing changed.",
    "The batch axis is dynamic; the sequence axis is too.",
    "Softmax over the last axis gives probabilities.",
    "Goodbye, and thanks for all the fish.",
]


@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> dict[str, Path]:
    """Tiny randomly initialised Hugging Face folders, the real MiniLM tokenizer, eval text and images."""
    import torch
    import transformers
    from PIL import Image

    transformers.logging.set_verbosity_error()
    root = tmp_path_factory.mktemp("hf")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(zoo.minilm_path()))
    folders = {}

    def bert(name: str, cls, num_labels: int) -> None:
        config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                         num_labels=num_labels)
        torch.manual_seed(0)
        folders[name] = root / name
        cls(config).eval().save_pretrained(folders[name])
        tokenizer.save_pretrained(folders[name])

    bert("text", transformers.BertForSequenceClassification, 3)
    bert("token", transformers.BertForTokenClassification, 5)

    torch.manual_seed(0)
    vit = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, num_labels=4)
    folders["image"] = root / "image"
    transformers.ViTForImageClassification(vit).eval().save_pretrained(folders["image"])
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folders["image"])

    folders["decoder"] = root / "decoder"  # a decoder family kiln has not checked (GPT-2 now exports)
    transformers.GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                               vocab_size=tokenizer.vocab_size).save_pretrained(folders["decoder"])

    folders["eval_text"] = root / "eval.txt"
    folders["eval_text"].write_text("\n".join(EVAL_LINES) + "\n", encoding="utf-8")
    folders["eval_images"] = root / "images"
    folders["eval_images"].mkdir()
    rng = np.random.default_rng(5)
    for i in range(5):  # odd sizes and aspect ratios: preprocessing must resize every one to 32x32
        pixels = rng.integers(0, 256, size=(24 + 9 * i, 48 - 5 * i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folders["eval_images"] / f"img{i}.png")
    return folders


def assert_preprocessing_travels(manifest: dict, out: Path, folder: Path, names: tuple[str, ...]) -> None:
    listed = files(manifest)
    for name in names:
        rel = f"preprocessing/{name}"
        assert (out / rel).is_file(), rel
        assert listed[rel] == sha256(folder / name) == sha256(out / rel), rel


def _tokenize(folder: Path, lines: list[str]) -> dict[str, np.ndarray]:
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    return dict(tokenizer(lines, padding="max_length", truncation=True, max_length=SEQUENCE_LENGTH,
                          return_tensors="np"))


TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def test_hf_sequence_classifier_infers_its_task_and_agrees_on_every_eval_line(hf, tmp_path):
    out = tmp_path / "out"
    manifest, report = export(hf["text"], out, "--eval", hf["eval_text"], "--sequence-length",
                              str(SEQUENCE_LENGTH))
    source = manifest["source"]
    assert source["kind"] == "huggingface"
    assert re.fullmatch(r"[0-9a-f]{64}", source["sha256"])  # one digest over the folder's files
    assert source["details"]["task"] == "text-classification"  # from architectures; no --task was given
    assert manifest["config"]["task"] is None
    assert manifest["export"]["exporter"] in ("torchscript", "dynamo")
    assert manifest["export"]["attempts"][-1]["ok"] is True
    sig = signature(manifest)
    assert sig == {**{n: ("int64", ["batch", "sequence"]) for n in TEXT_INPUTS}, "logits": ("float32", ["batch", 3])}

    accuracy = report["accuracy"]
    assert accuracy["meaningful"] is True
    assert accuracy["data"]["kind"] == "text" and accuracy["data"]["count"] == len(EVAL_LINES)
    logits = accuracy["outputs"]["logits"]
    assert logits["class_logits"] is True
    assert logits["positions"] == len(EVAL_LINES)
    assert logits["top1_agreement"] == 1.0
    assert_near_exact(report, out, ("logits",))
    assert_checked_at_other_shape(report, {n: (0, 1) for n in TEXT_INPUTS})

    # the eval text was tokenized with the folder's own tokenizer: the sample kept is the first line
    expected = _tokenize(hf["text"], EVAL_LINES[:1])
    with np.load(out / "sample_input.npz") as sample:
        for name in TEXT_INPUTS:
            np.testing.assert_array_equal(sample[name], expected[name])
    assert expected["input_ids"][0, 0] != expected["input_ids"][0, 5]  # real tokens, not all padding

    assert_preprocessing_travels(manifest, out, hf["text"], ("config.json", "tokenizer.json", "tokenizer_config.json"))
    assert_files_hashed(manifest, out)


def test_hf_token_classifier_keeps_batch_and_sequence_dims_on_its_logits(hf, tmp_path):
    out = tmp_path / "out"
    manifest, report = export(hf["token"], out, "--eval", hf["eval_text"], "--sequence-length",
                              str(SEQUENCE_LENGTH))
    assert manifest["source"]["details"]["task"] == "token-classification"
    assert signature(manifest)["logits"] == ("float32", ["batch", "sequence", 5])
    logits = report["accuracy"]["outputs"]["logits"]
    assert logits["top1_agreement"] == 1.0
    # top-1 is judged per real token: padding positions are left out
    real_tokens = int(_tokenize(hf["token"], EVAL_LINES)["attention_mask"].sum())
    assert logits["padding_excluded"] is True
    assert logits["positions"] == real_tokens < len(EVAL_LINES) * SEQUENCE_LENGTH
    assert_near_exact(report, out, ("logits",))
    assert_checked_at_other_shape(report, {n: (0, 1) for n in TEXT_INPUTS})
    assert_preprocessing_travels(manifest, out, hf["token"], ("config.json", "tokenizer.json"))
    assert re.fullmatch(r"[0-9a-f]{64}", manifest["source"]["sha256"])


def test_hf_image_classifier_uses_its_preprocessor_config(hf, tmp_path):
    import transformers
    from PIL import Image

    out = tmp_path / "out"
    manifest, report = export(hf["image"], out, "--eval", hf["eval_images"])
    assert manifest["source"]["kind"] == "huggingface"
    assert manifest["source"]["details"]["task"] == "image-classification"
    assert signature(manifest) == {"pixel_values": ("float32", ["batch", 3, 32, 32]),
                                   "logits": ("float32", ["batch", 4])}
    accuracy = report["accuracy"]
    assert accuracy["data"]["kind"] == "images" and accuracy["data"]["count"] == 5
    assert "preprocessor_config.json" in accuracy["data"]["description"]
    assert accuracy["outputs"]["logits"]["top1_agreement"] == 1.0
    assert_near_exact(report, out, ("logits",))
    assert_checked_at_other_shape(report, {"pixel_values": (0,)})
    samples = {c["inputs"]: c["shapes"] for c in report["export"]["check"]["checks"]}
    assert samples["sample 0"] == {"pixel_values": [1, 3, 32, 32]}

    # kiln's preprocessing of the first image equals the model's own image processor's
    processor = transformers.AutoImageProcessor.from_pretrained(str(hf["image"]))
    with Image.open(hf["eval_images"] / "img0.png") as image:
        expected = processor(image, return_tensors="np")["pixel_values"]
    with np.load(out / "sample_input.npz") as sample:
        assert sample["pixel_values"].shape == (1, 3, 32, 32)
        np.testing.assert_allclose(sample["pixel_values"], expected, atol=1e-5)

    assert_preprocessing_travels(manifest, out, hf["image"], ("config.json", "preprocessor_config.json"))
    assert_files_hashed(manifest, out)


def test_hf_unknown_task_exits_2_and_lists_the_tasks(hf, tmp_path):
    out = tmp_path / "out"
    result = run_cli("export", hf["text"], "--task", "no-such-task", "--out", out, "--no-bench", "--quiet")
    assert result.returncode == USAGE, result.stderr
    assert "Traceback" not in result.stderr
    line, = result.stderr.strip().splitlines()
    assert line.startswith("kiln: error: ")
    for task in ("feature-extraction", "text-classification", "token-classification", "image-classification"):
        assert task in line
    assert not out.exists()


def test_hf_unknown_task_message_names_the_task_given(hf, tmp_path):
    result = run_cli("export", hf["text"], "--task", "no-such-task", "--out", tmp_path / "out", "--no-bench",
                     "--quiet")
    assert result.returncode == USAGE
    assert "no-such-task" in result.stderr


def test_hf_decoder_folder_exits_2_saying_decoder(hf, tmp_path):
    out = tmp_path / "out"
    result = run_cli("export", hf["decoder"], "--out", out, "--no-bench", "--quiet")
    assert result.returncode == USAGE, result.stderr
    assert "Traceback" not in result.stderr
    line, = result.stderr.strip().splitlines()
    assert line.startswith("kiln: error: ") and "decoder" in line and "gpt_neox" in line
    assert not out.exists()


# --- 7. kiln bench ----------------------------------------------------------------------------------------


def test_bench_remeasures_with_recorded_settings_and_refuses_a_tampered_model(tmp_path):
    out = tmp_path / "out"
    result = run_cli("export", tiny_mlp_onnx(tmp_path / "tiny.onnx"), "--out", out, "--quiet", "--runs", "20",
                     "--min-seconds", "0.2", "--warmup", "3")
    assert result.returncode == OK, result.stderr
    manifest, report = read_artifact(out)
    assert report["bench"] is not None and report["bench"]["runs"] >= 20
    assert "latency_ms" not in manifest["summary"]  # measurements live in report.json, the manifest is reproducible
    recorded = manifest["runtime"]["settings"]
    assert recorded["intra_op_num_threads"] == manifest["plan"]["threads"]

    bench = run_cli("bench", out, "--json", "--runs", "20", "--min-seconds", "0.2")
    assert bench.returncode == OK, bench.stderr
    data = json.loads(bench.stdout)
    assert data["schema_version"] == "kiln.bench/1"
    lat = data["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"]
    assert data["runs"] >= 20 and data["timed_seconds"] >= 0.2
    assert data["throughput_per_s"] == pytest.approx(data["batch"] * 1000.0 / lat["mean"], rel=1e-9)
    assert data["runtime_settings"] == recorded
    assert data["runtime_settings"]["intra_op_num_threads"] == recorded["intra_op_num_threads"]
    assert data["recorded"] == {k: report["latency_ms"][k] for k in ("p50", "p99")}
    assert data["target"] == manifest["target"] and data["precision"] == "fp32"
    with np.load(out / "sample_input.npz") as sample:
        assert data["input_shapes"] == {k: list(sample[k].shape) for k in sample.files}

    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    model = tampered / manifest["runtime"]["model"]
    raw = bytearray(model.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    model.write_bytes(bytes(raw))
    refused = run_cli("bench", tampered, "--json", "--runs", "20", "--min-seconds", "0.2")
    assert refused.returncode == VERIFY_FAILED, refused.stderr  # the artifact does not match: exit 6, as kiln verify
    assert "Traceback" not in refused.stderr
    line, = refused.stderr.strip().splitlines()
    assert line.startswith("kiln: error: ") and "sha256" in line
    failure = json.loads(refused.stdout)
    assert failure["status"] == "failed" and failure["error"]["exit_code"] == VERIFY_FAILED


# --- 8. reproducibility -----------------------------------------------------------------------------------


@pytest.mark.parametrize("precision,external", [("fp32", False), ("fp32", True), ("int8-dynamic", False)],
                         ids=["fp32", "fp32-external-data", "int8-dynamic"])
def test_same_onnx_source_twice_gives_a_byte_identical_model(tmp_path, precision, external):
    source = ext_data_onnx(tmp_path / "src") if external else tiny_mlp_onnx(tmp_path / "tiny.onnx", hidden=32)
    first, _ = export(source, tmp_path / "a", "--precision", precision)
    second, _ = export(source, tmp_path / "b", "--precision", precision)
    a, b = files(first), files(second)
    models = sorted(p for p in a if p.startswith("model.onnx"))
    assert models and models == sorted(p for p in b if p.startswith("model.onnx"))
    for rel in models + ["runtime.json", "sample_input.npz", "sample_output.npz"]:
        assert a[rel] == b[rel], rel
        assert a[rel] == sha256(tmp_path / "a" / rel)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "a" / "model.onnx"), load_external_data=False).graph.node}
    if precision == "int8-dynamic":
        assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}, ops
    else:
        assert "MatMul" in ops and not ops & {"MatMulInteger", "DynamicQuantizeLinear", "QuantizeLinear"}, ops
