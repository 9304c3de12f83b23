"""The `gpu` subset: real TensorRT (10.x or 11.x) on a real NVIDIA GPU. It runs in Dockerfile.gpu
(`pytest -m gpu tests/gpu`) and is skipped, with the reason, on machines without both."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import run_cli, zoo

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def _gpu_and_tensorrt() -> str | None:
    try:
        import tensorrt

        if not hasattr(tensorrt, "Builder"):
            return "the installed tensorrt package is NVIDIA's PyPI stub without libraries"
    except ImportError:
        return "TensorRT is not installed (run the gpu subset in Dockerfile.gpu)"
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU on this host"
    return None


SKIP = _gpu_and_tensorrt()
if SKIP:
    pytest.skip(SKIP, allow_module_level=True)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engine_is_built_validated_and_measured_on_the_gpu(tmp_path, image_dirs, precision):
    out = tmp_path / precision
    result = run_cli("export", "benchmarks.zoo:efficientnet_lite0", *zoo.EFFICIENTNET_CLI, "--target", "tensorrt",
                     "--precision", precision, "--calibration", image_dirs["calibration"], "--eval", image_dirs["eval"],
                     "--out", out, "--quiet", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    engine = report["compile"]["engine"]
    assert engine["built"] and engine["builder"] == "tensorrt" and engine["host"]["gpu"]
    assert report["settings"]["runtime_settings"]["engine"].startswith("engines/")
    # accuracy is now the engine's own, measured on the GPU
    assert report["accuracy"]["outputs"]["output"]["top1_agreement"] >= (0.99 if precision == "fp16" else 0.85)
    bench = report["bench"]
    assert bench["device_latency_ms"]["p50"] <= bench["latency_ms"]["p50"]  # copies excluded
    assert bench["runtime_settings"]["engine_layers"]
    timing_cache = out / "tensorrt" / "timing.cache"
    assert timing_cache.stat().st_size > 0
    rebuilt = run_cli("build-engine", out, "--builder", "tensorrt", "--out", tmp_path / "again", "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout)["engines"][0]["timing_cache_reused"] is True


def test_a_farm_gpu_node_builds_and_times_the_engine(tmp_path):
    """A one-node Ray cluster on this GPU machine, started with its own `kiln node-labels` and one GPU: the
    TensorRT cell is placed on it, builds its engine there and reports the engine's latency (needs kiln[ray])."""
    pytest.importorskip("ray", reason="the ray extra is not installed")
    from ray.cluster_utils import Cluster

    from kiln.targets.labels import BENCH_RESOURCE, this_node_labels
    from tests.conftest import tiny_mlp_onnx

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1, "labels": this_node_labels(),
                                                            "resources": {BENCH_RESOURCE: 1}})
    try:
        done = run_cli("export", tiny_mlp_onnx(tmp_path / "mlp.onnx"), "--target", "tensorrt",
                       "--precision", "fp16", "--out", tmp_path / "out", "--json", "--quiet", "--synthetic-data",
                       "--cluster", cluster.address)
    finally:
        cluster.shutdown()
    assert done.returncode == 0, done.stderr
    cell = {c["target"]: c for c in json.loads(done.stdout)["cells"]}["tensorrt"]
    assert cell["status"] == "ok" and cell["p50_ms"] is not None, cell
    report = json.loads((tmp_path / "out" / "tensorrt-fp16" / "report.json").read_text())
    assert report["compile"]["engine"]["built"] and report["bench"]["device_latency_ms"]["p50"] > 0
