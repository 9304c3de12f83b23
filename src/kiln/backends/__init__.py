"""Backends, looked up by name in an explicit table and imported only when used."""

from __future__ import annotations

import importlib

from kiln.backends.base import Backend, Compiled, Runner
from kiln.errors import UsageError

BACKENDS = {
    "onnxruntime": "kiln.backends.onnxruntime",
    "openvino": "kiln.backends.openvino",
    "tensorrt": "kiln.backends.tensorrt",
}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise UsageError(f"no backend named '{name}'", hint=f"available: {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name]).BACKEND


__all__ = ["BACKENDS", "Backend", "Compiled", "Runner", "get_backend"]
