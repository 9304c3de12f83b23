"""Torch modules of the conformance corpus: third-party architectures rebuilt here, with the weights their wheel ships.

facenet-pytorch's MTCNN nets (MIT) import torchvision at package import, which cannot be installed beside CPU
torch 2.13 here (DESIGN.md §9), so the two small nets are restated below, layer for layer as in
facenet_pytorch/models/mtcnn.py 2.6.0, and load the state dicts from the installed wheel (strict: a layer that
does not match the file fails loudly). Used as `kiln export benchmarks.corpus_torch:mtcnn_pnet ...`.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.corpus import package_file


class PNet(nn.Module):
    """MTCNN proposal net: fully convolutional, any input size from 12x12 up."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1, self.pool1 = nn.Conv2d(3, 10, 3), nn.PReLU(10), nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.softmax4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Softmax(dim=1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class ONet(nn.Module):
    """MTCNN output net: 48x48 face crops to box offsets, five landmarks and a face probability."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1, self.pool1 = nn.Conv2d(3, 32, 3), nn.PReLU(32), nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2, self.pool2 = nn.Conv2d(32, 64, 3), nn.PReLU(64), nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3, self.pool3 = nn.Conv2d(64, 64, 3), nn.PReLU(64), nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.softmax6_1 = nn.Linear(256, 2), nn.Softmax(dim=1)
        self.dense6_2, self.dense6_3 = nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


def _load(module: nn.Module, name: str) -> nn.Module:
    state = torch.load(package_file("facenet-pytorch", f"facenet_pytorch/data/{name}.pt"), map_location="cpu",
                       weights_only=True)
    module.load_state_dict(state, strict=True)
    return module.eval()


def mtcnn_pnet() -> nn.Module:
    return _load(PNet(), "pnet")


def mtcnn_onet() -> nn.Module:
    return _load(ONet(), "onet")

