"""Samples: model inputs ready to feed, plus where they came from (stated in the report)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from kiln.config import ImagePreprocessing
from kiln.signature import Signature

Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class Samples:
    feeds: tuple[Feed, ...]
    kind: str  # images | arrays | text | synthetic
    description: str
    synthetic: bool = False
    labels: tuple[str, ...] = ()  # a short name per sample (file name, sentence), for reports

    def __len__(self) -> int:
        return len(self.feeds)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "count": len(self), "description": self.description, "synthetic": self.synthetic}


@dataclass(frozen=True)
class DataContext:
    """What a reader needs to know about the model to turn files into feeds."""

    signature: Signature
    dims: dict[str, int] = field(default_factory=dict)  # example sizes of named dynamic dims
    given: frozenset[str] = frozenset()  # dims the user sized with --input: data never overrides them
    text_encoder: Callable[[list[str]], Feed] | None = None
    image_preprocessing: ImagePreprocessing | None = None
    int_high: dict[str, int] = field(default_factory=dict)  # exclusive upper bound of integer inputs
    sequence_length: int = 128
    constants: dict[str, np.ndarray] = field(default_factory=dict)  # inputs bound by --constant: data may repeat them


def check_finite(feed: Feed, where: str) -> None:
    from kiln.errors import UsageError

    for name, value in feed.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise UsageError(f"{where}: input '{name}' contains NaN or Inf values",
                             hint="remove or fix those samples; calibration and evaluation data must be finite")
