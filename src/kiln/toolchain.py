"""Versions of the tools that shaped an artifact, read from installed distributions (no imports)."""

from __future__ import annotations

import platform
from importlib import metadata

_DISTRIBUTIONS = ("onnx", "onnxruntime", "onnxruntime-genai", "numpy", "torch", "transformers", "onnxscript", "tokenizers",
                  "openvino", "nncf", "pydantic", "tensorrt", "tensorrt-rtx-cu12-bindings", "tensorrt-rtx")


def toolchain_versions() -> dict[str, str]:
    import kiln

    versions = {"kiln": kiln.__version__, "python": platform.python_version()}
    for name in _DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
