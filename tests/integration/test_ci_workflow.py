"""The regression gate, and the worked GitHub Actions workflow in docs/ci/ run step by step with its own commands.

A tiny ONNX model stands in for `model/` and a local folder for the release download (no network here);
every other word of the `# kiln-step` steps is what the workflow runs.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO, run_cli, tiny_mlp_onnx

WORKFLOW = REPO / "docs" / "ci" / "github-actions.yml"
STEPS = ("export", "compare with the release", "verify what is uploaded")


def _steps() -> dict[str, str]:
    text = WORKFLOW.read_text()
    for name in STEPS:
        assert f"- name: {name}  # kiln-step" in text, f"step '{name}' is no longer marked as tested"
    steps = yaml.safe_load(text)["jobs"]["export"]["steps"]
    return {s["name"]: s["run"] for s in steps if s.get("name") in STEPS}


def _run(script: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    kiln_bin = Path(sys.executable).parent  # the `kiln` entry point of this environment
    return subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env, "PATH": f"{kiln_bin}:{os.environ['PATH']}"}, timeout=600)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ci")
    tiny_mlp_onnx(root / "model.onnx")
    (root / "data").mkdir()
    rng = np.random.default_rng(1)
    np.save(root / "data" / "x.npy", rng.standard_normal((24, 8)).astype(np.float32))
    env = {"MODEL": "model.onnx", "TARGET": "onnxruntime", "PRECISION": "fp32", "CALIBRATION": "data/x.npy",
           "EVAL": "data/x.npy"}
    return {"root": root, "env": env, "steps": _steps()}


def test_the_workflow_exports_compares_with_the_release_and_verifies(workspace):
    root, env, steps = workspace["root"], workspace["env"], workspace["steps"]
    first = _run(steps["export"], root, env)  # the release build
    assert first.returncode == 0, first.stderr
    (root / "release").mkdir()
    for name in ("artifact.tar.gz", "report.json"):
        (root / name).rename(root / "release" / name)
    subprocess.run(["rm", "-rf", str(root / "artifact")], check=True)

    again = _run(steps["export"], root, env)  # the pull request's build
    assert again.returncode == 0, again.stderr
    assert json.loads((root / "report.json").read_text())["status"] == "ok"
    compare = _run(steps["compare with the release"], root, env)
    assert compare.returncode == 0, compare.stderr
    comment = (root / "comment.md").read_text()
    assert comment.startswith("### kiln compare: ✅ no regression")
    assert "re-measured here, interleaved" in comment and "| logits cosine_min |" in comment
    verify = _run(steps["verify what is uploaded"], root, env)
    assert verify.returncode == 0 and "signature absent" in verify.stdout


def test_the_workflow_fails_the_build_on_a_regression(workspace):
    """The release was smaller: the same compare step exits 4 and still writes the comment saying why."""
    root, env, steps = workspace["root"], workspace["env"], workspace["steps"]
    release = json.loads((root / "release" / "report.json").read_text())
    release["size"]["model_mib"] /= 2
    (root / "release" / "report.json").write_text(json.dumps(release))
    subprocess.run(["rm", "-rf", str(root / "baseline"), str(root / "comment.md")], check=True)
    compare = _run(steps["compare with the release"], root, env)
    assert compare.returncode == 4
    assert compare.stderr.strip().splitlines() == [compare.stderr.strip()]
    assert "model size MiB +100.0 %" in compare.stderr
    assert "❌ 1 regression(s)" in (root / "comment.md").read_text()


@pytest.fixture(scope="module")
def real_report(workspace) -> dict:
    """A real report.json (the schema is checked by kiln compare), whose figures each case then sets."""
    root = workspace["root"]
    result = run_cli("export", root / "model.onnx", "--out", root / "real", "--runs", "10", "--min-seconds", "0.05",
                     "--no-analysis", "--synthetic-data", "--quiet")
    assert result.returncode == 0, result.stderr
    return json.loads((root / "real" / "report.json").read_text())


def _report(base: dict, p50: float, std: float, runs: int, cosine: float, top1: float | None, mib: float,
            host="h") -> dict:
    report = copy.deepcopy(base)
    report["latency_ms"].update(p50=p50, std=std)
    report["bench"]["runs"] = runs
    report["size"]["model_mib"] = mib
    report["host"]["cpu_model"] = host
    report["accuracy"]["outputs"]["logits"].update(cosine_min=cosine, top1_agreement=top1)
    return report


@pytest.mark.parametrize("case,new,regressions", [
    ("same", dict(p50=10.0, std=0.5, runs=200, cosine=0.99, top1=0.98, mib=1.0), []),
    ("slower beyond threshold and noise", dict(p50=11.5, std=0.5, runs=200, cosine=0.99, top1=0.98, mib=1.0),
     ["latency p50"]),
    ("slower but within the noise of a jittery run", dict(p50=11.5, std=8.0, runs=20, cosine=0.99, top1=0.98,
                                                          mib=1.0), []),
    ("accuracy drop", dict(p50=10.0, std=0.5, runs=200, cosine=0.985, top1=0.96, mib=1.0),
     ["logits cosine_min", "logits top1_agreement"]),
    ("bigger", dict(p50=10.0, std=0.5, runs=200, cosine=0.99, top1=0.98, mib=1.2), ["model size MiB"]),
    ("other host: latency not compared", dict(p50=30.0, std=0.5, runs=200, cosine=0.99, top1=0.98, mib=1.0,
                                              host="other"), []),
])
def test_compare_thresholds_with_noise(real_report, tmp_path, case, new, regressions):
    old_path, new_path = tmp_path / "old.json", tmp_path / "new.json"
    old_path.write_text(json.dumps(_report(real_report, 10.0, 0.5, 200, 0.99, 0.98, 1.0)))
    new_path.write_text(json.dumps(_report(real_report, **new)))
    result = run_cli("compare", new_path, "--baseline", old_path, "--json")
    data = json.loads(result.stdout)
    assert [c["check"] for c in data["checks"] if c["status"] == "regression"] == regressions
    assert len(data["regressions"]) == len(regressions)
    assert result.returncode == (4 if regressions else 0)
    latency = data["checks"][0]
    if case.startswith("other host"):
        assert latency["status"] == "skipped" and "different hosts" in latency["note"]
    elif case == "slower but within the noise of a jittery run":
        se = 1.2533 * np.hypot(8.0 / np.sqrt(20) / 11.5, 0.5 / np.sqrt(200) / 10.0)
        assert latency["noise"] == pytest.approx(2 * se, rel=1e-6) and latency["allowed"] > latency["change"]


@pytest.mark.parametrize("old_p50, new_p50, regression", [(0.010, 0.020, False), (0.010, 0.040, True)])
def test_a_microsecond_slowdown_is_noise_not_a_regression(real_report, tmp_path, old_p50, new_p50, regression):
    """+100 % of 10 µs is 10 µs: below kiln compare's 20 µs floor, scheduling noise; +300 % (30 µs) is a regression."""
    old_path, new_path = tmp_path / "old.json", tmp_path / "new.json"
    old_path.write_text(json.dumps(_report(real_report, old_p50, 0.0001, 200, 0.99, 0.98, 1.0)))
    new_path.write_text(json.dumps(_report(real_report, new_p50, 0.0001, 200, 0.99, 0.98, 1.0)))
    result = run_cli("compare", new_path, "--baseline", old_path, "--json")
    latency = json.loads(result.stdout)["checks"][0]
    assert latency["change"] > latency["allowed"]  # beyond the share and the noise either way
    assert (latency["status"] == "regression") == regression and result.returncode == (4 if regression else 0)
    assert regression or "scheduling noise" in latency["note"]
