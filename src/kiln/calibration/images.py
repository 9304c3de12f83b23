"""Image data: a folder of image files, preprocessed as stated in the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiln._deps import require
from kiln.calibration.samples import DataContext, Samples
from kiln.config import ImagePreprocessing
from kiln.errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def image_input(context: DataContext) -> str:
    """The model's one rank-4 float input, which images feed."""
    candidates = [t for t in context.signature.inputs if len(t.shape) == 4 and t.dtype.startswith("float")]
    if len(candidates) != 1 or len(context.signature.inputs) != 1:
        names = ", ".join(f"{t.name}{list(t.shape)}" for t in context.signature.inputs)
        raise UsageError(f"image data needs a model with a single rank-4 float input; this one has {names}",
                         hint="pass .npz arrays keyed by input name instead")
    return candidates[0].name


def preprocess(path: Path, prep: ImagePreprocessing) -> np.ndarray:
    """Decode, resize/crop and normalise one image into a batch-1 array."""
    image_mod = require("PIL.Image", why="reading image files")
    try:
        with image_mod.open(path) as img:
            img = img.convert("RGB")
            height, width = prep.size
            if prep.resize_shorter:
                scale = prep.resize_shorter / min(img.size)
                img = img.resize((max(width, round(img.size[0] * scale)), max(height, round(img.size[1] * scale))),
                                 image_mod.Resampling.BILINEAR)
                left, top = (img.size[0] - width) // 2, (img.size[1] - height) // 2
                img = img.crop((left, top, left + width, top + height))
            else:
                img = img.resize((width, height), image_mod.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.float32)
    except (OSError, SyntaxError, ValueError, image_mod.DecompressionBombError) as exc:
        raise UsageError(f"cannot read image {path}: {str(exc)[:200]}",
                         hint="remove the file or replace it with a valid image") from None
    pixels = (pixels * prep.scale - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    if prep.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels[None], dtype=np.float32)


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def image_samples(folder: Path, context: DataContext, limit: int | None) -> Samples:
    name = image_input(context)
    prep = context.image_preprocessing or ImagePreprocessing()
    files = list_images(folder)
    if not files:
        raise UsageError(f"folder {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})",
                         hint="point --calibration/--eval at a folder of images, .npz/.npy files, or a text file")
    files = files[:limit] if limit else files
    expected = context.signature.input(name).shape
    feeds = []
    for path in files:
        array = preprocess(path, prep)
        for axis, want in enumerate(expected):
            if isinstance(want, int) and array.shape[axis] != want:
                raise UsageError(
                    f"preprocessed image shape {list(array.shape)} does not fit input '{name}' {list(expected)}",
                    hint="set --image-size and --layout to match the model")
        feeds.append({name: array})
    return Samples(feeds=tuple(feeds), kind="images",
                   description=f"{len(files)} images from {folder.name}/, {prep.describe()}",
                   labels=tuple(p.name for p in files))
