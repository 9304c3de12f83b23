"""The Python API: export a model, re-measure an artifact, read a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.config import BenchSettings, ExportConfig


def export(model: Any, config: ExportConfig | None = None, *, example_inputs: Any = None, progress: bool = False,
           **settings: Any):
    """Export `model` (a path, `package.module:callable`, or an nn.Module) into an artifact.

    Settings are ExportConfig fields (out=..., target=..., precision=...), or pass a whole `config`.
    Returns the pipeline Result (out, report, manifest). Raises KilnError subclasses on bad input.
    """
    from kiln.pipeline import run
    from kiln.progress import Progress

    is_path = isinstance(model, (str, Path))
    if config is None:
        config = ExportConfig(source=str(model) if is_path else type(model).__qualname__, **settings)
    elif settings:
        config = config.model_copy(update=settings)
    return run(config, module=None if is_path else model, example_inputs=example_inputs,
               progress=Progress(enabled=progress))


def bench(artifact: str | Path, settings: BenchSettings | None = None, *, threads: int | None = None) -> dict:
    """Re-measure an existing artifact with the runtime settings it was measured with."""
    from kiln.bench_artifact import bench_artifact

    return bench_artifact(Path(artifact), settings or BenchSettings(), threads=threads)


def load_manifest(artifact: str | Path) -> dict:
    from kiln.artifact import load_manifest as _load

    return _load(Path(artifact))
