"""Hostile paths: where kiln reads the model, writes the artifact and the bundle, and finds the signing key.

A refused export leaves the filesystem as it was: the --out path, the source, the key and the bundle path hold
what they held before, and no hidden `.kiln-tmp-` staging entry is left in their folders. A full disk (simulated
with RLIMIT_FSIZE) must fail the run without leaving anything half-written.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import REPO, tiny_mlp_onnx
from tests.hostile.helpers import (OK, USAGE, assert_refused, error_line, export, kiln, snapshot,
                                   staging_leftovers)

IS_ROOT = os.geteuid() == 0


# -- --out ------------------------------------------------------------------------------------------------------

def test_out_is_the_source_model_file(tiny):
    """--out naming the source .onnx itself: exit 2 (a file), and the model is not touched."""
    before = snapshot(tiny)
    assert_refused(export(tiny, tiny, "--synthetic-data"), USAGE, f"output path {tiny} is a file", out=tiny,
                   before=before)


def test_out_is_the_folder_holding_the_source_model(tiny):
    """--out naming the model's own (non-empty, non-artifact) folder: exit 2, nothing in it changes."""
    folder = tiny.parent
    before = snapshot(folder)
    result = export(tiny, folder, "--synthetic-data")
    assert_refused(result, USAGE, f"output folder {folder} is not empty and holds no kiln artifact", out=folder,
                   before=before)


@pytest.mark.skipif(IS_ROOT, reason="root ignores directory permissions; the unwritable path under /proc stands "
                                    "in for this case when running as root")
def test_out_inside_a_read_only_folder(tiny, tmp_path):
    """--out inside a chmod 0555 folder: exit 2, cannot write, nothing created there."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        out = locked / "out"
        assert_refused(export(tiny, out, "--synthetic-data"), USAGE, f"cannot write into {locked}", out=out)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_out_under_proc_that_nobody_can_write(tiny):
    """--out /proc/kiln-hostile-out (not writable even by root): exit 2 in one line, nothing created."""
    out = Path("/proc/kiln-hostile-out")
    assert_refused(export(tiny, out, "--synthetic-data"), USAGE, "/proc", out=out)


def test_out_under_a_regular_file(tiny, tmp_path):
    """--out notes.txt/out where notes.txt is a file: exit 2 in one line, notes.txt untouched."""
    notes = tmp_path / "notes.txt"
    notes.write_text("keep\n", encoding="utf-8")
    assert_refused(export(tiny, notes / "out", "--synthetic-data"), USAGE, str(notes), out=notes, before=b"keep\n")


# -- the source ---------------------------------------------------------------------------------------------------

def test_source_is_a_dangling_symlink(tmp_path, out):
    """model.onnx is a symlink to a deleted file: exit 2, the model path does not exist."""
    link = tmp_path / "model.onnx"
    link.symlink_to(tmp_path / "deleted.onnx")
    assert_refused(export(link, out, "--synthetic-data"), USAGE, f"model path {link} does not exist", out=out)


@pytest.mark.parametrize("contents", [("README.md",), ("a.onnx", "b.onnx")], ids=["readme_only", "two_onnx_files"])
def test_source_folder_that_is_not_a_model(tmp_path, out, contents):
    """A source folder with no config.json and not exactly one .onnx file: exit 2, not a model."""
    folder = tmp_path / "models"
    folder.mkdir()
    for name in contents:
        if name.endswith(".onnx"):
            tiny_mlp_onnx(folder / name)
        else:
            (folder / name).write_text("hello\n", encoding="utf-8")
    assert_refused(export(folder, out, "--synthetic-data"), USAGE, f"folder {folder} is not a model", out=out)


# -- --bundle -----------------------------------------------------------------------------------------------------

def test_bundle_path_is_an_existing_folder(tiny, tmp_path, out):
    """--bundle pointing at an existing folder named like a bundle: exit 2 before any work, folder kept."""
    folder = tmp_path / "release.tar.gz"
    (folder / "notes").mkdir(parents=True)
    before = snapshot(folder)
    result = export(tiny, out, "--synthetic-data", "--bundle", folder)
    assert_refused(result, USAGE, f"bundle path {folder} is a folder", out=out)
    assert snapshot(folder) == before


@pytest.mark.parametrize("where", ["inside", "same"])
def test_bundle_path_inside_the_out_folder(tiny, out, where):
    """--bundle inside --out (OUT/b.tar.gz, or OUT itself): exit 2 before any work, nothing written."""
    bundle = out / "b.tar.gz" if where == "inside" else out
    result = export(tiny, out, "--synthetic-data", "--bundle", bundle)
    assert_refused(result, USAGE, f"bundle path {bundle} is inside the artifact folder", out=out)


def test_bundle_path_is_the_source_model(tiny, out):
    """--bundle naming the source .onnx: must be refused (exit 2), never overwrite the model it exports."""
    before = snapshot(tiny)
    result = export(tiny, out, "--synthetic-data", "--bundle", tiny)
    assert snapshot(tiny) == before, "the source model was overwritten by the bundle"
    assert_refused(result, USAGE, str(tiny), out=out)


def test_bundle_path_is_the_signing_key(tiny, tmp_path, out):
    """--bundle naming the --sign-key file: must be refused (exit 2), never overwrite the private key."""
    key = tmp_path / "release.key"
    assert kiln("keygen", key).returncode == OK
    before = snapshot(key)
    result = export(tiny, out, "--synthetic-data", "--sign-key", key, "--bundle", key)
    assert snapshot(key) == before, "the private key was overwritten by the bundle"
    assert_refused(result, USAGE, str(key), out=out)


def test_bundle_path_under_a_regular_file(tiny, tmp_path, out):
    """--bundle notes.txt/b.tar.gz where notes.txt is a file: exit 2 in one line before any work."""
    notes = tmp_path / "notes.txt"
    notes.write_text("keep\n", encoding="utf-8")
    result = export(tiny, out, "--synthetic-data", "--bundle", notes / "b.tar.gz")
    assert_refused(result, USAGE, str(notes), out=out)
    assert notes.read_text(encoding="utf-8") == "keep\n"


# -- --sign-key ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["text", "public_key", "folder"])
def test_sign_key_that_is_not_a_private_pem_key(tiny, tmp_path, out, kind):
    """--sign-key that is plain text, a public key, or a folder: exit 2 before any work, no bundle written."""
    if kind == "text":
        key = tmp_path / "key.pem"
        key.write_text("-----BEGIN NOTHING-----\nnot a key\n", encoding="utf-8")
        needle = f"{key} is not an unencrypted PEM private key"
    elif kind == "public_key":
        assert kiln("keygen", tmp_path / "pair").returncode == OK
        key = tmp_path / "pair.pub"
        needle = f"{key} is not an unencrypted PEM private key"
    else:
        key = tmp_path / "keys"
        key.mkdir()
        needle = f"cannot read the private key {key}"
    bundle = tmp_path / "b.tar.gz"
    assert_refused(export(tiny, out, "--synthetic-data", "--sign-key", key, "--bundle", bundle), USAGE, needle,
                   out=out)
    assert not bundle.exists()


def test_sign_key_file_missing(tiny, tmp_path, out):
    """--sign-key naming a file that does not exist: exit 2 naming it, before any work."""
    key = tmp_path / "missing.pem"
    assert_refused(export(tiny, out, "--synthetic-data", "--sign-key", key), USAGE,
                   f"cannot read the private key {key}", "No such file", out=out)


# -- a full disk, simulated with a per-file size limit ------------------------------------------------------------

LIMIT = 256 * 1024  # bytes any one file may grow to: Python starts, a 200+ KB artifact file cannot be written


def _limited():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit raise OSError(EFBIG) instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def _wide_model(path: Path, width: int) -> Path:
    """x[batch, width] @ w[width, 1]: the model file and its sample input each take about 4 * width bytes."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((width, 1)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "wide",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _export_on_a_full_disk(tmp_path: Path, scenario: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """`artifact`: the 800 KB model cannot be copied into the staging folder. `bundle`: every artifact file
    fits (200 KB each), the 400 KB bundle does not. Returns (result, out, bundle path)."""
    out, bundle = tmp_path / "out", tmp_path / "out.tar.gz"
    if scenario == "artifact":
        model, extra = tiny_mlp_onnx(tmp_path / "big.onnx", hidden=16384), []
        assert model.stat().st_size > LIMIT
    else:
        model, extra = _wide_model(tmp_path / "wide.onnx", 50_000), ["--bundle", "--no-cache"]
        assert model.stat().st_size < LIMIT
    env = dict(os.environ, KILN_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-m", "kiln.cli", "export", str(model), "--out", str(out), "--no-bench",
                             "--quiet", "--synthetic-data", *extra], capture_output=True, text=True, cwd=REPO, env=env,
                            preexec_fn=_limited, timeout=120)
    return result, out, bundle


@pytest.mark.parametrize("scenario", ["artifact", "bundle"])
def test_full_disk_leaves_nothing_half_written(tmp_path, scenario):
    """Writes fail with EFBIG (artifact file, or the bundle): the run fails and nothing partial is left behind."""
    result, out, bundle = _export_on_a_full_disk(tmp_path, scenario)
    assert result.returncode != OK, result.stderr
    assert staging_leftovers(tmp_path) == [], staging_leftovers(tmp_path)
    assert not bundle.exists(), "a bundle was published by a run that failed writing it"
    if scenario == "artifact":
        assert not out.exists(), f"{out} exists after a failed write"
    elif out.exists():  # published before the bundle failed: it must at least be complete and intact
        check = kiln("verify", out, "--quiet")
        assert check.returncode == OK, check.stderr


@pytest.mark.parametrize("scenario", ["artifact", "bundle"])
def test_full_disk_is_one_error_line(tmp_path, scenario):
    """Writes fail with EFBIG: one `kiln: error:` line that says the disk/file is full, no traceback."""
    result, _, _ = _export_on_a_full_disk(tmp_path, scenario)
    assert result.returncode not in (OK, 1), f"exit {result.returncode} (1 means a bug):\n{result.stderr[-3000:]}"
    error_line(result, result.returncode, "too large")
