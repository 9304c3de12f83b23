"""Calibration ranges kept per (graph, samples, method), on a small conv net and the real ONNX Runtime quantizer: the
int8 and fp8 Q/DQ graphs of one model calibrate once, and the graph built from kept ranges is byte for byte the one a
fresh calibration gives. The calibrator is counted by wrapping ONNX Runtime's own `create_calibrator` (it still runs)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from kiln.calibration import Samples
from kiln.passes import calibration_ranges
from kiln.passes.calibration_ranges import calibrated_tensors, kept_in
from kiln.passes.explicit_qdq import quantize_for_tensorrt
from tests.test_explicit_qdq import _conv_net

pytest.importorskip("onnxruntime")
if not calibration_ranges._onnxruntime_keeps_ranges():
    pytest.skip("this ONNX Runtime has no calibration cache (1.32+)", allow_module_level=True)


@pytest.fixture
def calibrations(monkeypatch) -> list[str]:
    """The model path of every calibration ONNX Runtime runs."""
    import importlib

    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")  # the module, not its function
    seen, real = [], ort_quantize.create_calibrator
    monkeypatch.setattr(ort_quantize, "create_calibrator", lambda model, *a, **k: seen.append(str(model)) or
                        real(model, *a, **k))
    return seen


def _samples(seed: int = 1, count: int = 8) -> Samples:
    rng = np.random.default_rng(seed)
    return Samples(tuple({"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(count)),
                   "arrays", "random")


def test_int8_and_fp8_graphs_of_one_model_calibrate_once_and_equal_a_fresh_calibration(tmp_path, calibrations):
    _conv_net(tmp_path / "net.onnx")
    fresh = quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / "fresh.onnx", _samples(), "fp8")
    assert len(calibrations) == 1
    with kept_in(tmp_path / "ranges"):
        quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / "int8.onnx", _samples(), "int8")
        kept = quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / "fp8.onnx", _samples(), "fp8",
                                     keep_fp32=("pointwise",))  # nodes kept float do not change the ranges
        again = quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / "fp8-again.onnx", _samples(), "fp8")
    assert len(calibrations) == 2  # the fresh one, then int8's; fp8 twice read int8's ranges
    assert (tmp_path / "fp8-again.onnx").read_bytes() == (tmp_path / "fresh.onnx").read_bytes()
    assert again["activations"] == fresh["activations"] and "pointwise" in kept["kept_fp32"]
    files = list((tmp_path / "ranges").iterdir())
    assert len(files) == 1 and set(json.loads(files[0].read_text())["data"]) >= {"x", "a", "a_relu", "y"}


def test_other_samples_or_another_graph_calibrate_again(tmp_path, calibrations):
    _conv_net(tmp_path / "net.onnx")
    with kept_in(tmp_path / "ranges"):
        quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / "a.onnx", _samples(1), "int8")
        quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / "b.onnx", _samples(2), "int8")
        quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / "c.onnx", _samples(1, count=9), "int8")
        model = onnx.load(str(tmp_path / "net.onnx"))
        model.graph.initializer[0].raw_data = np.ones(16 * 3 * 3 * 3, np.float32).tobytes()  # new stem weights
        onnx.save(model, str(tmp_path / "edited.onnx"))
        quantize_for_tensorrt(tmp_path / "edited.onnx", tmp_path / "d.onnx", _samples(1), "int8")
    assert len(calibrations) == 4 and len(list((tmp_path / "ranges").iterdir())) == 4


def test_a_kept_file_without_a_range_the_graph_needs_is_replaced(tmp_path, calibrations):
    _conv_net(tmp_path / "net.onnx")
    with kept_in(tmp_path / "ranges"):
        quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / "a.onnx", _samples(), "int8")
        kept = next((tmp_path / "ranges").iterdir())
        payload = json.loads(kept.read_text())
        del payload["data"]["e_relu"]  # as a graph whose tensors the quantizer renamed would find it
        kept.write_text(json.dumps(payload))
        quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / "b.onnx", _samples(), "int8")
    assert len(calibrations) == 2 and "e_relu" in json.loads(kept.read_text())["data"]
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_nothing_is_kept_outside_a_run_with_the_cache_on(tmp_path, calibrations):
    _conv_net(tmp_path / "net.onnx")
    for name in ("a", "b"):
        quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / f"{name}.onnx", _samples(), "int8")
    assert len(calibrations) == 2 and not (tmp_path / "ranges").exists()


def test_the_tensors_asked_for_are_those_of_the_calibrated_ops(tmp_path):
    _conv_net(tmp_path / "net.onnx")
    model = onnx.load(str(tmp_path / "net.onnx"))
    assert calibrated_tensors(model, ["Conv"]) == {"x", "a", "a_relu", "e", "e_relu", "b", "b_relu", "y"}
    assert calibrated_tensors(model, ["Relu"]) == {"a", "a_relu", "e", "e_relu", "b", "b_relu"}


def test_kept_ranges_are_pruned_with_the_stage_cache(tmp_path, calibrations):
    """Reading kept ranges marks them used; `kiln cache prune --older-than` removes those unused for that long,
    `--all` every one."""
    import os
    import time

    from kiln.artifact.cache import Cache

    cache = Cache(tmp_path / "stages")
    _conv_net(tmp_path / "net.onnx")
    with kept_in(cache.root / "calibration"):
        quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / "a.onnx", _samples(1), "int8")
        quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / "b.onnx", _samples(2), "int8")
        files = sorted((cache.root / "calibration").iterdir(), key=lambda p: p.stat().st_mtime_ns)
        for kept in files:
            os.utime(kept, (time.time() - 3 * 86400,) * 2)
        quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / "c.onnx", _samples(2), "int8")  # uses the second
    assert len(calibrations) == 2
    cache.prune(older_than_days=2)
    assert [p.name for p in (cache.root / "calibration").iterdir()] == [files[1].name]
    cache.prune(everything=True)
    assert not list((cache.root / "calibration").iterdir())
