"""The backend protocol: check_environment, compile, runner. Every backend is one subpackage with these."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from kiln.calibration import Feed, Samples
from kiln.config import Plan
from kiln.exporters import ExportedGraph
from kiln.signature import Signature
from kiln.targets import TargetSpec


@dataclass(frozen=True)
class Compiled:
    """A backend's output: files under `root`, and the runtime settings they must run with."""

    backend: str
    root: Path
    model: Path  # the file a runner loads
    signature: Signature
    runtime_settings: dict  # recorded in the artifact; `kiln bench` and device runners reuse them
    details: dict = field(default_factory=dict)  # fusion counts, quantization settings, steps and timings
    seconds: float = 0.0

    @property
    def files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file())


class Runner(Protocol):
    """Loaded model, ready to infer. Use as a context manager."""

    load_seconds: float
    settings: dict

    def __enter__(self) -> "Runner": ...

    def __exit__(self, *exc) -> None: ...

    def infer(self, feed: Feed) -> dict[str, np.ndarray]: ...


class Backend(Protocol):
    name: str

    def check_environment(self, target: TargetSpec) -> None: ...

    def compile(self, graph: ExportedGraph, plan: Plan, workdir: Path, calibration: Samples | None,
                example: Feed | None = None) -> Compiled: ...

    def runner(self, model: Path, signature: Signature, settings: dict) -> Runner: ...

    def with_threads(self, settings: dict, threads: int) -> dict:
        """The recorded runtime settings with another intra-op thread count (for `kiln bench --threads`)."""

    def throughput(self, model: Path, settings: dict, feed: Feed, seconds: float) -> dict | None:
        """The runtime's own throughput mode (streams, async requests), or None where it has none."""

    def profile(self, model: Path, settings: dict, feed: Feed, runs: int):
        """Per-node time from the runtime's own profiler (a `kiln.bench.profiling.Profile`), in a session of its
        own; or a one-line reason string where the backend cannot profile."""
