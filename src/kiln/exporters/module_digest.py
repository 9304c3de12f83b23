"""A PyTorch module's fingerprint for the stage cache, where the source is Python (`package.module:callable`, or a
module handed to the API) and no file holds the model.

What a module computes is its classes' code, its tensors, and the plain settings its constructor stored (kernel
sizes, head counts, flags). The digest covers all three: the source file of every class in the module tree (torch's
own classes are covered by the torch version, which every stage key holds; TorchScript modules by their code),
every parameter, buffer and state-dict entry by name, dtype, shape and bytes, and each submodule's attributes
(plain values, arrays, nested modules, content-showing reprs). A class without a readable source file (defined in
a notebook) turns the cache off for the run. What it cannot see is code outside the module that forward() reads (a
global flag, another package's function): `--no-cache` is for a model that depends on that."""

from __future__ import annotations

import builtins
import hashlib
import inspect
from pathlib import Path
from typing import Any

from kiln.artifact.cache import file_digest

PLAIN = (bool, int, float, str, bytes, type(None))


class _Unseen(Exception):
    """Something the model computes with that the digest cannot read: no fingerprint, so no cache."""


def source_digest(source: Any, example_inputs: Any, memo: Path | None) -> str | None:
    """The fingerprint of an opened Python source: its module, its input specs (from --input, or taken from the
    API's example inputs) and those example inputs' values; None where the module cannot be fingerprinted."""
    digest = module_digest(getattr(source, "module", None), memo)
    if digest is None:
        return None
    specs = [(s.name, s.dtype, [(d.name, d.size) for d in s.dims]) for s in getattr(source, "inputs", ())]
    try:
        examples = "" if example_inputs is None else _attribute(example_inputs)
    except Exception:  # noqa: BLE001 - an example kiln cannot read is one it cannot key on: no cache
        return None
    return "module-" + hashlib.sha256(f"{digest}\n{specs!r}\n{examples}".encode()).hexdigest()


def module_digest(model: Any, memo: Path | None) -> str | None:
    """The digest of an nn.Module, or None for what it does not cover (a torch.export program, a class without a
    readable source file, a tensor without plain bytes): the stage cache is then off for the run."""
    import torch

    if not isinstance(model, torch.nn.Module):
        return None
    try:
        return "module-" + _digest(model, memo)
    except Exception:  # noqa: BLE001 - whatever a user's module holds, fingerprinting it must not fail the export
        return None


def _digest(model: Any, memo: Path | None, depth: int = 0) -> str:
    import torch

    if depth > 4:
        raise _Unseen("modules nested in plain containers too deep")
    internal = set(torch.nn.Module().__dict__)
    digest = hashlib.sha256()
    files: dict[str, str] = {}
    for name, sub in model.named_modules(remove_duplicate=False):
        cls = type(sub)
        digest.update(f"module {name} {cls.__module__}.{cls.__qualname__} training={sub.training}\n".encode())
        _class_files(cls, files, memo)
        if isinstance(sub, torch.jit.ScriptModule):  # its forward is TorchScript code, not a Python class's
            digest.update(f"  script {sub.code}\n".encode())
        for key in sorted(set(sub.__dict__) - internal):
            digest.update(f"  {key}={_attribute(sub.__dict__[key], memo=memo, depth=depth)}\n".encode())
        for hooks in ("_forward_hooks", "_forward_pre_hooks"):
            for hook in getattr(sub, hooks, {}).values():
                digest.update(f"  hook {getattr(hook, '__qualname__', type(hook).__qualname__)}\n".encode())
    for kind, tensors in (("parameter", model.named_parameters(remove_duplicate=False)),
                          ("buffer", model.named_buffers(remove_duplicate=False))):
        for name, tensor in tensors:
            _tensor(digest, f"{kind} {name}", tensor)
    for name, value in model.state_dict().items():  # also packed and extra state (quantized modules)
        if not isinstance(value, torch.Tensor):
            digest.update(f"state {name}={_attribute(value, memo=memo, depth=depth)}\n".encode())
    for path in sorted(files):
        digest.update(f"code {path} {files[path]}\n".encode())
    return digest.hexdigest()


def _class_files(cls: type, files: dict[str, str], memo: Path | None) -> None:
    """The source file of the class and its bases, outside torch (whose code the torch version stands for). A class
    whose file cannot be read (defined in a notebook, compiled) cannot be fingerprinted."""
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] == "torch" or getattr(builtins, klass.__qualname__, None) is klass:
            continue
        try:
            source = inspect.getsourcefile(klass)
        except (TypeError, OSError):
            source = None
        if not source or not Path(source).is_file():
            raise _Unseen(f"{klass.__module__}.{klass.__qualname__} has no source file")
        if source not in files:
            files[source] = file_digest(Path(source), memo)


def _attribute(value: Any, depth: int = 0, memo: Path | None = None) -> str:
    """Plain settings by value (also inside tuples, lists, sets and dicts), tensors and arrays by bytes, modules by
    their own digest, functions by name, and any other object by its repr where that shows content (a dataclass,
    a model config), else by its type alone."""
    import numpy as np
    import torch

    if isinstance(value, PLAIN):
        return repr(value)
    if isinstance(value, torch.nn.Module):
        return "module " + _digest(value, memo, depth + 1)
    if isinstance(value, (torch.Tensor, np.ndarray)):
        digest = hashlib.sha256()
        _tensor(digest, "", torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value)
        return "tensor " + digest.hexdigest()
    if depth < 4 and isinstance(value, (tuple, list)):
        return f"{type(value).__name__}[{', '.join(_attribute(v, depth + 1, memo) for v in value)}]"
    if depth < 4 and isinstance(value, (set, frozenset)):  # sorted: a set's order changes with the hash seed
        return f"{type(value).__name__}{{{', '.join(sorted(_attribute(v, depth + 1, memo) for v in value))}}}"
    if depth < 4 and isinstance(value, dict):
        items = sorted((_attribute(k, depth + 1, memo), _attribute(v, depth + 1, memo)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if callable(value) and hasattr(value, "__qualname__"):
        return f"callable {getattr(value, '__module__', '')}.{value.__qualname__}"
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a repr that fails: the type is all there is
        return f"object {kind}"
    return f"object {kind}" if " at 0x" in text else f"object {kind} {text}"


def _tensor(digest, label: str, tensor) -> None:
    import torch

    data = tensor.detach().cpu().contiguous()
    digest.update(f"{label} {data.dtype} {tuple(data.shape)}\n".encode())
    if data.numel():
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
