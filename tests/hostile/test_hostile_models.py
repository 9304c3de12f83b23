"""Hostile model sources: broken or malicious ONNX files, pickles that would run code, and bad Hugging Face folders.

kiln must refuse each with one `kiln: error:` line and its exit code, write nothing at --out, and never read
outside the model's folder or run code it was not allowed to run.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import tiny_mlp_onnx
from tests.hostile.helpers import EXPORT_FAILED, OK, USAGE, assert_refused, export


def _model(path: Path, inputs, outputs, nodes, initializers=(), *, opset: int = 17, ir: int = 8,
           extra_opsets=()) -> Path:
    graph = helper.make_graph(nodes, "hostile", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    model.ir_version = ir
    path.write_bytes(model.SerializeToString())  # no checker: these models are meant to be wrong
    return path


def _identity(path: Path, shape, dtype=TensorProto.FLOAT, **kwargs) -> Path:
    return _model(path, [helper.make_tensor_value_info("x", dtype, shape)],
                  [helper.make_tensor_value_info("y", dtype, shape)], [helper.make_node("Identity", ["x"], ["y"])],
                  **kwargs)


def _external_data_model(folder: Path, location: str, *, offset: str = "0", length: str = "128") -> Path:
    """x[batch, 8] @ w[8, 4], w (128 bytes) stored outside the .onnx file at `location`."""
    folder.mkdir(parents=True, exist_ok=True)
    tensor = numpy_helper.from_array(np.zeros((8, 4), np.float32), "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return _model(folder / "model.onnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                  [helper.make_node("MatMul", ["x", "w"], ["y"])], [tensor])


# -- ONNX files that are not (whole) models ----------------------------------------------------------------------

@pytest.mark.parametrize("cut", ["half", "all_but_last_byte", "first_16_bytes"])
def test_truncated_onnx_is_refused(tmp_path, out, cut):
    """A valid model's bytes cut short (a hidden=64 model): exit 2 naming the file as unreadable ONNX."""
    data = tiny_mlp_onnx(tmp_path / "whole.onnx", hidden=64, seed=3).read_bytes()
    keep = {"half": len(data) // 2, "all_but_last_byte": len(data) - 1, "first_16_bytes": 16}[cut]
    path = tmp_path / f"{cut}.onnx"
    path.write_bytes(data[:keep])
    assert_refused(export(path, out, "--synthetic-data"), USAGE, f"{cut}.onnx is not a readable ONNX model",
                   out=out)


@pytest.mark.parametrize("kind", ["random_64k", "gzipped_model", "png_bytes"])
def test_non_onnx_bytes_with_onnx_suffix_are_refused(tmp_path, out, kind):
    """Bytes that are not ONNX behind a .onnx suffix (random, a gzipped model, an image): exit 2, no crash."""
    if kind == "random_64k":
        data = np.random.default_rng(123).integers(0, 256, 65536, dtype=np.uint8).tobytes()
    elif kind == "gzipped_model":
        data = gzip.compress(tiny_mlp_onnx(tmp_path / "inner.onnx").read_bytes())
    else:
        data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    path = tmp_path / f"{kind}.onnx"
    path.write_bytes(data)
    assert_refused(export(path, out, "--synthetic-data"), USAGE, f"{kind}.onnx", "ONNX", out=out)


def test_empty_onnx_file_is_refused(tmp_path, out):
    """A zero-byte model.onnx: exit 2 saying it holds no ONNX graph."""
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    assert_refused(export(path, out, "--synthetic-data"), USAGE, "empty.onnx holds no ONNX graph", out=out)


@pytest.mark.parametrize("proto", ["TensorProto", "GraphProto", "NodeProto"])
def test_protobuf_that_is_not_a_model_is_refused(tmp_path, out, proto):
    """A valid protobuf of another ONNX message (tensor, graph, node) saved as .onnx: exit 2, not a model."""
    model = onnx.load(str(tiny_mlp_onnx(tmp_path / "src.onnx")))
    message = {"TensorProto": model.graph.initializer[0], "GraphProto": model.graph,
               "NodeProto": model.graph.node[0]}[proto]
    path = tmp_path / f"{proto}.onnx"
    path.write_bytes(message.SerializeToString())
    assert_refused(export(path, out, "--synthetic-data"), USAGE, f"{proto}.onnx", "ONNX", out=out)


def test_onnx_file_that_is_a_fifo_is_refused_without_hanging(tmp_path, out):
    """A named pipe called model.onnx (nobody writes to it): kiln must refuse it, not block forever reading it."""
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    try:
        result = export(fifo, out, "--synthetic-data", timeout=8)
    except subprocess.TimeoutExpired:
        pytest.fail("kiln export blocked for 8 s reading a FIFO named pipe.onnx")
    assert_refused(result, USAGE, "pipe.onnx", out=out)


# -- external data: confined to the model's folder, present and complete -----------------------------------------

@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin", "symlink"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, out, location):
    """External data pointing outside the model's folder (.., absolute, a symlink out): a refused file-read attack."""
    (tmp_path / "secret.bin").write_bytes(b"\0" * 128)
    folder = tmp_path / "model"
    if location == "symlink":
        folder.mkdir()
        (folder / "w.data").symlink_to(tmp_path / "secret.bin")
        location = "w.data"
    path = _external_data_model(folder, location)
    assert_refused(export(path, out, "--synthetic-data"), USAGE, f"external data '{location}' outside the model's "
                                                                 "folder", "refusing to read", out=out)


def test_external_data_in_a_missing_subfolder_is_refused(tmp_path, out):
    """External data at weights/w.bin that does not exist: exit 2 naming the missing file."""
    path = _external_data_model(tmp_path / "model", "weights/w.bin")
    assert_refused(export(path, out, "--synthetic-data"), USAGE, "external data file 'weights/w.bin'", "missing",
                   out=out)


def test_external_data_file_shorter_than_offset_plus_length_is_refused(tmp_path, out):
    """External data file of 64 bytes where the tensor needs bytes 32..160: exit 2, truncated."""
    path = _external_data_model(tmp_path / "model", "w.data", offset="32")
    (path.parent / "w.data").write_bytes(b"\0" * 64)
    assert_refused(export(path, out, "--synthetic-data"), USAGE, "external data file 'w.data' is shorter than "
                                                                 "tensor 'w' needs", out=out)


@pytest.mark.parametrize("offset", ["abc", "-64"])
def test_external_data_with_a_nonsense_offset_is_refused(tmp_path, out, offset):
    """External data whose offset is not a non-negative integer: exit 2 naming the tensor, not a crash."""
    path = _external_data_model(tmp_path / "model", "w.data", offset=offset)
    (path.parent / "w.data").write_bytes(b"\0" * 256)
    assert_refused(export(path, out, "--synthetic-data"), USAGE, "'w'", "offset", out=out)


# -- graphs kiln cannot feed or run ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [[10**12, 8], ["batch", 10**12]])
def test_absurd_declared_input_dims_without_input_override_are_refused(tmp_path, out, shape):
    """An input declared 10**12 wide, no --input given: exit 2 naming the dimension, not an allocation crash."""
    path = _identity(tmp_path / "huge.onnx", shape)
    assert_refused(export(path, out, "--synthetic-data"), USAGE, "1000000000000", out=out)


def test_input_kiln_cannot_make_data_for_is_refused(tmp_path, out):
    """An input declared as a string tensor: exit 2 naming input 'x', not a crash."""
    path = _identity(tmp_path / "m.onnx", ["batch", 8], TensorProto.STRING)
    assert_refused(export(path, out, "--synthetic-data"), USAGE, "'x'", out=out)


@pytest.mark.parametrize("declared", [0, -1])
def test_zero_and_minus_one_dims_are_dynamic(tmp_path, out, declared):
    """An input declared [0, 8] or [-1, 8] (what TF and Paddle converters write for "any size"): the dim is dynamic,
    named x_batch in the artifact, and the export succeeds (it used to be refused as a dimension below 1)."""
    path = _identity(tmp_path / "m.onnx", [declared, 8])
    result = export(path, out, "--synthetic-data")
    assert result.returncode == OK, result.stderr
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["io"]["inputs"][0]["shape"] == ["x_batch", 8]


def test_custom_domain_op_fails_export_in_one_line(tmp_path, out):
    """A node com.evil:Frobnicate no runtime knows: kiln passes the checker, then ONNX Runtime refuses it: exit 5."""
    path = _identity(tmp_path / "custom.onnx", ["batch", 8], extra_opsets=[helper.make_opsetid("com.evil", 1)])
    model = onnx.load(str(path))
    model.graph.node[0].op_type, model.graph.node[0].domain = "Frobnicate", "com.evil"
    path.write_bytes(model.SerializeToString())
    assert_refused(export(path, out, "--synthetic-data"), EXPORT_FAILED, "com.evil:Frobnicate",
                   "is not a registered function/op", out=out)


def test_unknown_op_in_the_default_domain_fails_the_checker(tmp_path, out):
    """A node NotAnOp in the standard domain: exit 2, the ONNX checker names the op."""
    path = _identity(tmp_path / "unknown_op.onnx", ["batch", 8])
    model = onnx.load(str(path))
    model.graph.node[0].op_type = "NotAnOp"
    path.write_bytes(model.SerializeToString())
    assert_refused(export(path, out, "--synthetic-data"), USAGE, "unknown_op.onnx fails the ONNX checker", "NotAnOp",
                   out=out)


def test_opset_far_in_the_future_names_the_opset(tmp_path, out):
    """Default-domain opset 99 (IR 8, passes the checker): exit 5 with a line that says opset 99 is the problem."""
    path = _identity(tmp_path / "future.onnx", ["batch", 8], opset=99)
    line = assert_refused(export(path, out, "--synthetic-data"), EXPORT_FAILED, out=out)
    assert "opset 99" in line.lower(), line  # not just "99": the staging path or a pid may hold those digits


def test_ir_version_far_in_the_future_is_refused(tmp_path, out):
    """IR version 99: exit 2, the checker's message names the IR version."""
    path = _identity(tmp_path / "future_ir.onnx", ["batch", 8], ir=99)
    assert_refused(export(path, out, "--synthetic-data"), USAGE, "future_ir.onnx fails the ONNX checker",
                   "ir_version 99", out=out)


# -- pickles: refused without --trust-pickle, and never unpickled ------------------------------------------------

class _PlantsMarker:
    """Unpickling this object creates the file at `path`: proof that untrusted code ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("suffix", [".pkl", ".pt", ".ckpt"])
def test_malicious_pickle_is_refused_and_never_unpickled(tmp_path, out, suffix):
    """A pickle whose __reduce__ creates a marker file, given without --trust-pickle: exit 2, marker never appears."""
    marker = tmp_path / "PWNED"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps(_PlantsMarker(marker)))
    result = export(path, out, "--input", "x=batch=1,8")
    assert_refused(result, USAGE, f"model{suffix} is a pickle", "--trust-pickle", out=out)
    assert not marker.exists(), "kiln unpickled an untrusted file"


def test_torch_saved_module_as_pth_without_trust_pickle_is_refused(tmp_path, out):
    """torch.save of an nn.Linear as .pth, no --trust-pickle: exit 2, the file is named a pickle."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "linear.pth"
    torch.save(torch.nn.Linear(8, 4), path)
    assert_refused(export(path, out, "--input", "input=batch=1,8"), USAGE, "linear.pth is a pickle",
                   "--trust-pickle", out=out)


def test_truncated_torch_checkpoint_with_trust_pickle_is_refused(tmp_path, out):
    """The first half of a torch.save zip, with --trust-pickle: exit 2, cannot unpickle, no traceback."""
    torch = pytest.importorskip("torch")
    whole = tmp_path / "whole.pt"
    torch.save(torch.nn.Linear(8, 4), whole)
    path = tmp_path / "cut.pt"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    result = export(path, out, "--trust-pickle", "--input", "input=batch=1,8")
    assert_refused(result, USAGE, "cannot unpickle cut.pt", out=out)


# -- Hugging Face folders ----------------------------------------------------------------------------------------

def _hf_folder(tmp_path: Path, config: bytes | dict, name: str = "hf") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    data = config if isinstance(config, bytes) else json.dumps(config).encode()
    (folder / "config.json").write_bytes(data)
    return folder


def test_hf_remote_code_is_refused_and_not_imported(tmp_path, out):
    """config.json auto_map to a configuration_evil.py that plants a marker on import: exit 2, code never runs."""
    marker = tmp_path / "PWNED"
    folder = _hf_folder(tmp_path, {"model_type": "evil", "architectures": ["EvilModel"],
                                   "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                                                "AutoModel": "modeling_evil.EvilModel"}}, name="remote")
    for module in ("configuration_evil.py", "modeling_evil.py"):
        (folder / module).write_text(f"open({str(marker)!r}, 'w').close()\n", encoding="utf-8")
    result = export(folder, out, "--synthetic-data")
    assert_refused(result, USAGE, "remote asks to run its own Python code", "--trust-remote-code", out=out)
    assert not marker.exists(), "kiln imported the folder's own Python code"


@pytest.mark.parametrize("content", [b'{"model_type": "bert", "architectures": ["BertModel"],', b""],
                         ids=["cut_json", "empty"])
def test_hf_config_that_is_not_json_is_refused(tmp_path, out, content):
    """config.json cut mid-object, or empty: exit 2, not readable JSON."""
    folder = _hf_folder(tmp_path, content)
    assert_refused(export(folder, out, "--synthetic-data"), USAGE, "config.json is not readable JSON", out=out)


def test_hf_config_in_latin1_is_refused(tmp_path, out):
    """config.json encoded in Latin-1 (byte 0xE9): exit 2, not readable JSON, naming the codec."""
    folder = _hf_folder(tmp_path, '{"model_type": "bert", "_name_or_path": "café"}'.encode("latin-1"))
    assert_refused(export(folder, out, "--synthetic-data"), USAGE, "config.json is not readable JSON", "utf-8",
                   out=out)


def test_hf_config_that_is_a_json_array_is_refused(tmp_path, out):
    """config.json holding [1, 2, 3] (valid JSON, not an object): exit 2, not a traceback."""
    folder = _hf_folder(tmp_path, [1, 2, 3])
    assert_refused(export(folder, out, "--synthetic-data"), USAGE, "config.json", out=out)


def test_hf_unknown_model_type_is_refused(tmp_path, out):
    """model_type 'totally-unknown-arch' transformers does not know: exit 2 naming the model type."""
    pytest.importorskip("transformers")
    folder = _hf_folder(tmp_path, {"model_type": "totally-unknown-arch", "architectures": ["BertModel"]})
    assert_refused(export(folder, out, "--synthetic-data"), USAGE, "transformers cannot load hf",
                   "totally-unknown-arch", out=out)


def test_hf_folder_without_weights_is_refused(tmp_path, out):
    """A valid tiny BERT config.json and no weight file: exit 2 saying which weight files are missing."""
    pytest.importorskip("transformers")
    folder = _hf_folder(tmp_path, {"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 16,
                                   "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
                                   "vocab_size": 64}, name="noweights")
    assert_refused(export(folder, out, "--synthetic-data"), USAGE, "transformers cannot load noweights",
                   "model.safetensors", out=out)
