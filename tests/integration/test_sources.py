"""Every kind of source kiln reads, through the real pipeline, judged on numbers.

ONNX (with external data), an nn.Module through the Python API, `package.module:callable`, a torch.export
`.pt2` program, the dynamo -> TorchScript fallback, Hugging Face folders (text, token and image
classification), `kiln bench` on an artifact, and byte-for-byte reproducibility of the model file.

Each export asserts on what the artifact says and does: the source kind and sha256 in the manifest, the
exporter that ran, the IO signature (names, dtypes, named dynamic dims), near-exact fp32 accuracy against
the source model, the export check at a second shape where axes are dynamic, and, independently of kiln's
own validation, the artifact's model.onnx run here with ONNX Runtime against the source model.
Models are tiny (built offline from code or config objects) so the file runs in about a minute.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conftest import REPO, run_cli, tiny_mlp_onnx
from tests.integration.source_checks import (EXPORT_FAILED, OK, sha256, read_artifact, export, signature, files, assert_files_hashed, assert_near_exact,
    assert_checked_at_other_shape, ort_run, torch_run, ext_data_onnx)

def test_onnx_with_external_data_exports_a_self_contained_model_equal_to_the_original(tmp_path):
    source = ext_data_onnx(tmp_path / "src")
    assert sorted(p.name for p in source.parent.iterdir()) == ["model.onnx", "weights.bin"]
    assert not onnx.load(str(source), load_external_data=False).graph.initializer[0].raw_data  # really external
    out = tmp_path / "out"
    manifest, report = export(source, out)

    assert manifest["source"]["kind"] == "onnx"
    assert manifest["source"]["sha256"] == sha256(source)
    assert manifest["source"]["details"]["external_data_files"] == ["weights.bin"]
    assert manifest["export"]["exporter"] == "copy"
    assert manifest["precision"] == "fp32"
    assert signature(manifest) == {"x": ("float32", ["batch", 8]), "logits": ("float32", ["batch", 4])}
    assert_near_exact(report, out, ("logits",))
    assert_files_hashed(manifest, out)
    assert "weights.bin" not in files(manifest)  # the data travels inside the artifact, not by its old name

    x = np.random.default_rng(7).standard_normal((3, 8)).astype(np.float32)
    original = ort_run(source, {"x": x})["logits"]
    shutil.rmtree(source.parent)  # the artifact must not depend on the source folder
    exported = ort_run(out / manifest["runtime"]["model"], {"x": x})["logits"]
    assert exported.shape == (3, 4)
    np.testing.assert_allclose(exported, original, rtol=1e-6, atol=1e-6)


def test_onnx_source_with_input_spec_is_checked_at_a_second_batch_size(tmp_path):
    out = tmp_path / "out"
    manifest, report = export(tiny_mlp_onnx(tmp_path / "tiny.onnx"), out, "--input", "x=batch=3,8")
    assert signature(manifest)["x"] == ("float32", ["batch", 8])
    assert_checked_at_other_shape(report, {"x": (0,)})
    assert_near_exact(report, out, ("logits",))


def test_onnx_source_with_dynamic_batch_is_checked_at_a_second_shape_without_input_spec(tmp_path):
    out = tmp_path / "out"
    manifest, report = export(tiny_mlp_onnx(tmp_path / "tiny.onnx"), out)
    assert signature(manifest)["x"] == ("float32", ["batch", 8])
    assert_checked_at_other_shape(report, {"x": (0,)})


# --- 2. nn.Module through the Python API ------------------------------------------------------------------


def test_python_api_exports_a_module_with_inputs_named_after_forward_and_a_dynamic_batch(tmp_path):
    import torch

    import kiln
    from kiln.artifact.manifest import dumps
    from tests.tiny_models import TinyConvNet

    out = tmp_path / "out"
    result = kiln.export(TinyConvNet(), example_inputs=(torch.randn(2, 3, 16, 16),), out=out, measure=False)
    assert result.out == out and out.is_dir()
    manifest, report = read_artifact(out)
    assert json.loads(dumps(result.manifest)) == manifest  # the API returns what it wrote
    assert json.loads(dumps(result.report)) == report

    assert manifest["source"]["kind"] == "torch-module"
    assert manifest["source"]["location"] == "TinyConvNet"
    assert manifest["source"]["details"]["parameters"] == sum(p.numel() for p in TinyConvNet().parameters())
    assert manifest["export"]["exporter"] == "dynamo"
    assert manifest["export"]["attempts"][-1]["ok"] is True
    assert signature(manifest) == {"images": ("float32", ["batch", 3, 16, 16]), "output": ("float32", ["batch", 10])}
    assert report["bench"] is None and report["bench_skipped"] == "--no-bench"
    assert_near_exact(result.report, out, ("output",))
    assert_checked_at_other_shape(report, {"images": (0,)})

    images = np.random.default_rng(1).standard_normal((5, 3, 16, 16)).astype(np.float32)
    got = ort_run(out / "model.onnx", {"images": images})["output"]
    np.testing.assert_allclose(got, torch_run(TinyConvNet().eval(), images), rtol=1e-4, atol=1e-5)


# --- 3. package.module:callable with two inputs -----------------------------------------------------------


def test_callable_with_two_inputs_keeps_both_named_dynamic_dims(tmp_path):
    from tests.tiny_models import two_inputs

    out = tmp_path / "out"
    manifest, report = export("tests.tiny_models:two_inputs", out, "--input", "tokens=batch=2,seq=5:int64",
                              "--input", "scale=batch=2,1", cwd=REPO)
    assert manifest["source"]["kind"] == "torch-callable"
    assert manifest["source"]["location"] == "tests.tiny_models:two_inputs"
    assert manifest["source"]["sha256"] is None
    assert manifest["export"]["exporter"] == "dynamo"
    assert signature(manifest) == {"tokens": ("int64", ["batch", "seq"]), "scale": ("float32", ["batch", 1]),
                                   "output": ("float32", ["batch", 4])}
    assert_near_exact(report, out, ("output",))
    assert_checked_at_other_shape(report, {"tokens": (0, 1), "scale": (0,)})
    shapes = {c["inputs"]: c["shapes"] for c in report["export"]["check"]["checks"]}
    assert shapes["export shape"] == {"tokens": [2, 5], "scale": [2, 1]}

    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 50, size=(4, 7)).astype(np.int64)  # neither size was seen at export
    scale = rng.standard_normal((4, 1)).astype(np.float32)
    got = ort_run(out / "model.onnx", {"tokens": tokens, "scale": scale})["output"]
    np.testing.assert_allclose(got, torch_run(two_inputs(), tokens, scale), rtol=1e-5, atol=1e-6)


def test_a_callable_source_is_fingerprinted_so_its_export_is_cached(tmp_path):
    """A `package.module:callable` has no file holding the model: kiln loads it and fingerprints the module. The
    same model again reuses the export stage; another setting in the user's module is a new export."""
    (tmp_path / "my_model.py").write_text(textwrap.dedent("""
        import torch
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                torch.manual_seed(0)
                self.fc = torch.nn.Linear(4, 3)
                self.scale = SCALE
            def forward(self, x):
                return self.fc(x) * self.scale
        def make():
            return Net()
        """).replace("SCALE", "2.0"))
    args = ("--input", "x=batch=2,4")
    first = export("my_model:make", tmp_path / "a", *args, cwd=tmp_path)[1]
    again = export("my_model:make", tmp_path / "b", *args, cwd=tmp_path)[1]
    assert first["cache"]["stages"]["export"] == "miss" and again["cache"]["stages"]["export"] == "hit"
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()
    source = (tmp_path / "my_model.py").read_text()
    (tmp_path / "my_model.py").write_text(source.replace("self.scale = 2.0", "self.scale = 3.0"))
    changed = export("my_model:make", tmp_path / "c", *args, cwd=tmp_path)[1]
    assert changed["cache"]["stages"]["export"] == "miss"
    assert changed["accuracy"]["outputs"]["output"]["max_abs_error"] < 1e-5  # checked against the new model


# --- 4. torch.export .pt2 program -------------------------------------------------------------------------


def test_pt2_program_gives_its_inputs_and_dynamic_dims_and_is_hashed(tmp_path):
    import torch

    from tests.tiny_models import TinyConvNet

    program = torch.export.export(TinyConvNet().eval(), (torch.randn(2, 3, 16, 16),),
                                  dynamic_shapes={"images": {0: torch.export.Dim("batch")}})
    source = tmp_path / "conv.pt2"
    torch.export.save(program, str(source))
    out = tmp_path / "out"
    result = run_cli("export", source, "--out", out, "--no-bench", "--quiet", "--json", timeout=300)  # no --input
    assert result.returncode == OK, result.stderr[-3000:]
    manifest, report = read_artifact(out)
    assert json.loads(result.stdout) == report

    assert manifest["source"]["kind"] == "torch-export"
    assert manifest["source"]["sha256"] == sha256(source)
    assert manifest["export"]["exporter"] == "dynamo"
    sig = signature(manifest)
    assert set(sig) == {"images", "output"}
    dtype, shape = sig["images"]
    assert dtype == "float32"
    # torch.export.save does not keep Dim names: the program's own symbol names the dynamic batch
    assert isinstance(shape[0], str) and shape[0] and shape[1:] == [3, 16, 16], shape
    assert sig["output"] == ("float32", [shape[0], 10])
    assert_near_exact(report, out, ("output",))
    assert_checked_at_other_shape(report, {"images": (0,)})

    images = np.random.default_rng(3).standard_normal((4, 3, 16, 16)).astype(np.float32)
    got = ort_run(out / "model.onnx", {"images": images})["output"]
    np.testing.assert_allclose(got, torch_run(program.module(), images), rtol=1e-4, atol=1e-5)


# --- 5. dynamo -> TorchScript fallback --------------------------------------------------------------------

# torch.cdist lowers to aten._cdist_forward, which the dynamo exporter cannot translate to ONNX (torch 2.13),
# while the TorchScript exporter has a symbolic for it: a natural model that needs the fallback.
FALLBACK_MODULE = textwrap.dedent('''
    import torch


    class Prototypes(torch.nn.Module):
        """x[batch, 8] -> negative distance to 4 learned prototypes, [batch, 4]."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = torch.nn.Linear(8, 6)
            self.prototypes = torch.nn.Parameter(torch.randn(4, 6))

        def forward(self, x):
            return -torch.cdist(self.fc(x), self.prototypes)


    def prototypes():
        return Prototypes().eval()


    class Branchy(torch.nn.Module):
        """Python control flow on a tensor value: torch.export refuses it, a TorchScript trace bakes in one branch."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            if x.sum() > 0:
                return self.fc(x)
            return self.fc(-x)


    def branchy():
        return Branchy().eval()
''')


@pytest.fixture(scope="module")
def fallback_module(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fallback")
    (folder / "proto_model.py").write_text(FALLBACK_MODULE, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def fallback_export(fallback_module) -> tuple[Path, dict, dict]:
    """The fallback module exported with the default `--exporter auto`: (artifact, manifest, report)."""
    out = fallback_module / "auto"
    manifest, report = export("proto_model:prototypes", out, "--input", "x=batch=2,8", cwd=fallback_module)
    return out, manifest, report


def _load_fallback(folder: Path):
    spec = importlib.util.spec_from_file_location("proto_model_for_test", folder / "proto_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.prototypes()


def test_auto_exporter_falls_back_to_torchscript_and_records_why(fallback_module, fallback_export):
    out, manifest, report = fallback_export
    record = manifest["export"]
    assert manifest["config"]["exporter"] == "auto"
    assert record["exporter"] == "torchscript"
    assert [a["exporter"] for a in record["attempts"]] == ["dynamo", "torchscript"]
    first, second = record["attempts"]
    assert first["ok"] is False and isinstance(first["error"], str) and first["error"].strip()
    assert second["ok"] is True and "error" not in second
    # the report has the timings, the manifest the same attempts without them (it must not vary run to run)
    assert [{k: v for k, v in a.items() if k != "seconds"} for a in report["export"]["attempts"]] == record["attempts"]
    sig = signature(manifest)
    assert sig["x"] == ("float32", ["batch", 8])
    dtype, shape = sig["output"]
    assert dtype == "float32" and isinstance(shape[0], str) and shape[1] == 4, shape  # dynamic, named (see below)
    assert_near_exact(report, out, ("output",))
    assert_checked_at_other_shape(report, {"x": (0,)})

    x = np.random.default_rng(4).standard_normal((6, 8)).astype(np.float32)
    got = ort_run(out / "model.onnx", {"x": x})["output"]
    np.testing.assert_allclose(got, torch_run(_load_fallback(fallback_module), x), rtol=1e-4, atol=1e-5)


def test_torchscript_fallback_names_the_output_batch_like_the_input(fallback_export):
    _, manifest, _ = fallback_export
    assert signature(manifest)["output"] == ("float32", ["batch", 4])


def test_dynamo_exporter_alone_on_that_module_exits_5_with_one_line(fallback_module):
    out = fallback_module / "out"
    result = run_cli("export", "proto_model:prototypes", "--input", "x=batch=2,8", "--out", out, "--no-bench",
                     "--quiet", "--exporter", "dynamo", cwd=fallback_module, timeout=300)
    assert result.returncode == EXPORT_FAILED, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("kiln: error: export: ")
    assert "dynamo" in lines[0] and "torchscript:" not in lines[0]  # only the exporter asked for was tried
    assert not out.exists()


@pytest.fixture(scope="module")
def branchy_export(fallback_module):
    out = fallback_module / "branchy"
    result = run_cli("export", "proto_model:branchy", "--input", "x=batch=2,8", "--out", out, "--no-bench",
                     "--quiet", cwd=fallback_module, timeout=300)
    return out, result


def test_a_traced_graph_that_baked_in_a_data_dependent_branch_is_refused(branchy_export):
    """dynamo fails on `if x.sum() > 0`, TorchScript traces one branch; the export check must catch it
    (seed 0: the check's inputs take both branches), not ship a model that is wrong on half the inputs."""
    out, result = branchy_export
    assert result.returncode == EXPORT_FAILED, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("kiln: error: export: the exported graph does not match the source model"), line
    assert not out.exists()


def test_a_failed_dynamo_capture_leaves_stderr_with_only_the_error_line(branchy_export):
    _, result = branchy_export
    assert result.returncode == EXPORT_FAILED
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr[:500]
