"""Every bad input ends in one clear line on stderr, the documented exit code, and nothing half-written.

Each test runs the real `kiln` command (python -m kiln.cli) in a subprocess, as a build script would.
`--quiet` silences the per-stage progress display, so stderr must hold exactly the one error line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_cli, tiny_mlp_onnx

USAGE, UNSUPPORTED, GATE, EXPORT_FAILED = 2, 3, 4, 5


def export(source, out: Path, *extra: str):
    return run_cli("export", source, "--out", out, "--no-bench", "--quiet", *extra)


def leftovers(out: Path) -> list[str]:
    """Hidden staging / swap siblings of `out` (`.NAME.kiln-tmp-*`, `.NAME.kiln-old-*`)."""
    return sorted(p.name for p in out.parent.glob(f".{out.name}.kiln-*"))


STAGES = ("resolve", "load", "export", "compile", "validate", "bench", "package")


def without_stage(line: str) -> str:
    """Errors name the stage that failed (`kiln: error: load: ...`); most tests assert on what follows."""
    head = "kiln: error: "
    rest = line[len(head):]
    stage, sep, message = rest.partition(": ")
    return head + message if sep and stage in STAGES else line


def assert_refused(result, code: int, starts: str, out: Path, *, contains: tuple[str, ...] = (),
                   out_should_exist: bool = False) -> str:
    """The contract of section 8: exit code, one line `kiln: error: ...`, no traceback, nothing half-written."""
    stderr = result.stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    line = lines[0]
    assert line.startswith("kiln: error: "), line
    line = without_stage(line)
    assert line.startswith(starts), f"expected the line to start with {starts!r}, got:\n{line}"
    for text in contains:
        assert text in line, f"{text!r} not in:\n{line}"
    assert result.returncode == code, (result.returncode, line)
    if not out_should_exist:
        assert not out.exists(), f"{out} exists after a refused export"
    assert leftovers(out) == [], leftovers(out)
    return line


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "out"


# -- the model source ------------------------------------------------------------------------------

def test_missing_model_path_exits_2_naming_the_path(tmp_path, out):
    result = export(tmp_path / "nope.onnx", out)
    assert_refused(result, USAGE, f"kiln: error: model path {tmp_path / 'nope.onnx'} does not exist", out)


def test_text_file_is_not_a_model(tmp_path, out):
    notes = tmp_path / "notes.txt"
    notes.write_text("remember to export the model\n", encoding="utf-8")
    result = export(notes, out)
    assert_refused(result, USAGE, "kiln: error: notes.txt is not a model kiln can read (suffix '.txt')", out)


def test_onnx_suffix_with_random_bytes_is_not_readable_onnx(tmp_path, out):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    result = export(bad, out)
    assert_refused(result, USAGE, "kiln: error: bad.onnx is not a readable ONNX model", out)


def test_truncated_onnx_file_is_refused_as_corrupt(tmp_path, out):
    whole = tiny_mlp_onnx(tmp_path / "whole.onnx", hidden=256)  # weights inside the file, ~12 KB
    data = whole.read_bytes()
    assert len(data) > 10_000
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    result = export(cut, out)
    assert_refused(result, USAGE, "kiln: error: cut.onnx is not a readable ONNX model", out,
                   contains=("truncated",))


def _save_with_external_data(folder: Path) -> Path:
    folder.mkdir()
    model = onnx.load(str(tiny_mlp_onnx(folder / "inline.onnx")))
    (folder / "inline.onnx").unlink()
    path = folder / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="w.data", size_threshold=0)
    assert (folder / "w.data").stat().st_size > 0
    return path


def test_external_data_file_deleted_is_named_as_missing(tmp_path, out):
    path = _save_with_external_data(tmp_path / "m")
    (path.parent / "w.data").unlink()
    result = export(path, out)
    assert_refused(result, USAGE, "kiln: error: external data file 'w.data' for tensor", out,
                   contains=("is missing",))


def test_external_data_outside_the_model_folder_is_refused(tmp_path, out):
    """A location of ../outside.data must not be read even though the file exists there."""
    folder = tmp_path / "m"
    folder.mkdir()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    (tmp_path / "outside.data").write_bytes(w.tobytes())
    tensor = numpy_helper.from_array(w, "w")
    onnx.external_data_helper.set_external_data(tensor, location="../outside.data", offset=0, length=w.nbytes)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [tensor])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    result = export(path, out)
    assert_refused(result, USAGE, "kiln: error: tensor 'w' points at external data '../outside.data' outside the "
                                  "model's folder", out)


# -- options --------------------------------------------------------------------------------------

def test_unknown_target_exits_2_and_lists_known_targets(tiny_onnx, out):
    result = export(tiny_onnx, out, "--target", "quantum-tpu")
    assert_refused(result, USAGE, "kiln: error: unknown target 'quantum-tpu'", out,
                   contains=("onnxruntime-cpu",))


def test_unknown_precision_exits_2(tiny_onnx, out):
    result = export(tiny_onnx, out, "--precision", "fp7")
    assert_refused(result, USAGE, "kiln: error: unknown precision 'fp7'", out, contains=("int8-dynamic",))


def test_int8_without_calibration_or_synthetic_consent_is_refused_before_work(tiny_onnx, out):
    result = export(tiny_onnx, out, "--precision", "int8")
    assert_refused(result, USAGE, "kiln: error: int8 needs calibration data and none was given", out,
                   contains=("--calibration", "--synthetic-data"))


def test_input_naming_a_tensor_the_model_lacks(tiny_onnx, out):
    result = export(tiny_onnx, out, "--input", "y=batch=1,8")
    assert_refused(result, USAGE, "kiln: error: --input names 'y', which is not an input of tiny.onnx", out,
                   contains=("model inputs are x",))


def test_input_with_wrong_static_dim_for_a_static_batch_model(tmp_path, out):
    model = tiny_mlp_onnx(tmp_path / "static.onnx", dynamic_batch=False)
    result = export(model, out, "--input", "x=2,8")
    assert_refused(result, USAGE, "kiln: error: --input x=2,8:float32 does not match the model's static shape [1, 8]",
                   out)


def test_malformed_input_spec(tiny_onnx, out):
    result = export(tiny_onnx, out, "--input", "x=1,?")
    assert_refused(result, USAGE, "kiln: error: input spec 'x=1,?': dimension '?' is not valid", out)


def test_unknown_option_is_one_argparse_line_exit_2(tiny_onnx, out):
    result = export(tiny_onnx, out, "--bogus-flag")
    assert_refused(result, USAGE, "kiln: error: unrecognized arguments: --bogus-flag", out)


def test_min_cosine_above_one_is_an_invalid_option(tiny_onnx, out):
    result = export(tiny_onnx, out, "--min-cosine", "1.1")
    assert_refused(result, USAGE, "kiln: error: invalid option min_cosine: Input should be less than or equal to 1", out)


def test_out_pointing_at_a_regular_file_is_refused_and_the_file_kept(tiny_onnx, tmp_path):
    out = tmp_path / "report.bin"
    out.write_bytes(b"keep me")
    result = export(tiny_onnx, out)
    assert_refused(result, USAGE, f"kiln: error: output path {out} is a file", out, out_should_exist=True)
    assert out.read_bytes() == b"keep me"


def test_out_pointing_at_a_foreign_non_empty_folder_is_refused_and_kept(tiny_onnx, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"not really a jpeg")
    result = export(tiny_onnx, out)
    assert_refused(result, USAGE, f"kiln: error: output folder {out} is not empty and holds no kiln artifact",
                   out, out_should_exist=True)
    assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg"]
    assert (out / "holiday.jpg").read_bytes() == b"not really a jpeg"


# -- calibration data -----------------------------------------------------------------------------

def test_empty_calibration_folder_with_int8(tiny_onnx, tmp_path, out):
    empty = tmp_path / "calib"
    empty.mkdir()
    result = export(tiny_onnx, out, "--precision", "int8", "--calibration", empty)
    assert_refused(result, USAGE, f"kiln: error: calibration data folder {empty} is empty or holds no images or arrays",
                   out)


def test_calibration_npz_keyed_by_a_name_that_is_not_an_input(tiny_onnx, tmp_path, out):
    calib = tmp_path / "calib"
    calib.mkdir()
    np.savez(calib / "c.npz", pixels=np.zeros((4, 8), np.float32))
    result = export(tiny_onnx, out, "--precision", "int8", "--calibration", calib)
    assert_refused(result, USAGE, "kiln: error: c.npz: array 'pixels' is not a model input", out,
                   contains=("model inputs are x",))


def test_calibration_npz_with_nan_values(tiny_onnx, tmp_path, out):
    data = np.ones((4, 8), np.float32)
    data[2, 3] = np.nan
    np.savez(tmp_path / "c.npz", x=data)
    result = export(tiny_onnx, out, "--precision", "int8", "--calibration", tmp_path / "c.npz")
    assert_refused(result, USAGE, "kiln: error: c.npz sample 2: input 'x' contains NaN or Inf values", out)


def test_calibration_npz_float64_where_model_wants_float32(tiny_onnx, tmp_path, out):
    np.savez(tmp_path / "c.npz", x=np.ones((4, 8), np.float64))
    result = export(tiny_onnx, out, "--precision", "int8", "--calibration", tmp_path / "c.npz")
    assert_refused(result, USAGE, "kiln: error: c.npz: input 'x' is float64, the model expects float32", out)


# -- PyTorch sources ------------------------------------------------------------------------------

@pytest.fixture
def pickled_module(tmp_path) -> Path:
    torch = pytest.importorskip("torch")
    from tests.tiny_models import tiny_conv_net

    path = tmp_path / "m.pt"
    torch.save(tiny_conv_net(), path)
    return path


def test_pickle_without_trust_pickle_is_refused_as_a_pickle(pickled_module, out):
    result = export(pickled_module, out, "--input", "images=batch=2,3,16,16")
    assert_refused(result, USAGE, "kiln: error: m.pt is a pickle", out, contains=("--trust-pickle",))


def test_pickle_with_trust_pickle_and_input_exports(pickled_module, out):
    result = export(pickled_module, out, "--trust-pickle", "--input", "images=batch=2,3,16,16")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["source"]["kind"] == "torch-pickle"
    assert manifest["io"]["inputs"][0]["shape"] == ["batch", 3, 16, 16]
    assert leftovers(out) == []


def test_pickled_state_dict_with_trust_pickle_says_state_dict(tmp_path, out):
    torch = pytest.importorskip("torch")
    from tests.tiny_models import tiny_conv_net

    path = tmp_path / "weights.pt"
    torch.save(tiny_conv_net().state_dict(), path)
    result = export(path, out, "--trust-pickle", "--input", "images=batch=2,3,16,16")
    assert_refused(result, USAGE, "kiln: error: weights.pt holds a state dict (weights only), not a model", out)


def test_module_callable_that_does_not_exist(out):
    result = export("tests.tiny_models:nope", out, "--input", "images=batch=2,3,16,16")
    assert_refused(result, USAGE, "kiln: error: cannot import 'tests.tiny_models:nope'", out)


# -- Hugging Face folders -------------------------------------------------------------------------

def test_hf_folder_with_auto_map_needs_trust_remote_code(tmp_path, out):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["BertModel"],
        "auto_map": {"AutoModel": "modeling_evil.EvilModel"}}), encoding="utf-8")
    result = export(folder, out)
    assert_refused(result, USAGE, "kiln: error: hf asks to run its own Python code (auto_map in config.json)", out,
                   contains=("--trust-remote-code",))


def test_hf_folder_whose_config_is_not_json(tmp_path, out):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("model_type: bert\n", encoding="utf-8")
    result = export(folder, out)
    assert_refused(result, USAGE, f"kiln: error: {folder}/config.json is not readable JSON", out)


# -- the accuracy gate ----------------------------------------------------------------------------

def test_failed_accuracy_gate_exits_4_and_publishes_only_to_rejected(tiny_onnx, out):
    result = export(tiny_onnx, out, "--precision", "int8-dynamic", "--max-abs-error", "0")
    rejected = out.with_name(out.name + ".rejected")
    assert_refused(result, GATE, "kiln: error: accuracy gate failed: logits: max abs error", out,
                   contains=(str(rejected),))
    report = json.loads((rejected / "report.json").read_text(encoding="utf-8"))
    assert report["status"] == "rejected"
    assert report["accuracy"]["gate"]["passed"] is False
    assert (rejected / "manifest.json").is_file()
    assert leftovers(rejected) == []


def test_failed_gate_does_not_wipe_a_foreign_folder_named_like_the_rejected_path(tiny_onnx, out):
    rejected = out.with_name(out.name + ".rejected")
    rejected.mkdir()
    (rejected / "my_notes.txt").write_text("mine\n", encoding="utf-8")
    result = export(tiny_onnx, out, "--precision", "int8-dynamic", "--max-abs-error", "0")
    assert result.returncode in (USAGE, GATE)
    assert (rejected / "my_notes.txt").read_text(encoding="utf-8") == "mine\n"


# -- a refused run keeps what was there, and says so in every output mode ---------------------------

def test_refused_run_over_an_existing_artifact_keeps_it_byte_for_byte(tiny_onnx, tmp_path, out):
    first = export(tiny_onnx, out)
    assert first.returncode == 0, first.stderr
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = np.ones((4, 8), np.float32)
    bad[0, 0] = np.inf
    np.savez(tmp_path / "eval.npz", x=bad)
    result = export(tiny_onnx, out, "--eval", tmp_path / "eval.npz")
    assert_refused(result, USAGE, "kiln: error: eval.npz sample 0: input 'x' contains NaN or Inf values", out,
                   out_should_exist=True)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_without_quiet_the_error_is_the_last_stderr_line_after_the_failed_stage(tiny_onnx, tmp_path, out):
    np.savez(tmp_path / "eval.npz", x=np.ones((4, 8), np.float64))
    result = run_cli("export", tiny_onnx, "--out", out, "--no-bench", "--eval", tmp_path / "eval.npz")
    assert result.returncode == USAGE
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("kiln: error: load: eval.npz: input 'x' is float64, the model expects float32"), lines[-1]
    assert sum(line.startswith("kiln: error:") for line in lines) == 1
    assert any("✗ load" in line and "failed" in line for line in lines), lines
    assert not out.exists() and leftovers(out) == []


def test_json_mode_prints_a_failed_report_with_the_exit_code(tiny_onnx, out):
    result = run_cli("export", tiny_onnx, "--out", out, "--no-bench", "--quiet", "--json", "--target", "tpu9")
    assert result.returncode == USAGE
    report = json.loads(result.stdout)
    assert report["status"] == "failed"
    assert report["error"]["kind"] == "usage"
    assert report["error"]["exit_code"] == USAGE
    assert report["error"]["message"] == "unknown target 'tpu9'"
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert not out.exists()


def test_eval_npz_with_a_wrong_static_dim_is_bad_input_not_a_crash(tiny_onnx, tmp_path, out):
    np.savez(tmp_path / "eval.npz", x=np.ones((4, 7), np.float32))
    result = export(tiny_onnx, out, "--eval", tmp_path / "eval.npz")
    assert_refused(result, USAGE, "kiln: error: eval.npz", out)


def test_refused_run_creates_no_parent_folders_for_out(tmp_path):
    out = tmp_path / "new" / "deeper" / "out"
    result = export(tmp_path / "nope.onnx", out)
    assert result.returncode == USAGE
    assert not (tmp_path / "new").exists()


def test_matrix_with_an_unknown_target_is_refused_before_any_cell(tiny_onnx, out):
    result = export(tiny_onnx, out, "--target", "onnxruntime,tpu-v9", "--precision", "fp32,int8-dynamic")
    assert_refused(result, USAGE, "kiln: error: unknown target 'tpu-v9'", out)


def test_matrix_with_an_unknown_precision_is_refused_before_any_cell(tiny_onnx, out):
    result = export(tiny_onnx, out, "--target", "onnxruntime,openvino", "--precision", "fp32,int3")
    assert_refused(result, USAGE, "kiln: error: unknown precision 'int3'", out)


@pytest.mark.parametrize("sizes", ["0,1", "1,x", ","])
def test_batch_sizes_must_be_positive_integers(tiny_onnx, out, sizes):
    result = export(tiny_onnx, out, "--batch-sizes", sizes)
    assert_refused(result, USAGE, "kiln: error: argument --batch-sizes", out, contains=("batch sizes",))


def test_negative_price_per_hour_is_an_invalid_option(tiny_onnx, out):
    result = export(tiny_onnx, out, "--price-per-hour", "-1")
    assert_refused(result, USAGE, "kiln: error: invalid option price_per_hour: Input should be greater than 0", out)
