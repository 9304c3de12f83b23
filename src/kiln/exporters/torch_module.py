"""PyTorch sources: an nn.Module, a `package.module:callable`, a torch.export `.pt2`, a trusted pickle.

Export tries torch's recommended exporter first (dynamo, via torch.export) and falls back to the
TorchScript exporter when it fails; the manifest records which one ran and why the other did not.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from kiln._deps import require
from kiln.calibration.samples import DataContext, Feed
from kiln.config import ExportConfig, InputSpec
from kiln.errors import ExportError, UsageError
from kiln.exporters.base import ExportRecord, SourceInfo, sha256_file
from kiln.quiet import quiet
from kiln.signature import Signature, TensorInfo


def _torch():
    return require("torch", why="exporting a PyTorch model")


def flatten_outputs(value: Any) -> list:
    """Tensors of a module's output in a stable order (tuple, list, dict, ModelOutput)."""
    torch = _torch()
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict) or hasattr(value, "to_tuple"):
        items = value.to_tuple() if hasattr(value, "to_tuple") else tuple(value.values())
        return [t for item in items for t in flatten_outputs(item)]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in flatten_outputs(item)]
    return []


class TorchSource:
    """An in-memory module (or ExportedProgram) with named, typed inputs and named outputs."""

    def __init__(self, module: Any, inputs: tuple[InputSpec, ...], info: SourceInfo,
                 output_names: tuple[str, ...] | None = None, output_axes: dict[str, dict[int, str]] | None = None,
                 int_high: dict[str, int] | None = None):
        if not inputs:
            raise UsageError(f"{info.location}: the input names and shapes are not known",
                             hint="give each input as --input NAME=DIM,DIM,...[:DTYPE], e.g. --input x=batch=1,3,224,224")
        self.module = module
        self.inputs = inputs
        self.info = info
        self.extra_files: dict[str, Path] = {}
        self._output_names = output_names
        self.output_axes = output_axes or {}
        self.int_high = int_high or _embedding_bounds(module, inputs)
        # Exporter order and opset when the user leaves them to kiln ("auto"): torch's recommended exporter
        # first; sources with better-measured choices (Hugging Face encoders) override these.
        self.preferred_exporters: tuple[str, ...] = ("dynamo", "torchscript")
        self.default_opset = 18
        self.primary_outputs: tuple[str, ...] = ()  # outputs the accuracy gate checks by default (empty: all)
        self.text_encoder = None  # set by sources that know their tokenizer
        self.image_preprocessing = None  # set by sources that know their image preprocessing

    # -- describing -----------------------------------------------------------------------------
    def _callable(self):
        torch = _torch()
        if isinstance(self.module, torch.export.ExportedProgram):
            return self.module.module()
        return self.module

    def output_names(self, count: int) -> tuple[str, ...]:
        if self._output_names and len(self._output_names) == count:
            return self._output_names
        return ("output",) if count == 1 else tuple(f"output_{i}" for i in range(count))

    def signature_hint(self) -> Signature:
        ins = tuple(TensorInfo(s.name, s.dtype, tuple(d.name or d.size for d in s.dims)) for s in self.inputs)
        return Signature(ins, ())

    def data_context(self, config: ExportConfig) -> DataContext:
        dims = {d.name: d.size for s in self.inputs for d in s.dims if d.name}
        typed = {d.name for s in config.inputs for d in s.dims if d.name}  # sized by the user: data never overrides
        return DataContext(signature=self.signature_hint(), dims=dims, given=frozenset(typed), text_encoder=self.text_encoder,
                           image_preprocessing=config.image_preprocessing or self.image_preprocessing,
                           int_high=self.int_high, sequence_length=config.sequence_length)

    # -- running --------------------------------------------------------------------------------
    def _args(self, feed: Feed) -> tuple:
        torch = _torch()
        missing = [s.name for s in self.inputs if s.name not in feed]
        if missing:
            raise UsageError(f"sample lacks input(s) {', '.join(missing)}", hint="data must provide every model input")
        return tuple(torch.from_numpy(np.ascontiguousarray(feed[s.name])) for s in self.inputs)

    def run(self, feed: Feed) -> dict[str, np.ndarray]:
        torch = _torch()
        with torch.inference_mode():
            try:
                raw = self._callable()(*self._args(feed))
            except (RuntimeError, TypeError, ValueError, IndexError) as exc:
                missing = "missing value for argument" in str(exc) or "missing" in str(exc) and "argument" in str(exc)
                raise UsageError(f"the PyTorch model rejected inputs {_describe(feed)}: {_first_line(exc)}",
                                 hint="forward() takes an argument that is not one of the --input tensors: wrap the "
                                      "model in a module whose forward takes only tensors, and give it as "
                                      "package.module:callable" if missing else
                                 "check --input names, shapes and dtypes against the model's forward()") from None
        tensors = flatten_outputs(raw)
        if not tensors:
            raise ExportError("the PyTorch model returned no tensors", hint="forward() must return tensors")
        names = self.output_names(len(tensors))
        return {n: t.detach().float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()
                for n, t in zip(names, tensors)}

    # -- exporting ------------------------------------------------------------------------------
    def to_onnx(self, path: Path, config: ExportConfig, example: Feed) -> ExportRecord:
        order = self.preferred_exporters if config.exporter == "auto" else (config.exporter,)
        opset = config.opset or self.default_opset
        args = self._args(example)
        out_names = list(self.run(example))
        attempts: list[dict] = []
        start = time.perf_counter()
        for exporter in order:
            t0 = time.perf_counter()
            try:
                with quiet():
                    if exporter == "dynamo":
                        self._export_dynamo(path, args, out_names, opset)
                    else:
                        self._export_torchscript(path, args, out_names, opset)
                attempts.append({"exporter": exporter, "ok": True, "seconds": round(time.perf_counter() - t0, 3)})
                return ExportRecord(exporter, opset, tuple(attempts), time.perf_counter() - start)
            except Exception as exc:  # exporters raise many unrelated types; each is recorded, then re-raised below
                attempts.append({"exporter": exporter, "ok": False, "error": _first_line(exc)[:500],
                                 "seconds": round(time.perf_counter() - t0, 3)})
                for leftover in (path, path.with_name(path.name + ".data")):
                    leftover.unlink(missing_ok=True)
        tried = "; ".join(f"{a['exporter']}: {a['error']}" for a in attempts)
        raise ExportError(f"every torch exporter failed ({tried})",
                          hint="try --exporter torchscript or --exporter dynamo, or simplify the model's forward()")

    def _export_dynamo(self, path: Path, args: tuple, out_names: list[str], opset: int) -> None:
        torch = _torch()
        require("onnxscript", why="the dynamo ONNX exporter")
        dims: dict[str, Any] = {}
        shapes = []
        for spec in self.inputs:
            axes = {}
            for axis, dim in enumerate(spec.dims):
                if dim.name:
                    axes[axis] = dims.setdefault(dim.name, torch.export.Dim(_safe(dim.name)))
            shapes.append(axes or None)
        program = torch.onnx.export(self.module if isinstance(self.module, torch.export.ExportedProgram) else self.module,
                                    args, dynamo=True, input_names=[s.name for s in self.inputs],
                                    output_names=out_names, dynamic_shapes=tuple(shapes), opset_version=opset,
                                    optimize=True, verbose=False)
        external = _weight_bytes(program.model_proto) > 1_800_000_000
        program.save(str(path), external_data=external)
        _name_dims(path, self.inputs, self.output_axes)

    def _export_torchscript(self, path: Path, args: tuple, out_names: list[str], opset: int) -> None:
        torch = _torch()
        module = self._callable()
        axes = {s.name: s.dynamic_axes for s in self.inputs if s.dynamic_axes}
        axes.update({n: a for n, a in self.output_axes.items() if n in out_names})
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=[s.name for s in self.inputs],
                          output_names=out_names, dynamic_axes=axes, opset_version=min(opset, 20),
                          do_constant_folding=True)
        _name_dims(path, self.inputs, self.output_axes)


def _embedding_bounds(module: Any, inputs: tuple[InputSpec, ...]) -> dict[str, int]:
    """Synthetic integer inputs must index every embedding table: bound them by the smallest one."""
    torch = _torch()
    sizes = [m.num_embeddings for m in module.modules() if isinstance(m, torch.nn.Embedding)] \
        if isinstance(module, torch.nn.Module) else []
    if not sizes:
        return {}
    return {s.name: min(sizes) for s in inputs if s.dtype.startswith(("int", "uint"))}


def _name_dims(path: Path, inputs: tuple[InputSpec, ...], output_axes: dict[str, dict[int, str]]) -> None:
    """Give dynamic dims the user's names (exporters invent s0, s1...), in inputs and known outputs."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    rename: dict[str, str] = {}
    changed = False
    for value in model.graph.input:
        spec = next((s for s in inputs if s.name == value.name), None)
        if spec is None:
            continue
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            name = spec.dims[axis].name if axis < len(spec.dims) else None
            if name and dim.dim_param != name:
                if dim.dim_param:
                    rename[dim.dim_param] = name
                dim.dim_param = name
                changed = True
    inferred = _inferred_output_dims(model, {d.name for s in inputs for d in s.dims if d.name})
    for value in model.graph.output:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            wanted = (output_axes.get(value.name, {}).get(axis) or rename.get(dim.dim_param)
                      or inferred.get((value.name, axis)))
            if wanted and dim.dim_param != wanted:
                dim.dim_param = wanted
                changed = True
    if changed:  # external tensors keep their references, so the data file next to it stays valid
        onnx.save_model(model, str(path))


def _inferred_output_dims(model, known: set[str]) -> dict[tuple[str, int], str]:
    """Output dims that shape inference traces back to a named input dim (TorchScript names them
    `Negoutput_dim_0` and the like)."""
    import copy

    import onnx

    probe = copy.deepcopy(model)
    for value in probe.graph.output:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param and dim.dim_param not in known:
                dim.Clear()
    try:
        probe = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    except (onnx.shape_inference.InferenceError, ValueError):
        return {}
    return {(value.name, axis): dim.dim_param for value in probe.graph.output
            for axis, dim in enumerate(value.type.tensor_type.shape.dim) if dim.dim_param in known}


def _weight_bytes(model) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _first_line(exc: BaseException) -> str:
    """The innermost cause's first line: exporters wrap the real reason in generic messages."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text.splitlines()[0]}"


def _describe(feed: Feed) -> str:
    return ", ".join(f"{k}{list(v.shape)}:{v.dtype}" for k, v in feed.items())


# -- opening the various PyTorch source forms ---------------------------------------------------------

def from_module(module: Any, example_inputs: Any, inputs: tuple[InputSpec, ...]) -> TorchSource:
    """A module handed to the Python API. Input specs default to the example inputs' shapes (static)."""
    torch = _torch()
    if not inputs and example_inputs is not None:
        inputs = _specs_from_examples(module, example_inputs)
    module.eval()
    return TorchSource(module, inputs, SourceInfo("torch-module", type(module).__qualname__, None,
                                                  {"parameters": sum(p.numel() for p in module.parameters())}
                                                  if isinstance(module, torch.nn.Module) else {}))


def _specs_from_examples(module: Any, example_inputs: Any) -> tuple[InputSpec, ...]:
    import inspect

    from kiln.config import Dim

    if isinstance(example_inputs, dict):
        named = list(example_inputs.items())
    else:
        values = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        try:
            params = [p for p in inspect.signature(module.forward).parameters if p != "self"]
        except (TypeError, ValueError):
            params = []
        named = [(params[i] if i < len(params) else f"input_{i}", v) for i, v in enumerate(values)]
    specs = []
    for name, value in named:
        dims = tuple(Dim(size=int(s), name="batch" if axis == 0 else None) for axis, s in enumerate(value.shape))
        specs.append(InputSpec(name=name, dims=dims, dtype=str(value.dtype).replace("torch.", "")))
    return tuple(specs)


def from_callable(spec: str, inputs: tuple[InputSpec, ...]) -> TorchSource:
    """`package.module:callable`, returning an nn.Module when called with no arguments."""
    torch = _torch()
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:  # like uvicorn and gunicorn: the user's own modules resolve from here
        sys.path.insert(0, os.getcwd())
    # the user's code may print: stdout belongs to kiln's --json output, so its prints go to stderr
    with contextlib.redirect_stdout(sys.stderr):
        try:
            target = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise UsageError(f"cannot import '{spec}': {_first_line(exc)}",
                             hint="give an importable package.module:callable (is the package installed, or on "
                                  "PYTHONPATH?)") from None
        model = target() if callable(target) and not isinstance(target, torch.nn.Module) else target
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"'{spec}' gave a {type(model).__name__}, not a torch.nn.Module",
                         hint="point at a callable that returns the model")
    model.eval()
    return TorchSource(model, inputs, SourceInfo("torch-callable", spec, None,
                                                 {"parameters": sum(p.numel() for p in model.parameters())}))


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip whose entries hold TorchScript code (`<name>/code/...`), not a pickled object."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist()[:10_000])
    except (zipfile.BadZipFile, OSError):
        return False


def from_torchscript(path: Path, inputs: tuple[InputSpec, ...]) -> TorchSource:
    """A TorchScript file (torch.jit.save): loaded by torch's TorchScript loader, which runs the archive's own
    TorchScript, not arbitrary Python (no pickle consent needed); exported by the TorchScript exporter, since
    torch.export does not take ScriptModules."""
    torch = _torch()
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError variants for damaged archives
        raise UsageError(f"{path.name} is not a loadable TorchScript file ({_first_line(exc)[:200]})",
                         hint="save it with torch.jit.save(torch.jit.script(model), path)") from None
    module.eval()
    source = TorchSource(module, inputs, SourceInfo("torchscript", str(path), sha256_file(path),
                                                    {"parameters": sum(p.numel() for p in module.parameters())}))
    source.preferred_exporters = ("torchscript",)
    return source


def from_exported_program(path: Path, inputs: tuple[InputSpec, ...]) -> TorchSource:
    torch = _torch()
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # torch.export.load raises assorted types for bad archives
        raise UsageError(f"{path.name} is not a loadable torch.export program ({_first_line(exc)})",
                         hint="save it with torch.export.save(program, 'model.pt2')") from None
    if not inputs:
        inputs = _specs_from_program(program)
    return TorchSource(program, inputs, SourceInfo("torch-export", str(path), sha256_file(path)))


def _specs_from_program(program) -> tuple[InputSpec, ...]:
    """Names from the program's user inputs; dynamic dims from its symbolic shapes."""
    from kiln.config import Dim

    examples = getattr(program, "example_inputs", None)
    names = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    if not examples:
        raise UsageError("the .pt2 program carries no example inputs", hint="give each input with --input")
    flat = list(examples[0]) + list(examples[1].values())
    specs = []
    symbols: dict[str, str] = {}  # torch's internal symbol (s34) -> a stable name; shared symbols share it
    for name, value in zip(names, flat):
        fake = placeholders[name].meta.get("val")
        dims = []
        for axis, size in enumerate(value.shape):
            symbolic = fake is not None and not str(fake.shape[axis]).isdigit()
            if symbolic:
                symbol = str(fake.shape[axis])
                symbols.setdefault(symbol, "batch" if axis == 0 and "batch" not in symbols.values()
                                   else f"{name}_dim{axis}")
            dims.append(Dim(size=int(size), name=symbols[str(fake.shape[axis])] if symbolic else None))
        specs.append(InputSpec(name=name, dims=tuple(dims), dtype=str(value.dtype).replace("torch.", "")))
    return tuple(specs)


def from_pickle(path: Path, inputs: tuple[InputSpec, ...], trusted: bool) -> TorchSource:
    if not trusted:
        raise UsageError(f"{path.name} is a pickle: loading it runs arbitrary code from the file",
                         hint="pass --trust-pickle if you trust its origin, or save the model with torch.export.save (.pt2)")
    torch = _torch()
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling raises anything
        raise UsageError(f"cannot unpickle {path.name}: {_first_line(exc)}", hint="is the file complete?") from None
    if isinstance(obj, torch.export.ExportedProgram):
        return TorchSource(obj, inputs or _specs_from_program(obj), SourceInfo("torch-pickle", str(path), sha256_file(path)))
    if not isinstance(obj, torch.nn.Module):
        what = "a state dict (weights only)" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise UsageError(f"{path.name} holds {what}, not a model",
                         hint="give the model as package.module:callable and load the weights there")
    obj.eval()
    return TorchSource(obj, inputs, SourceInfo("torch-pickle", str(path), sha256_file(path),
                                               {"parameters": sum(p.numel() for p in obj.parameters())}))
