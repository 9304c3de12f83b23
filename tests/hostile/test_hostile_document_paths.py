"""A NUL byte (and other text no filesystem call takes) in a path read from a document or a bundle (issue 19).

Each reader of a path (manifest.json files, runtime.json's model, build.json's onnx, a bundle member's name)
checks it as text first: one line and the documented exit code (2 for a malformed document, 6 when `kiln verify`
finds the artifact does not match), never a ValueError traceback. Documents are edited *and re-hashed into the
manifest*, so the reader itself is reached, not the hash check in front of it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kiln.artifact.paths import path_problem
from kiln.backends.tensorrt import build_engine
from kiln.llm import device_generate
from kiln.artifact import device_runner
from tests.hostile.helpers import USAGE, VERIFY_FAILED, error_line, file_entry, kiln, rebundle

NUL_PATH = "model.onnx\x00"


def _edit_json(folder: Path, name: str, key: str, value) -> None:
    """Set `key` in the JSON file `name`, then record the file's new sha256 and size in the manifest."""
    path = folder / name
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc[key] = value
    path.write_text(json.dumps(doc), encoding="utf-8")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    for entry in manifest["files"]:
        if entry["path"] == name:
            entry["sha256"], entry["bytes"] = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def _one_stderr_line(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """The device scripts' contract (they print `run.py: ...`, not `kiln: error: ...`)."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.returncode == code, (result.returncode, result.stderr)
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_manifest_path_with_a_nul_byte(built, tmp_path):
    """manifest.json files[0].path = 'model.onnx\\0': `kiln verify` exit 6 (the manifest breaks its schema),
    `kiln bench` exit 2 (a malformed document): one line each."""
    folder = tmp_path / "artifact"
    shutil.copytree(built.artifact, folder)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"][0]["path"] = NUL_PATH
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    error_line(kiln("verify", folder, "--quiet"), VERIFY_FAILED, "breaks the manifest schema", "files[0].path")
    error_line(kiln("bench", folder, "--quiet", "--runs", "1", "--warmup", "0", "--min-seconds", "0"), USAGE,
               "breaks the manifest schema")


def test_runtime_json_model_with_a_nul_byte(built, tmp_path):
    """runtime.json model = 'model.onnx\\0': the artifact's run.py exits 2 with one line naming runtime.json."""
    folder = tmp_path / "artifact"
    shutil.copytree(built.artifact, folder)
    _edit_json(folder, "runtime.json", "model", NUL_PATH)
    result = subprocess.run([sys.executable, str(folder / "run.py")], capture_output=True, text=True, timeout=120)
    _one_stderr_line(result, 2, "run.py: runtime.json", "not a relative path")


@pytest.fixture(scope="module")
def tensorrt_artifact(tmp_path_factory) -> Path:
    """A real TensorRT-target artifact of the tiny model (the graph and build kit; no engine on this machine)."""
    from tests.conftest import tiny_mlp_onnx

    root = tmp_path_factory.mktemp("trt")
    result = kiln("export", tiny_mlp_onnx(root / "tiny.onnx"), "--out", root / "A", "--target", "tensorrt",
                  "--no-bench", "--synthetic-data", "--no-analysis", "--quiet", timeout=300)
    assert result.returncode == 0, result.stderr
    return root / "A"


def test_build_json_onnx_with_a_nul_byte(tensorrt_artifact, tmp_path):
    """build.json onnx = 'model.onnx\\0': `kiln build-engine` and the kit's own build_engine.py exit 2 with one line,
    before any builder is imported (none is installed here)."""
    folder = tmp_path / "artifact"
    shutil.copytree(tensorrt_artifact, folder)
    _edit_json(folder, "tensorrt/build.json", "onnx", NUL_PATH)
    error_line(kiln("build-engine", folder, "--quiet"), USAGE, "build.json onnx", "not a relative path inside the kit")
    result = subprocess.run([sys.executable, str(folder / "tensorrt" / "build_engine.py")], capture_output=True,
                            text=True, timeout=120)
    _one_stderr_line(result, 2, "build_engine: build.json onnx")


def test_bundle_member_name_with_a_nul_byte(built, tmp_path):
    """A real bundle plus a member whose PAX 'path' record holds a NUL byte (tarfile keeps it; a plain ustar name would
    be cut at the NUL): `kiln verify` and `kiln verify --extract` exit 2 naming it; nothing is unpacked."""
    info, data = file_entry("evil.bin", b"x")
    info.pax_headers = {"path": "evil.bin\x00.sh"}
    bundle = rebundle(tmp_path / "nul.tar.gz", built.members, [(info, data)])
    error_line(kiln("verify", bundle, "--quiet"), USAGE, "bundle entry 'evil.bin\\x00.sh'", "holds a NUL byte")
    dest = tmp_path / "dest"
    error_line(kiln("verify", bundle, "--quiet", "--extract", dest), USAGE, "holds a NUL byte")
    assert not dest.exists()


CASES = ["model.onnx", "openvino/model.xml", "tensorrt/timing.cache", NUL_PATH, "a\nb", "./model.onnx", "a//b", "a/",
         "/etc/passwd", "C:model.onnx", "a\\b", "..", "sub/../x", "x" * 256, "x/" * 2100, "\ud800.onnx", "", "é.onnx",
         "a\x7fb", None, 7]


@pytest.mark.parametrize("script", [build_engine, device_runner, device_generate], ids=lambda m: m.__name__)
def test_standalone_scripts_check_paths_as_kiln_does(script):
    """build_engine.py, run.py and generate.py run without kiln, so each carries its own copy of the path check:
    each copy accepts exactly what kiln.artifact.paths accepts."""
    for case in CASES:
        assert script._plain_relative(case) == (path_problem(case) is None), repr(case)
