"""A real model with one planted sensitive layer, for the fallback search (tests/integration/test_fallback_search.py).

MTCNN's ONet with facenet-pytorch's trained weights, and one change that leaves its float function as it was: the
output channel 5 of conv1 is scaled by 1000 (weights and bias) and conv2's input channel 5 by 1/1000. PReLU and max
pooling commute with a positive scale, so float outputs match the original to rounding; but the tensor conv2 reads
now spans a thousand times the range its 31 other channels use, and one per-tensor int8 scale for it rounds those
channels to a few levels. The units that read that tensor quantized are the ones the search must find.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks.corpus import _nchw, _photos, _resize
from benchmarks.corpus_torch import mtcnn_onet

CHANNEL, SCALE = 5, 1000.0
PLANTED_CONSUMER = "conv2"  # the module whose input the plant ruins for int8


def onet_with_outlier_channel() -> torch.nn.Module:
    net = mtcnn_onet()
    with torch.no_grad():
        net.conv1.weight[CHANNEL] *= SCALE
        net.conv1.bias[CHANNEL] *= SCALE
        net.conv2.weight[:, CHANNEL] /= SCALE
    return net


def write_face_crops(folder: Path, count: int = 24) -> Path:
    """48x48 crops at several offsets and sizes of scikit-image's photos, MTCNN-normalised: real image data."""
    path = folder / "crops.npz"
    if path.is_file():
        return path
    crops = []
    photos = _photos()
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = min(h, w) // (2 + i % 3)
        top, left = (i * 37) % (h - side), (i * 53) % (w - side)
        crops.append(_nchw((_resize(photo[top:top + side, left:left + side], 48, 48) - 127.5) / 128))
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=np.concatenate(crops).astype(np.float32))
    return path
