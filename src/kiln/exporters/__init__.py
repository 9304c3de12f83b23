"""Exporters: any supported source becomes a checked ONNX graph that matches the source model.

`open_source` recognises what the user gave; `export_graph` writes the ONNX, runs the checker and
shape inference, and compares it numerically with the source at the export shape and at another one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.config import ExportConfig
from kiln.errors import UsageError
from kiln.exporters.base import ExportRecord, Source, SourceInfo
from kiln.exporters.graph import ExportedGraph, export_graph

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
TORCHSCRIPT_SUFFIXES = (".jit", ".torchscript", ".ts")  # and TorchScript archives saved as .pt/.pth


def open_source(config: ExportConfig, module: Any = None, example_inputs: Any = None) -> Source:
    """Recognise the source by what it is: a module object, a callable spec, or a path's contents."""
    source = _open(config, module, example_inputs)
    if (config.constants or config.zipmap_as_tensor) and source.info.kind != "onnx":
        option = "--constant" if config.constants else "--zipmap-as-tensor"
        raise UsageError(f"{option} applies to ONNX sources; {config.source} is a {source.info.kind} source",
                         hint="give a PyTorch model's fixed arguments in a wrapper module's forward() instead")
    return source


def _open(config: ExportConfig, module: Any, example_inputs: Any) -> Source:
    if module is not None:
        from kiln.exporters.torch_module import from_module

        return from_module(module, example_inputs, config.inputs)
    text = config.source
    path = Path(text)
    if not path.exists():
        if ":" in text and not text.startswith((".", "/")) and "/" not in text.partition(":")[0]:
            from kiln.exporters.torch_module import from_callable

            return from_callable(text, config.inputs)
        raise UsageError(f"model path {text} does not exist",
                         hint="give an .onnx file, a .pt2 program, a Hugging Face folder, or package.module:callable")
    if path.is_dir():
        if (path / "config.json").is_file():
            from kiln.exporters.huggingface import open_huggingface

            return open_huggingface(path, config)
        onnx_files = sorted(path.glob("*.onnx"))
        if len(onnx_files) == 1:
            path = onnx_files[0]
        else:
            raise UsageError(f"folder {path} is not a model: no config.json and no single .onnx file",
                             hint="give a Hugging Face folder (with config.json) or the .onnx file itself")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from kiln.exporters.onnx_file import OnnxFileSource

        return OnnxFileSource(path, config.constants, config.zipmap_as_tensor)
    if suffix == ".pt2":
        from kiln.exporters.torch_module import from_exported_program

        return from_exported_program(path, config.inputs)
    if suffix in TORCHSCRIPT_SUFFIXES or suffix in PICKLE_SUFFIXES:
        from kiln.exporters.torch_module import from_torchscript, is_torchscript

        if is_torchscript(path):
            return from_torchscript(path, config.inputs)
    if suffix in PICKLE_SUFFIXES:
        from kiln.exporters.torch_module import from_pickle

        return from_pickle(path, config.inputs, config.trust_pickle)
    raise UsageError(f"{path.name} is not a model kiln can read (suffix '{suffix or 'none'}')",
                     hint="give an .onnx file, a .pt2 program, a TorchScript file, a Hugging Face folder, or "
                          "package.module:callable")


__all__ = ["ExportRecord", "ExportedGraph", "Source", "SourceInfo", "export_graph", "open_source"]
