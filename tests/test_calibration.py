"""The calibration/evaluation readers on small real files: images, .npz/.npy arrays and text lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kiln.calibration import DataContext, load_samples
from kiln.config import DataSpec, ImagePreprocessing
from kiln.errors import UsageError
from kiln.signature import Signature, TensorInfo

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def context_for(*inputs: TensorInfo, **kwargs) -> DataContext:
    return DataContext(signature=Signature(tuple(inputs), ()), **kwargs)


# -- images -----------------------------------------------------------------------------------------

@pytest.fixture
def image_folder(tmp_path) -> Path:
    image = pytest.importorskip("PIL.Image")
    folder = tmp_path / "images"
    folder.mkdir()
    image.new("RGB", (32, 32), (255, 255, 255)).save(folder / "a_white.png")
    image.new("RGB", (32, 32), (0, 0, 0)).save(folder / "b_black.png")
    image.new("RGB", (48, 20), (255, 0, 0)).save(folder / "c_red_wide.png")  # resized to 32x32
    (folder / "readme.md").write_text("not an image, ignored\n", encoding="utf-8")
    return folder


@pytest.fixture
def image_context() -> DataContext:
    prep = ImagePreprocessing(size=(32, 32), scale=1 / 255, mean=MEAN, std=STD, source="test")
    return context_for(TensorInfo("images", "float32", ("batch", 3, 32, 32)), image_preprocessing=prep)


def normalised(value: float, channel: int) -> np.float32:
    return (np.float32(value) - np.float32(MEAN[channel])) / np.float32(STD[channel])


def test_image_folder_gives_one_nchw_batch_1_float32_feed_per_image(image_folder, image_context):
    samples = load_samples(DataSpec(path=image_folder), image_context, "calibration")
    assert samples.kind == "images"
    assert len(samples) == 3
    assert samples.labels == ("a_white.png", "b_black.png", "c_red_wide.png")
    for feed in samples.feeds:
        assert list(feed) == ["images"]
        assert feed["images"].shape == (1, 3, 32, 32)
        assert feed["images"].dtype == np.float32
        assert feed["images"].flags["C_CONTIGUOUS"]
    assert "3 images from images/" in samples.description


def test_white_image_becomes_exactly_one_minus_mean_over_std(image_folder, image_context):
    white = load_samples(DataSpec(path=image_folder), image_context, "calibration").feeds[0]["images"][0]
    for channel in range(3):
        expected = normalised(1.0, channel)
        np.testing.assert_array_equal(white[channel], np.full((32, 32), expected, np.float32))


def test_black_and_red_images_normalise_per_channel(image_folder, image_context):
    feeds = load_samples(DataSpec(path=image_folder), image_context, "calibration").feeds
    black, red = feeds[1]["images"][0], feeds[2]["images"][0]
    for channel in range(3):
        np.testing.assert_array_equal(black[channel], np.full((32, 32), normalised(0.0, channel), np.float32))
    np.testing.assert_array_equal(red[0], np.full((32, 32), normalised(1.0, 0), np.float32))
    np.testing.assert_array_equal(red[1], np.full((32, 32), normalised(0.0, 1), np.float32))
    np.testing.assert_array_equal(red[2], np.full((32, 32), normalised(0.0, 2), np.float32))


def test_image_limit_takes_the_first_files_in_name_order(image_folder, image_context):
    samples = load_samples(DataSpec(path=image_folder, limit=2), image_context, "evaluation")
    assert samples.labels == ("a_white.png", "b_black.png")


def test_nhwc_layout_puts_channels_last(image_folder):
    prep = ImagePreprocessing(size=(32, 32), layout="NHWC", scale=1 / 255, mean=MEAN, std=STD)
    context = context_for(TensorInfo("images", "float32", ("batch", 32, 32, 3)), image_preprocessing=prep)
    white = load_samples(DataSpec(path=image_folder), context, "calibration").feeds[0]["images"]
    assert white.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(white[0, 5, 7], [normalised(1.0, c) for c in range(3)])


def test_image_size_not_fitting_a_static_input_is_a_usage_error(image_folder):
    prep = ImagePreprocessing(size=(16, 16))
    context = context_for(TensorInfo("images", "float32", ("batch", 3, 32, 32)), image_preprocessing=prep)
    with pytest.raises(UsageError, match=r"preprocessed image shape \[1, 3, 16, 16\] does not fit input 'images'"):
        load_samples(DataSpec(path=image_folder), context, "calibration")


def test_corrupt_image_file_is_a_usage_error_naming_it(image_folder, image_context):
    (image_folder / "d_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(UsageError, match=r"cannot read image .*d_broken\.png"):
        load_samples(DataSpec(path=image_folder), image_context, "calibration")


def test_images_for_a_model_without_a_rank_4_input_are_refused(image_folder):
    context = context_for(TensorInfo("x", "float32", ("batch", 8)))
    with pytest.raises(UsageError, match=r"image data needs a model with a single rank-4 float input; this one has x"):
        load_samples(DataSpec(path=image_folder), context, "calibration")


# -- arrays -------------------------------------------------------------------------------------------

@pytest.fixture
def mlp_context() -> DataContext:
    return context_for(TensorInfo("x", "float32", ("batch", 8)))


def test_npz_array_of_input_rank_is_split_into_batch_1_samples(tmp_path, mlp_context):
    data = np.arange(5 * 8, dtype=np.float32).reshape(5, 8)
    np.savez(tmp_path / "c.npz", x=data)
    samples = load_samples(DataSpec(path=tmp_path / "c.npz"), mlp_context, "calibration")
    assert samples.kind == "arrays"
    assert len(samples) == 5
    assert [f["x"].shape for f in samples.feeds] == [(1, 8)] * 5
    for i, feed in enumerate(samples.feeds):
        np.testing.assert_array_equal(feed["x"], data[i:i + 1])
    assert samples.description == "5 samples from c.npz"


def test_npz_array_one_rank_higher_is_a_list_of_feeds(tmp_path, mlp_context):
    data = np.arange(3 * 2 * 8, dtype=np.float32).reshape(3, 2, 8)
    np.savez(tmp_path / "c.npz", x=data)
    samples = load_samples(DataSpec(path=tmp_path / "c.npz"), mlp_context, "calibration")
    assert len(samples) == 3
    assert [f["x"].shape for f in samples.feeds] == [(2, 8)] * 3
    np.testing.assert_array_equal(samples.feeds[2]["x"], data[2])


def test_npz_limit_caps_the_sample_count(tmp_path, mlp_context):
    np.savez(tmp_path / "c.npz", x=np.zeros((10, 8), np.float32))
    assert len(load_samples(DataSpec(path=tmp_path / "c.npz", limit=4), mlp_context, "calibration")) == 4


def test_folder_of_npz_files_is_concatenated_in_name_order(tmp_path, mlp_context):
    folder = tmp_path / "calib"
    folder.mkdir()
    np.savez(folder / "b.npz", x=np.full((1, 8), 2.0, np.float32))
    np.savez(folder / "a.npz", x=np.full((2, 8), 1.0, np.float32))
    samples = load_samples(DataSpec(path=folder), mlp_context, "calibration")
    assert [float(f["x"][0, 0]) for f in samples.feeds] == [1.0, 1.0, 2.0]


def test_npy_file_is_keyed_by_its_stem(tmp_path, mlp_context):
    np.save(tmp_path / "x.npy", np.ones((2, 8), np.float32))
    samples = load_samples(DataSpec(path=tmp_path / "x.npy"), mlp_context, "calibration")
    assert len(samples) == 2 and samples.feeds[0]["x"].shape == (1, 8)


def test_two_input_npz_pairs_samples_by_index(tmp_path):
    context = context_for(TensorInfo("tokens", "int64", ("batch", "seq")), TensorInfo("scale", "float32", ("batch", 1)))
    tokens = np.arange(3 * 4, dtype=np.int64).reshape(3, 4)
    scale = np.array([[1.0], [2.0], [3.0]], np.float32)
    np.savez(tmp_path / "d.npz", tokens=tokens, scale=scale)
    samples = load_samples(DataSpec(path=tmp_path / "d.npz"), context, "evaluation")
    assert len(samples) == 3
    np.testing.assert_array_equal(samples.feeds[1]["tokens"], tokens[1:2])
    assert float(samples.feeds[1]["scale"][0, 0]) == 2.0


def test_npz_missing_one_input_is_refused(tmp_path):
    context = context_for(TensorInfo("tokens", "int64", ("batch", "seq")), TensorInfo("scale", "float32", ("batch", 1)))
    np.savez(tmp_path / "d.npz", tokens=np.zeros((2, 4), np.int64))
    with pytest.raises(UsageError, match=r"d\.npz: no data for model input\(s\) scale"):
        load_samples(DataSpec(path=tmp_path / "d.npz"), context, "evaluation")


def test_npz_with_unequal_sample_counts_is_refused(tmp_path):
    context = context_for(TensorInfo("tokens", "int64", ("batch", "seq")), TensorInfo("scale", "float32", ("batch", 1)))
    np.savez(tmp_path / "d.npz", tokens=np.zeros((2, 4), np.int64), scale=np.zeros((3, 1), np.float32))
    with pytest.raises(UsageError, match=r"d\.npz: inputs have different sample counts"):
        load_samples(DataSpec(path=tmp_path / "d.npz"), context, "evaluation")


def test_npz_of_wrong_rank_is_refused(tmp_path, mlp_context):
    np.savez(tmp_path / "c.npz", x=np.zeros(8, np.float32))
    with pytest.raises(UsageError, match=r"c\.npz: array 'x' has 1 dims, the input has 2"):
        load_samples(DataSpec(path=tmp_path / "c.npz"), mlp_context, "calibration")


def test_npz_holding_pickled_objects_is_refused(tmp_path, mlp_context):
    np.savez(tmp_path / "c.npz", x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(UsageError, match=r"cannot read array file .*c\.npz"):
        load_samples(DataSpec(path=tmp_path / "c.npz"), mlp_context, "calibration")


def test_npz_whose_static_dim_differs_from_the_model_is_refused(tmp_path, mlp_context):
    np.savez(tmp_path / "c.npz", x=np.zeros((4, 7), np.float32))
    with pytest.raises(UsageError, match=r"'x'"):
        load_samples(DataSpec(path=tmp_path / "c.npz"), mlp_context, "calibration")


# -- text ---------------------------------------------------------------------------------------------

SEQ = 8


def toy_encoder(batch: list[str]) -> dict[str, np.ndarray]:
    """A stand-in tokenizer: one id per character (1..99), truncated and right-padded with 0 to SEQ."""
    ids = np.zeros((len(batch), SEQ), np.int64)
    mask = np.zeros((len(batch), SEQ), np.int64)
    for row, line in enumerate(batch):
        codes = [ord(c) % 99 + 1 for c in line][:SEQ]
        ids[row, :len(codes)] = codes
        mask[row, :len(codes)] = 1
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture
def text_context() -> DataContext:
    return context_for(TensorInfo("input_ids", "int64", ("batch", "sequence")),
                       TensorInfo("attention_mask", "int64", ("batch", "sequence")),
                       text_encoder=toy_encoder, sequence_length=SEQ)


def test_text_lines_become_one_padded_feed_per_non_empty_line(tmp_path, text_context):
    path = tmp_path / "lines.txt"
    path.write_text("hi\n\n   \n  a longer sentence here  \nok\n", encoding="utf-8")
    samples = load_samples(DataSpec(path=path), text_context, "calibration")
    assert samples.kind == "text"
    assert len(samples) == 3
    assert samples.labels == ("hi", "a longer sentence here", "ok")
    first = samples.feeds[0]
    assert first["input_ids"].shape == (1, SEQ)
    assert first["attention_mask"].tolist() == [[1, 1, 0, 0, 0, 0, 0, 0]]
    assert first["input_ids"][0, 2:].tolist() == [0] * (SEQ - 2)
    assert samples.feeds[1]["attention_mask"].tolist() == [[1] * SEQ]  # truncated, stripped of outer spaces
    assert "padded/truncated to 8 tokens" in samples.description


def test_text_limit_caps_the_line_count(tmp_path, text_context):
    path = tmp_path / "lines.txt"
    path.write_text("".join(f"line {i}\n" for i in range(10)), encoding="utf-8")
    samples = load_samples(DataSpec(path=path, limit=4), text_context, "calibration")
    assert samples.labels == ("line 0", "line 1", "line 2", "line 3")


def test_text_file_that_is_not_utf8_is_a_usage_error(tmp_path, text_context):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café\nnaïve\n".encode("latin-1"))
    with pytest.raises(UsageError, match=r"text file .*latin1\.txt is not valid UTF-8 \(byte 3\)"):
        load_samples(DataSpec(path=path), text_context, "calibration")


@pytest.mark.parametrize("content", ["", "\n\n   \n\t\n"])
def test_text_file_without_non_empty_lines_is_a_usage_error(tmp_path, text_context, content):
    path = tmp_path / "empty.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UsageError, match=r"text file .*empty\.txt has no non-empty lines"):
        load_samples(DataSpec(path=path), text_context, "calibration")


def test_text_for_a_model_without_tokenizer_is_a_usage_error(tmp_path, mlp_context):
    path = tmp_path / "lines.txt"
    path.write_text("hello\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"is a text file, but this model has no tokenizer"):
        load_samples(DataSpec(path=path), mlp_context, "calibration")


# -- what the path holds --------------------------------------------------------------------------------

def test_missing_data_path_names_the_role(tmp_path, mlp_context):
    with pytest.raises(UsageError, match=r"evaluation data path .*nowhere does not exist"):
        load_samples(DataSpec(path=tmp_path / "nowhere"), mlp_context, "evaluation")


def test_data_file_of_unknown_kind_is_refused(tmp_path, mlp_context):
    path = tmp_path / "data.csv"
    path.write_text("1,2,3\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"calibration data file data\.csv is neither text \(\.txt\) nor arrays"):
        load_samples(DataSpec(path=path), mlp_context, "calibration")


def test_empty_folder_is_refused(tmp_path, mlp_context):
    folder = tmp_path / "calib"
    folder.mkdir()
    with pytest.raises(UsageError, match=r"calibration data folder .*calib is empty or holds no images or arrays"):
        load_samples(DataSpec(path=folder), mlp_context, "calibration")
