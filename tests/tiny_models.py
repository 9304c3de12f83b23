"""Tiny PyTorch models for tests that export through torch (importable as `tests.tiny_models:...`)."""

from __future__ import annotations

import torch


class TinyConvNet(torch.nn.Module):
    """Conv -> ReLU -> pool -> linear: images[batch, 3, 16, 16] -> logits[batch, 10]."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, images):
        x = torch.relu(self.conv(images))
        return self.head(x.mean(dim=(2, 3)))


class TwoInputs(torch.nn.Module):
    """tokens[batch, seq] (int64) and scale[batch, 1] -> sum of embeddings * scale, [batch, 4]."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(50, 4)

    def forward(self, tokens, scale):
        return self.embed(tokens).sum(dim=1) * scale


def tiny_conv_net() -> TinyConvNet:
    return TinyConvNet().eval()


def two_inputs() -> TwoInputs:
    return TwoInputs().eval()
