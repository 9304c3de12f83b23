"""kiln: turn a trained model into a measured, deployable artifact for named hardware.

The public API is `export`, `bench` and `load_manifest`. Importing `kiln` imports no heavy
framework: torch, transformers and the backends are loaded only by the stage that needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from kiln.api import bench, export, load_manifest  # noqa: E402

__all__ = ["__version__", "bench", "export", "load_manifest"]
