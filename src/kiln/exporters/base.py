"""What every exporter produces, and the small protocol a model source implements."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from kiln.calibration.samples import DataContext, Feed
from kiln.config import ExportConfig


@dataclass(frozen=True)
class SourceInfo:
    kind: str  # onnx | torch-module | torch-callable | torch-export | torch-pickle | huggingface
    location: str
    sha256: str | None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "location": self.location, "sha256": self.sha256, "details": self.details}


@dataclass(frozen=True)
class ExportRecord:
    """How the ONNX graph was produced: which exporter ran, and what was tried before it."""

    exporter: str
    opset: int
    attempts: tuple[dict, ...] = ()
    seconds: float = 0.0
    notes: tuple[str, ...] = ()

    def to_dict(self, timings: bool = True) -> dict:
        """Without timings for the manifest, which must not change from run to run."""
        if not timings:
            attempts = [{k: v for k, v in a.items() if k != "seconds"} for a in self.attempts]
            return {"exporter": self.exporter, "opset": self.opset, "attempts": attempts, "notes": list(self.notes)}
        return {"exporter": self.exporter, "opset": self.opset, "attempts": list(self.attempts),
                "seconds": round(self.seconds, 3), "notes": list(self.notes)}


class Source(Protocol):
    """A model in its original form: it can describe its inputs, run, and write itself as ONNX."""

    info: SourceInfo
    extra_files: dict[str, Path]  # artifact-relative name -> file (tokenizer, preprocessor config)

    def data_context(self, config: ExportConfig) -> DataContext: ...

    def run(self, feed: Feed) -> dict[str, np.ndarray]: ...

    def to_onnx(self, path: Path, config: ExportConfig, example: Feed) -> ExportRecord: ...


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(paths: list[Path], root: Path) -> str:
    """One digest over several files, keyed by their path relative to root."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + sha256_file(path).encode() + b"\n")
    return digest.hexdigest()
