"""host_peaks: real ONNX Runtime and OpenVINO measurements on this host, cached per host, runtime and thread count."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from kiln.bench import host_peaks as hp
from kiln.bench.host_peaks import host_peaks
from kiln.targets import detect_host

THREADS = 2
FAKE = ({"fp32_gflops": 10.0, "int8_gops": 40.0, "bf16_gflops": None, "memory_gbps": 5.0}, {"fp32": "fake"})


def _measure_in_empty_cwd(root: Path, runtime: str, **kwargs) -> dict:
    """Measure with an empty cwd, and check the runtime wrote nothing there (graphs are built in memory)."""
    cwd = root / "cwd"
    cwd.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        peaks = host_peaks(runtime, THREADS, cache_dir=root / "cache", **kwargs)
    assert list(cwd.iterdir()) == []
    return peaks


@pytest.fixture(scope="module")
def ort_run(tmp_path_factory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("ort-peaks")
    return _measure_in_empty_cwd(root, "onnxruntime"), root


@pytest.fixture
def fake_measure(monkeypatch) -> list[int]:
    """Counts measurements without running a runtime: for the cache rules, which do not depend on the numbers."""
    calls: list[int] = []
    monkeypatch.setitem(hp._MEASURERS, "onnxruntime", lambda threads: calls.append(threads) or FAKE)
    return calls


def test_onnxruntime_peaks_are_measured(ort_run):
    peaks, root = ort_run
    import onnxruntime

    assert peaks["cached"] is False
    assert (peaks["runtime"], peaks["runtime_version"], peaks["threads"]) == ("onnxruntime", onnxruntime.__version__,
                                                                             THREADS)
    assert peaks["fp32_gflops"] > 1
    assert peaks["int8_gops"] > peaks["fp32_gflops"], peaks["method"]  # u8s8 VNNI/AMX kernels beat fp32 FMA
    assert peaks["bf16_gflops"] is None and peaks["method"]["bf16"].startswith("null:")
    assert 0.5 < peaks["memory_gbps"] < 500
    assert 0 < peaks["seconds"] < 20
    assert set(peaks["method"]) == {"fp32", "int8", "bf16", "memory", "cache"}
    l2, l3 = peaks["cache_gbps"]["l2"], peaks["cache_gbps"]["l3"]
    # in-cache streams beat DRAM; the buffers are a quarter of their level, so they stay resident
    assert l2["gbps"] > peaks["memory_gbps"] and l2["buffer_bytes"] * 4 == l2["cache_bytes"]
    assert l3["buffer_bytes"] <= l3["cache_bytes"] // 4
    assert "MatMulInteger" in peaks["method"]["int8"] and "QLinearMatMul" in peaks["method"]["int8"]
    assert "8.0x L3" in peaks["method"]["memory"] or "capped" in peaks["method"]["memory"]
    assert peaks["host_key"] == hp._host_key("onnxruntime", onnxruntime.__version__, THREADS)
    on_disk = json.loads((root / "cache" / f"host-peaks-{peaks['host_key']}.json").read_text())
    assert on_disk == {k: v for k, v in peaks.items() if k != "cached"}


def test_second_call_is_cached(ort_run):
    peaks, root = ort_run
    start = time.perf_counter()
    again = host_peaks("onnxruntime", THREADS, cache_dir=root / "cache")
    assert time.perf_counter() - start < 0.5
    assert again["cached"] is True
    assert {k: v for k, v in again.items() if k != "cached"} == {k: v for k, v in peaks.items() if k != "cached"}


def test_refresh_and_corrupt_cache_remeasure(ort_run):
    peaks, root = ort_run
    path = root / "cache" / f"host-peaks-{peaks['host_key']}.json"
    refreshed = _measure_in_empty_cwd(root, "onnxruntime", refresh=True)
    assert refreshed["cached"] is False and refreshed["int8_gops"] > refreshed["fp32_gflops"] > 1
    path.write_text("{ not json")
    remeasured = _measure_in_empty_cwd(root, "onnxruntime")
    assert remeasured["cached"] is False and remeasured["fp32_gflops"] > 1
    assert json.loads(path.read_text())["fp32_gflops"] == remeasured["fp32_gflops"]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left behind


@pytest.mark.parametrize("bad", ["", b"\xff\xfe\x00", "[]", '{"runtime": "onnxruntime"}', "fp32 wrong type", "other key",
                                 "negative memory"])
def test_wrong_cache_is_ignored(tmp_path, fake_measure, bad):
    first = host_peaks("onnxruntime", THREADS, cache_dir=tmp_path)
    path = tmp_path / f"host-peaks-{first['host_key']}.json"
    data = json.loads(path.read_text())
    edits = {"fp32 wrong type": {"fp32_gflops": "fast"}, "other key": {"host_key": "0" * 16},
             "negative memory": {"memory_gbps": -1.0}}
    if isinstance(bad, bytes):
        path.write_bytes(bad)
    else:
        path.write_text(json.dumps({**data, **edits[bad]}) if bad in edits else bad)
    again = host_peaks("onnxruntime", THREADS, cache_dir=tmp_path)
    assert again["cached"] is False and len(fake_measure) == 2
    assert host_peaks("onnxruntime", THREADS, cache_dir=tmp_path)["cached"] is True and len(fake_measure) == 2


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch, fake_measure):
    monkeypatch.delenv("KILN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    key = host_peaks("onnxruntime", THREADS)["host_key"]
    assert (tmp_path / "xdg" / "kiln" / f"host-peaks-{key}.json").is_file()
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path / "kiln"))
    assert host_peaks("onnxruntime", THREADS)["cached"] is False
    assert (tmp_path / "kiln" / f"host-peaks-{key}.json").is_file()


def test_key_depends_on_threads_runtime_and_version():
    keys = {hp._host_key("onnxruntime", "1.32.0", 1), hp._host_key("onnxruntime", "1.32.0", 2),
            hp._host_key("openvino", "1.32.0", 2), hp._host_key("onnxruntime", "1.33.0", 2)}
    assert len(keys) == 4 and all(len(k) == 16 for k in keys)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown runtime"):
        host_peaks("tensorflow", THREADS)
    with pytest.raises(ValueError, match="threads"):
        host_peaks("onnxruntime", 0)


def test_openvino_peaks_are_measured_and_checked(tmp_path):
    import openvino

    peaks = _measure_in_empty_cwd(tmp_path, "openvino")
    flags = detect_host().cpu_flags
    assert peaks["runtime"] == "openvino" and openvino.__version__.startswith(peaks["runtime_version"])
    assert peaks["fp32_gflops"] > 1 and "ran as f32" in peaks["method"]["fp32"]
    assert (peaks["bf16_gflops"] is not None) == bool(flags & {"avx512_bf16", "amx_bf16"}), peaks["method"]["bf16"]
    if peaks["bf16_gflops"] is not None:
        assert "ran as bf16" in peaks["method"]["bf16"]
    int8_ran = not peaks["method"]["int8"].startswith("null:")
    assert (peaks["int8_gops"] is not None) == int8_ran
    if int8_ran:
        assert "ran as u8" in peaks["method"]["int8"] or "ran as i8" in peaks["method"]["int8"]
        if flags & {"amx_int8", "avx512_vnni", "avx_vnni"}:  # without VNNI, u8 x s8 goes through vpmaddubsw, which
            # measured below f32 FMA on an AVX2-only EPYC Zen 3 (117 against 155 G/s)
            assert peaks["int8_gops"] > peaks["fp32_gflops"], peaks["method"]
    if flags & {"amx_int8", "avx512_vnni"}:
        assert int8_ran, peaks["method"]["int8"]  # a VNNI/AMX host must get int8 kernels from LPT
    assert 0.5 < peaks["memory_gbps"] < 500 and 0 < peaks["seconds"] < 20
    assert host_peaks("openvino", THREADS, cache_dir=tmp_path / "cache")["cached"] is True
