"""Hostile calibration and evaluation data: non-finite or mistyped arrays, pickled objects, broken text and images.

Data is read in the load stage, before any artifact exists: each refusal is exit 2 naming the file (and sample),
with nothing at --out and no staging folder left beside it.
"""

from __future__ import annotations

import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.hostile.helpers import USAGE, assert_refused, export


def _eval(model: Path, out: Path, data: Path, *extra):
    return export(model, out, "--eval", data, *extra)


@pytest.fixture
def image_model(tmp_path) -> Path:
    """images[batch, 3, 8, 8] -> Relu: the one rank-4 float input that image folders feed."""
    graph = helper.make_graph([helper.make_node("Relu", ["images"], ["y"])], "img",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "img.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def text_model(tmp_path_factory) -> Path:
    """A 1-layer, 16-wide BERT with a 34-token WordPiece vocabulary: a Hugging Face folder with a tokenizer."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import torch

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=128)
    transformers.BertModel(config).save_pretrained(folder)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz", "the", "cat", "sat"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


# -- arrays -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["nan", "-inf"])
def test_npy_with_non_finite_values_is_refused(tiny, tmp_path, out, bad):
    """x.npy whose sample 3 holds NaN or -Inf: exit 2 naming the file, the sample and NaN/Inf."""
    data = np.ones((5, 8), np.float32)
    data[3, 5] = float(bad)
    folder = tmp_path / bad
    folder.mkdir()
    np.save(folder / "x.npy", data)
    assert_refused(_eval(tiny, out, folder / "x.npy"), USAGE, "x.npy sample 3: input 'x' contains NaN or Inf", out=out)


def test_calibration_npy_with_inf_is_refused_for_int8(tiny, tmp_path, out):
    """int8 calibration data x.npy with +Inf in sample 0: exit 2 before any quantization."""
    data = np.zeros((4, 8), np.float32)
    data[0, 0] = np.inf
    np.save(tmp_path / "x.npy", data)
    result = export(tiny, out, "--precision", "int8", "--calibration", tmp_path / "x.npy")
    assert_refused(result, USAGE, "x.npy sample 0: input 'x' contains NaN or Inf", out=out)


@pytest.mark.parametrize("array,dtype", [(np.array([["a"] * 8] * 4), "<U1"),
                                         (np.ones((4, 8), np.complex64), "complex64"),
                                         (np.ones((4, 8), np.int64), "int64")], ids=["strings", "complex", "int64"])
def test_npy_of_the_wrong_dtype_is_refused(tiny, tmp_path, out, array, dtype):
    """x.npy of strings, complex or integers where the model takes float32: exit 2 naming both dtypes."""
    np.save(tmp_path / "x.npy", array)
    assert_refused(_eval(tiny, out, tmp_path / "x.npy"), USAGE, f"input 'x' is {dtype}, the model expects float32",
                   out=out)


@pytest.mark.parametrize("array,rank", [(np.ones((2, 2, 4, 8), np.float32), 4), (np.float32(1.0), 0)],
                         ids=["rank4", "scalar"])
def test_npy_of_the_wrong_rank_is_refused(tiny, tmp_path, out, array, rank):
    """x.npy of rank 4, or a 0-d scalar, for a rank-2 input: exit 2 naming both ranks."""
    np.save(tmp_path / "x.npy", array)
    assert_refused(_eval(tiny, out, tmp_path / "x.npy"), USAGE, f"array 'x' has {rank} dims, the input has 2", out=out)


def test_npy_with_the_wrong_static_dim_is_refused(tiny, tmp_path, out):
    """x.npy of shape (3, 9) for an input declared [batch, 8]: exit 2 naming both shapes."""
    np.save(tmp_path / "x.npy", np.ones((3, 9), np.float32))
    assert_refused(_eval(tiny, out, tmp_path / "x.npy"), USAGE, "input 'x' has shape [1, 9]", "['batch', 8]", out=out)


def test_empty_npz_is_refused(tiny, tmp_path, out):
    """An .npz holding no arrays at all: exit 2, no data for input x."""
    np.savez(tmp_path / "empty.npz")
    assert_refused(_eval(tiny, out, tmp_path / "empty.npz"), USAGE, "empty.npz: no data for model input(s) x", out=out)


def test_npz_with_zero_samples_is_refused(tiny, tmp_path, out):
    """x of shape (0, 8): the right name, dtype and rank but no samples: exit 2, not a crash."""
    np.savez(tmp_path / "none.npz", x=np.ones((0, 8), np.float32))
    assert_refused(_eval(tiny, out, tmp_path / "none.npz"), USAGE, "none.npz", out=out)


class _PlantsMarker:
    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("container", ["npz", "npy"])
def test_pickled_object_arrays_are_refused_and_never_unpickled(tiny, tmp_path, out, container):
    """An object array whose elements plant a marker when unpickled (.npz or .npy): exit 2, marker never appears."""
    marker = tmp_path / "PWNED"
    array = np.empty(2, dtype=object)
    array[0], array[1] = _PlantsMarker(marker), _PlantsMarker(marker)
    folder = tmp_path / container
    folder.mkdir()
    path = folder / f"x.{container}"
    if container == "npz":
        np.savez(path, x=array)
    else:
        np.save(path, array, allow_pickle=True)
    assert b"PWNED" in path.read_bytes()  # the payload is really in there (np.savez does not compress)
    assert_refused(_eval(tiny, out, path), USAGE, f"cannot read array file {path}", "Object arrays", out=out)
    assert not marker.exists(), "kiln unpickled an object array"


def test_raw_pickle_named_npz_is_refused_and_never_unpickled(tiny, tmp_path, out):
    """A bare pickle (not a zip) saved as data.npz: numpy would only open it with allow_pickle: exit 2, no marker."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "data.npz"
    path.write_bytes(pickle.dumps(_PlantsMarker(marker)))
    assert_refused(_eval(tiny, out, path), USAGE, f"cannot read array file {path}", out=out)
    assert not marker.exists(), "kiln unpickled data.npz"


def test_truncated_npy_is_refused(tiny, tmp_path, out):
    """The first 100 bytes of a valid x.npy: exit 2, cannot read array file."""
    whole = tmp_path / "whole.npy"
    np.save(whole, np.ones((4, 8), np.float32))
    folder = tmp_path / "cut"
    folder.mkdir()
    (folder / "x.npy").write_bytes(whole.read_bytes()[:100])
    assert_refused(_eval(tiny, out, folder / "x.npy"), USAGE, "cannot read array file", "x.npy", out=out)


def test_data_file_of_an_unknown_kind_is_refused(tiny, tmp_path, out):
    """Evaluation data given as samples.csv: exit 2, neither text nor arrays."""
    (tmp_path / "samples.csv").write_text("1,2,3,4,5,6,7,8\n", encoding="utf-8")
    assert_refused(_eval(tiny, out, tmp_path / "samples.csv"), USAGE, "samples.csv is neither text", out=out)


# -- text ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content,needle", [(b"", "has no non-empty lines"),
                                            (b"\n   \n\t\n\r\n", "has no non-empty lines"),
                                            ("the cat sat on the caf\xe9\n".encode("latin-1"), "is not valid UTF-8")],
                         ids=["empty", "blank_lines", "latin1"])
def test_bad_text_data_is_refused(text_model, tmp_path, out, content, needle):
    """Text eval data that is empty, only blank lines, or not UTF-8, for a model with a tokenizer: exit 2."""
    path = tmp_path / "sentences.txt"
    path.write_bytes(content)
    assert_refused(_eval(text_model, out, path), USAGE, f"text file {path} {needle}", out=out)


def test_text_data_for_a_model_without_tokenizer_is_refused(tiny, tmp_path, out):
    """A valid sentences.txt for an ONNX model with no tokenizer: exit 2, text needs a tokenizer."""
    path = tmp_path / "sentences.txt"
    path.write_text("the cat sat\n", encoding="utf-8")
    assert_refused(_eval(tiny, out, path), USAGE, f"{path} is a text file, but this model has no tokenizer", out=out)


# -- images -------------------------------------------------------------------------------------------------------

def _png(width: int, height: int, *, pixels: bool = True) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    body = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    if pixels:
        body += chunk(b"IDAT", zlib.compress(b"\0" * 10))  # far fewer bytes than the header promises
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")


def test_image_folder_without_images_is_refused(image_model, tmp_path, out):
    """A folder with a README.md and a sub-folder named photo.jpg, but no image file: exit 2."""
    folder = tmp_path / "photos"
    (folder / "photo.jpg").mkdir(parents=True)
    (folder / "README.md").write_text("images go here\n", encoding="utf-8")
    assert_refused(_eval(image_model, out, folder, "--image-size", "8"), USAGE,
                   f"evaluation data folder {folder} is empty or holds no images", out=out)


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20, b"", b"hello, I am text",
                                     _png(8, 8)], ids=["garbage_after_signature", "zero_bytes", "text",
                                                       "short_pixel_data"])
def test_corrupt_png_is_refused(image_model, tmp_path, out, content):
    """A corrupt cat.png (garbage, empty, text, or too little pixel data): exit 2 naming the file."""
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "cat.png").write_bytes(content)
    assert_refused(_eval(image_model, out, folder, "--image-size", "8"), USAGE,
                   f"cannot read image {folder / 'cat.png'}", out=out)


def test_decompression_bomb_png_is_refused(image_model, tmp_path, out):
    """A 300-byte PNG declaring 100000x100000 pixels: exit 2 naming the file, not a crash."""
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(_png(100_000, 100_000))
    assert_refused(_eval(image_model, out, folder, "--image-size", "8"), USAGE, "bomb.png", out=out)
