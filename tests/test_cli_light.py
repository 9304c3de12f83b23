"""The CLI stays light: help and `targets` import no heavy framework, and every module imports on its own."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO, run_cli

HEAVY = ("torch", "transformers", "onnxruntime.quantization", "openvino", "nncf", "tensorrt", "optimum")


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=REPO,
                          timeout=120)


def heavy_modules_after(statements: str) -> list[str]:
    """Run `statements` in a fresh interpreter and list which heavy modules it left in sys.modules."""
    result = python(f"""
        import json, sys
        {statements}
        print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
    """)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_top_level_help_exits_0_and_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: kiln ")
    for command in ("export", "bench", "targets"):
        assert command in result.stdout
    assert "exit codes: 0 ok, 1 bug, 2 bad input" in result.stdout
    assert result.stderr == ""


def test_export_help_exits_0_and_documents_the_options():
    result = run_cli("export", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: kiln export ")
    for option in ("--target", "--precision", "--out", "--input", "--calibration", "--synthetic-data",
                   "--min-cosine", "--max-abs-error", "--trust-pickle", "--trust-remote-code", "--no-bench"):
        assert option in result.stdout, option
    assert result.stderr == ""


def test_building_the_parser_imports_no_heavy_framework():
    assert heavy_modules_after("import kiln.cli; kiln.cli.build_parser()") == []


@pytest.mark.parametrize("argv", [["--help"], ["export", "--help"], ["targets"], ["targets", "--json"]])
def test_help_and_targets_import_no_heavy_framework(argv):
    loaded = heavy_modules_after(f"""
        import contextlib, io, kiln.cli
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                code = kiln.cli.main({argv!r})
            except SystemExit as exit:
                code = exit.code
        assert code == 0, code
    """)
    assert loaded == []


def test_targets_json_has_schema_and_marks_what_runs_here():
    if platform.machine() != "x86_64":
        pytest.skip("the expectations below are for an x86-64 host")
    result = run_cli("targets", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["schema_version"] == "kiln.targets/1"
    assert data["host"]["arch"] == "x86_64"
    targets = {t["name"]: t for t in data["targets"]}
    assert targets["onnxruntime-cpu"]["runs_here"] is True
    assert targets["onnxruntime-cpu"]["why_not"] is None
    assert targets["onnxruntime-cpu"]["available"] is True
    assert "onnxruntime" in targets["onnxruntime-cpu"]["aliases"]
    assert targets["arm64-cpu"]["runs_here"] is False
    assert targets["arm64-cpu"]["why_not"] == "needs aarch64, host is x86_64"
    for row in data["targets"]:
        assert set(row) == {"name", "aliases", "backend", "device", "precisions", "available", "runs_here",
                            "why_not", "description"}


def test_every_module_imports_and_only_the_torch_exporters_pull_in_torch():
    result = python("""
        import importlib, json, pkgutil, sys
        import kiln

        TORCH_MODULES = {"kiln.exporters.torch_module", "kiln.exporters.huggingface"}
        names = sorted(m.name for m in pkgutil.walk_packages(kiln.__path__, "kiln."))
        failed = {}
        for name in names:
            if name in TORCH_MODULES:
                continue
            try:
                importlib.import_module(name)
            except Exception as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"
        torch_before = "torch" in sys.modules
        for name in sorted(TORCH_MODULES):
            importlib.import_module(name)
        print(json.dumps({"names": names, "failed": failed, "torch_before": torch_before}))
    """)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}
    assert report["torch_before"] is False, "a module outside the torch exporters imports torch at import time"
    assert {"kiln.cli", "kiln.pipeline", "kiln.exporters.onnx_file", "kiln.exporters.torch_module",
            "kiln.backends.onnxruntime", "kiln.calibration.images"} <= set(report["names"])
    assert len(report["names"]) >= 30


def test_a_reader_that_leaves_early_is_no_error():
    """`kiln targets | head -1`: the pipe is closed before kiln writes (here before it has even started), so the
    write fails with EPIPE. That is the reader's choice: exit 0 and no traceback."""
    process = subprocess.Popen([sys.executable, "-m", "kiln.cli", "targets"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=REPO)
    process.stdout.close()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0 and b"Traceback" not in err and err == b"", err


def test_preparing_an_onnx_model_for_int8_imports_no_torch(tmp_path):
    """ONNX Runtime's quantizer pre-processing (symbolic shape inference) lives in onnxruntime.tools, whose __init__
    imports torch when it is installed: kiln skips that __init__ (2.8 s of an ONNX model's int8 export)."""
    loaded = heavy_modules_after(f"""
        from pathlib import Path
        from tests.conftest import tiny_mlp_onnx
        from kiln.passes.qdq_common import prepare_for_quantization
        model = tiny_mlp_onnx(Path({str(tmp_path)!r}) / "tiny.onnx")
        prepare_for_quantization(model, model.with_name("prepared.onnx"))
        assert Path({str(tmp_path)!r}, "prepared.onnx").is_file()
    """)
    assert "torch" not in loaded and "onnxruntime.quantization" in loaded
