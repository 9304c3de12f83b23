"""Faults: kill -9 at every stage, and eight exports racing into one cache.

The process is paused at a named point with KILN_PAUSE_AT (kiln/faults.py) and killed there with SIGKILL,
so no cleanup code of kiln's runs: the guarantees must hold from the file system alone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, tiny_mlp_onnx

ARGS = ("--precision", "int8", "--runs", "5", "--min-seconds", "0.05", "--warmup", "1", "--throughput-seconds", "0",
        "--batch-sizes", "1,2", "--profile-runs", "2", "--quiet")
POINTS = ["resolve", "load", "export", "baseline", "compile", "validate", "bench", "analyse", "package", "publish-swap",
          "bundle", "cache-store"]


def _env(cache: Path, pause: str | None = None) -> dict:
    env = dict(os.environ, KILN_CACHE_DIR=str(cache))
    if pause:
        env["KILN_PAUSE_AT"] = pause
    return env


def _command(model: Path, out: Path, calib: Path) -> list[str]:
    return [sys.executable, "-m", "kiln.cli", "export", str(model), "--out", str(out), "--calibration", str(calib),
            "--bundle", *ARGS]


def _kill_at(point: str, command: list[str], env: dict) -> None:
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               env={**env, "KILN_PAUSE_AT": point}, cwd=REPO)
    deadline = time.monotonic() + 120
    for line in process.stderr:
        if line.strip() == f"kiln: paused at {point}":
            break
        assert time.monotonic() < deadline
    else:
        pytest.fail(f"the export never reached {point} (exit {process.wait()})")
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("faults")
    np.save(root / "x.npy", np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32))
    return {"model": tiny_mlp_onnx(root / "tiny.onnx"), "calib": root / "x.npy", "cache": root / "cache"}


def _empty_stage_cache(cache: Path) -> Path:
    """The module shares one KILN_CACHE_DIR (host peaks are measured once); every run starts without stages."""
    shutil.rmtree(cache / "stages", ignore_errors=True)
    return cache


# Every point on a first export; replacing an artifact, the points around publication (and one stage before).
CASES = [(p, False) for p in POINTS if p != "publish-swap"] + [(p, True) for p in ("compile", "package", "publish-swap",
                                                                                   "bundle")]


@pytest.mark.parametrize("point,previous", CASES, ids=[f"{p}-{'replacing' if r else 'first'}" for p, r in CASES])
def test_kill_9_leaves_nothing_or_the_previous_artifact_and_the_next_run_cleans_up(model, tmp_path, point, previous):
    out, cache = tmp_path / "artifact", _empty_stage_cache(model["cache"])
    bundle = out.with_name("artifact.tar.gz")
    command = _command(model["model"], out, model["calib"])
    before = None
    if previous:
        subprocess.run(command, env=_env(cache), check=True, capture_output=True, cwd=REPO)
        before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        bundle_before = bundle.read_bytes()
        _empty_stage_cache(cache)  # so the killed run really computes every stage
    _kill_at(point, command, _env(cache))

    if before is None:
        assert not out.exists() or point == "bundle", f"something sits at {out} after a kill at {point}"
        assert not bundle.exists()
    else:
        if out.exists():
            now = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
            assert now.keys() == before.keys()  # the previous artifact, complete (not a mix)
        else:
            assert point == "publish-swap"  # moved aside, to be put back by the next run
        assert bundle.read_bytes() == bundle_before
    if out.exists():
        assert subprocess.run([sys.executable, "-m", "kiln.cli", "verify", str(out)], cwd=REPO,
                              capture_output=True).returncode == 0

    again = subprocess.run(command, env=_env(cache), capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0, again.stderr
    leftovers = [p.name for p in tmp_path.iterdir() if ".kiln-tmp-" in p.name or ".kiln-old-" in p.name]
    assert leftovers == []
    assert not any((cache / "stages" / "tmp").iterdir())
    assert subprocess.run([sys.executable, "-m", "kiln.cli", "verify", str(bundle)], cwd=REPO,
                          capture_output=True).returncode == 0


def test_a_run_killed_mid_swap_gets_the_previous_artifact_back(model, tmp_path):
    """Killed after moving the previous artifact aside: the next run (any run into that path) restores it."""
    out, cache = tmp_path / "artifact", _empty_stage_cache(model["cache"])
    command = _command(model["model"], out, model["calib"])
    subprocess.run(command, env=_env(cache), check=True, capture_output=True, cwd=REPO)
    _empty_stage_cache(cache)
    manifest = (out / "manifest.json").read_bytes()
    _kill_at("publish-swap", command, _env(cache))
    assert not out.exists()
    from kiln.artifact import clean_leftovers

    clean_leftovers(out)
    assert (out / "manifest.json").read_bytes() == manifest


def test_eight_concurrent_exports_into_one_cache_all_succeed_with_identical_results(model, tmp_path):
    cache = _empty_stage_cache(model["cache"])

    def one(i: int) -> subprocess.CompletedProcess:
        out = tmp_path / f"out{i}"
        return subprocess.run(_command(model["model"], out, model["calib"]) + ["--json"], env=_env(cache),
                              capture_output=True, text=True, cwd=REPO, timeout=600)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results if r.returncode]
    outcomes = [json.loads(r.stdout)["cache"]["stages"] for r in results]
    assert sum(o["compile"] == "miss" for o in outcomes) == 1  # one computed under the lock, seven reused it
    models = {(tmp_path / f"out{i}" / "model.onnx").read_bytes() for i in range(8)}
    bundles = {(tmp_path / f"out{i}.tar.gz").read_bytes() for i in range(8)}
    assert len(models) == 1 and len(bundles) == 1
    for i in range(8):
        assert subprocess.run([sys.executable, "-m", "kiln.cli", "verify", str(tmp_path / f"out{i}.tar.gz")],
                              cwd=REPO, capture_output=True).returncode == 0
    entries = [p for stage in (cache / "stages" / "entries").iterdir() for p in stage.iterdir()]
    assert len(entries) == 6  # export, baseline, compile, validate, bench, analyse: one each
    assert not any((cache / "stages" / "tmp").iterdir())
