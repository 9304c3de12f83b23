"""Lazy imports of optional dependencies, with the exact install command when one is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from kiln.errors import MissingDependencyError

# module -> the extra that provides it
_EXTRAS = {
    "torch": "torch",
    "onnxscript": "torch",
    "transformers": "huggingface",
    "tokenizers": "huggingface",
    "safetensors": "huggingface",
    "PIL": "images",
    "openvino": "openvino",
    "nncf": "openvino",
    "cryptography": "sign",
}


def require(module: str, *, why: str) -> ModuleType:
    """Import `module` or raise MissingDependencyError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = _EXTRAS.get(top)
        if extra is None:
            raise
        raise MissingDependencyError(
            f"{why} needs the Python package '{top}', which is not installed ({exc})",
            hint=f'pip install -c constraints.txt "modelkiln[{extra}]"',
        ) from exc
