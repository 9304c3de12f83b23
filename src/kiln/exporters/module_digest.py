"""A PyTorch module's fingerprint for the stage cache, where the source is Python (`package.module:callable`, or a
module handed to the API) and no file holds the model.

What a module computes is its classes' code, its tensors, and the plain settings its constructor stored (kernel
sizes, head counts, flags). The digest covers all three: the source file of every class in the module tree (torch's
own classes are covered by the torch version, which every stage key holds), every parameter and buffer by name,
dtype, shape and bytes, and each submodule's plain attributes. What it cannot see is code outside the module that
forward() reads (a global flag, another package's function): `--no-cache` is for a model that depends on that."""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Any

from kiln.artifact.cache import file_digest

PLAIN = (bool, int, float, str, bytes, type(None))


def module_digest(model: Any, memo: Path | None) -> str | None:
    """The digest of an nn.Module, or None for what it does not cover (a torch.export program)."""
    import torch

    if not isinstance(model, torch.nn.Module):
        return None
    try:
        return _digest(model, memo)
    except (RuntimeError, TypeError):  # a tensor without plain bytes (quantized, sparse): no fingerprint, no cache
        return None


def _digest(model: Any, memo: Path | None) -> str:
    import torch

    internal = set(torch.nn.Module().__dict__)
    digest = hashlib.sha256()
    files: dict[str, str] = {}
    for name, sub in model.named_modules(remove_duplicate=False):
        cls = type(sub)
        digest.update(f"module {name} {cls.__module__}.{cls.__qualname__} training={sub.training}\n".encode())
        _class_files(cls, files, memo)
        for key in sorted(set(sub.__dict__) - internal):
            digest.update(f"  {key}={_attribute(sub.__dict__[key])}\n".encode())
        for hooks in ("_forward_hooks", "_forward_pre_hooks"):
            for hook in getattr(sub, hooks, {}).values():
                digest.update(f"  hook {getattr(hook, '__qualname__', type(hook).__qualname__)}\n".encode())
    for kind, tensors in (("parameter", model.named_parameters(remove_duplicate=False)),
                          ("buffer", model.named_buffers(remove_duplicate=False))):
        for name, tensor in tensors:
            _tensor(digest, f"{kind} {name}", tensor)
    for path in sorted(files):
        digest.update(f"code {path} {files[path]}\n".encode())
    return "module-" + digest.hexdigest()


def _class_files(cls: type, files: dict[str, str], memo: Path | None) -> None:
    """The source file of the class and its bases, outside torch (whose code the torch version stands for)."""
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] in ("torch", "builtins"):
            continue
        try:
            source = inspect.getsourcefile(klass)
        except (TypeError, OSError):
            source = None
        if source and source not in files and Path(source).is_file():
            files[source] = file_digest(Path(source), memo)
        elif not source:
            files.setdefault(f"<{klass.__module__}.{klass.__qualname__}>", "no source file")


def _attribute(value: Any, depth: int = 0) -> str:
    """Plain settings by value (also inside tuples, lists and dicts), tensors by digest, functions by name, and any
    other object by its repr where that shows content (a dataclass, a model config), else by its type alone."""
    import torch

    if isinstance(value, PLAIN):
        return repr(value)
    if isinstance(value, torch.Tensor):
        digest = hashlib.sha256()
        _tensor(digest, "", value)
        return "tensor " + digest.hexdigest()
    if depth < 4 and isinstance(value, (tuple, list)):
        return f"{type(value).__name__}[{', '.join(_attribute(v, depth + 1) for v in value)}]"
    if depth < 4 and isinstance(value, dict):
        items = sorted((repr(k), _attribute(v, depth + 1)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if callable(value) and hasattr(value, "__qualname__"):
        return f"callable {getattr(value, '__module__', '')}.{value.__qualname__}"
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    try:
        text = repr(value)
    except Exception:  # a repr that fails: the type is all there is
        return f"object {kind}"
    return f"object {kind}" if " at 0x" in text else f"object {kind} {text}"


def _tensor(digest, label: str, tensor) -> None:
    import torch

    data = tensor.detach().cpu().contiguous()
    digest.update(f"{label} {data.dtype} {tuple(data.shape)}\n".encode())
    if data.numel():
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
