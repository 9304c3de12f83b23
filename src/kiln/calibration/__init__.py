"""Calibration and evaluation data: readers for images, arrays and text, and synthetic data on request."""

from __future__ import annotations


from kiln.calibration.arrays import array_samples
from kiln.calibration.images import IMAGE_SUFFIXES, image_samples, list_images
from kiln.calibration.samples import DataContext, Feed, Samples
from kiln.calibration.synthetic import random_feed, synthetic_samples
from kiln.calibration.text import text_samples
from kiln.config import DataSpec
from kiln.errors import UsageError

TEXT_SUFFIXES = (".txt", ".text", ".lines")


def load_samples(spec: DataSpec, context: DataContext, role: str) -> Samples:
    """Read `spec` as images, arrays or text, judged by what the path holds."""
    path = spec.path
    if not path.exists():
        raise UsageError(f"{role} data path {path} does not exist", hint="check the path")
    if path.is_file():
        if path.suffix in (".npz", ".npy"):
            return array_samples(path, context, spec.limit)
        if path.suffix.lower() in TEXT_SUFFIXES:
            return text_samples(path, context, spec.limit)
        raise UsageError(f"{role} data file {path.name} is neither text (.txt) nor arrays (.npz/.npy)",
                         hint="pass a .txt file with one sample per line, a .npz file, or a folder of images")
    entries = [p for p in path.iterdir() if p.is_file()]
    if any(p.suffix in (".npz", ".npy") for p in entries):
        return array_samples(path, context, spec.limit)
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in entries):
        return image_samples(path, context, spec.limit)
    raise UsageError(f"{role} data folder {path} is empty or holds no images or arrays",
                     hint=f"put images ({', '.join(IMAGE_SUFFIXES)}) or .npz/.npy files in it")


__all__ = ["DataContext", "Feed", "Samples", "list_images", "load_samples", "random_feed", "synthetic_samples"]
