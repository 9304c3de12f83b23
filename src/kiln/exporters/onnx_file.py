"""ONNX files as a source: checked, external data confined to the model's folder, copied into the work dir."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import onnx

from kiln.calibration.samples import DataContext, Feed
from kiln.config import ConstantInput, ExportConfig
from kiln.errors import ExportError, UsageError
from kiln.exporters.base import ExportRecord, SourceInfo, sha256_file
from kiln.exporters.onnx_rewrites import bind_constants, constant_feeds, is_zipmap_output, zipmaps_as_tensors
from kiln.exporters.shapes import is_batch, spec_dims
from kiln.signature import Signature, default_opset, read_signature


def external_data_files(model: onnx.ModelProto, folder: Path) -> list[Path]:
    """The external data files the model refers to; each must exist and lie inside `folder`."""
    files: dict[Path, None] = {}
    root = folder.resolve()
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location", "")
        target = (folder / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(root):
            raise UsageError(f"tensor '{tensor.name}' points at external data '{location}' outside the model's folder",
                             hint="refusing to read files outside the model's folder; move the data next to the model")
        if not target.is_file():
            raise UsageError(f"external data file '{location}' for tensor '{tensor.name}' is missing",
                             hint=f"put {location} next to the .onnx file")
        try:
            offset, length = int(entries.get("offset", 0)), int(entries.get("length", 0))
        except ValueError:
            offset = length = -1
        if offset < 0 or length < 0:
            raise UsageError(f"tensor '{tensor.name}' declares external data offset '{entries.get('offset')}' and "
                             f"length '{entries.get('length')}'", hint="the .onnx file is damaged; export it again")
        end = offset + length
        if end > target.stat().st_size:
            raise UsageError(f"external data file '{location}' is shorter than tensor '{tensor.name}' needs",
                             hint="the data file is truncated; copy it again")
        files[target] = None
    return list(files)


def load_onnx(path: Path, *, with_data: bool = True) -> tuple[onnx.ModelProto, list[Path]]:
    """Load and validate an ONNX file, turning every decode failure into one clear UsageError."""
    if not path.is_file():
        raise UsageError(f"{path.name} is not a regular file", hint="give an .onnx file (not a pipe or a device)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, and others on truncated files
        raise UsageError(f"{path.name} is not a readable ONNX model ({type(exc).__name__})",
                         hint="the file is corrupt or truncated, or not ONNX; export it again") from None
    if not model.graph.node and not model.graph.output:
        raise UsageError(f"{path.name} holds no ONNX graph", hint="the file is not an ONNX model; export it again")
    data_files = external_data_files(model, path.parent)
    if with_data:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    return model, data_files


def _refuse_non_tensor_values(model: onnx.ModelProto, name: str) -> None:
    """Inputs and outputs must be tensors: a sequence of maps (scikit-learn's ZipMap), a sequence or an optional has
    no shape to compare, quantize or bind. One line naming the value and the option that avoids it."""
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for value in values:
            which = value.type.WhichOneof("value")
            if which not in (None, "tensor_type"):
                what = {"sequence_type": "a sequence", "map_type": "a map", "optional_type": "an optional",
                        "sparse_tensor_type": "a sparse tensor"}.get(which, which)
                hint = "convert the model with tensor outputs, or remove that output from the graph"
                if kind == "output" and is_zipmap_output(model, value.name):
                    what = "a sequence of maps (scikit-learn's ZipMap)"
                    hint = ("pass --zipmap-as-tensor to ship the probability tensor it wraps (or convert with skl2onnx "
                            "options={id(model): {'zipmap': False}})")
                raise UsageError(f"{name}: {kind} '{value.name}' is {what}, not a tensor; kiln compares, quantizes and "
                                 f"binds tensors only", hint=hint)


def _declares_zero(model: onnx.ModelProto) -> bool:
    return any(d.HasField("dim_value") and d.dim_value == 0
               for value in model.graph.input for d in value.type.tensor_type.shape.dim)


def _zero_dims_named(model: onnx.ModelProto, signature) -> onnx.ModelProto:
    """The model with every input dim declared 0 replaced by the name kiln reads it as."""
    names = {t.name: t.shape for t in signature.inputs}
    for value in model.graph.input:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value == 0 and value.name in names:
                dim.dim_param = names[value.name][axis]
    return model


class OnnxFileSource:
    """An ONNX file. The reference is the file itself, run by ONNX Runtime with optimizations off."""

    def __init__(self, path: Path, constants: tuple[ConstantInput, ...] = (), zipmap_as_tensor: bool = False):
        self.path = path
        self.model, self.data_files = load_onnx(path, with_data=False)
        try:
            onnx.checker.check_model(str(path))
        except onnx.checker.ValidationError as exc:
            first = str(exc).strip().splitlines()[0][:300]
            raise UsageError(f"{path.name} fails the ONNX checker: {first}",
                             hint="fix the graph or export it again") from None
        zipmapped: list[str] = []
        if zipmap_as_tensor:
            self.model, zipmapped = zipmaps_as_tensors(self.model)
        _refuse_non_tensor_values(self.model, path.name)
        self.constants = constant_feeds(self.model, constants, path.name)
        full = read_signature(self.model)
        self.signature = Signature(tuple(t for t in full.inputs if t.name not in self.constants), full.outputs)
        self.info = SourceInfo("onnx", str(path), sha256_file(path), {
            "external_data_files": [p.name for p in self.data_files],
            "opset": {o.domain or "ai.onnx": o.version for o in self.model.opset_import},
            "producer": f"{self.model.producer_name} {self.model.producer_version}".strip(),
        })
        self.extra_files: dict[str, Path] = {}
        self._session = None
        # The graph the source run executes, when it is not the file itself: ONNX Runtime holds a declared 0 to size
        # 0, which kiln reads as "any size" as the converters that write it mean it, so such inputs get kiln's dim
        # names; ZipMap outputs become tensors on request. Both in memory; constants are fed, not bound, here.
        self.notes: list[str] = []
        self._reference: onnx.ModelProto | None = None
        if _declares_zero(self.model) or zipmapped:
            self._reference = load_onnx(path, with_data=True)[0]
            if zipmapped:
                self._reference, _ = zipmaps_as_tensors(self._reference)
                self.notes.append(f"ZipMap output(s) {', '.join(zipmapped)} written as probability tensors")
            if _declares_zero(self._reference):
                self._reference = _zero_dims_named(self._reference, self.signature)
                self.notes.append("input dims declared 0 written as named dynamic dims")
        self.binding: dict = {}  # what binding the constants folded (the report's export.constants)

    def data_context(self, config: ExportConfig) -> DataContext:
        # every named dynamic dim gets a size: the user's (--input), else the data's (pipeline: with_data_dims),
        # else a default (batch-like 1, others 2)
        given = spec_dims(self.signature, config.inputs, "--input", self.path.name)
        dims: dict[str, int] = {d: 1 if is_batch(d) else 2 for t in self.signature.inputs
                                for d in t.shape if isinstance(d, str)}
        return DataContext(signature=self.signature, dims={**dims, **given}, given=frozenset(given),
                           image_preprocessing=config.image_preprocessing, sequence_length=config.sequence_length,
                           int_high=self._gather_bounds(), constants=self.constants)

    def _gather_bounds(self) -> dict[str, int]:
        """Integer inputs that feed Gather on a constant table (embeddings) must stay below its size."""
        tables = {t.name: t.dims[0] for t in self.model.graph.initializer if t.dims}
        bounds: dict[str, int] = {}
        for node in self.model.graph.node:
            if node.op_type == "Gather" and len(node.input) > 1 and node.input[0] in tables:
                name = node.input[1]
                if name in self.signature.input_names:
                    bounds[name] = min(bounds.get(name, tables[node.input[0]]), tables[node.input[0]])
        return bounds

    def run(self, feed: Feed) -> dict[str, np.ndarray]:
        if self._session is None:
            import onnxruntime as ort

            from kiln.exporters.graph import ort_reason

            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            options.log_severity_level = 4  # a feed the model rejects is reported in kiln's one line, not logged
            model = self._reference.SerializeToString() if self._reference is not None else str(self.path)
            try:
                self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # ORT's own exception types: the file, not a feed, is what it refuses
                raise ExportError(f"ONNX Runtime cannot load {self.path.name}: {ort_reason(exc)}",
                                  hint="check the file's opset and custom-domain operators against this ONNX "
                                       "Runtime (see `kiln targets`)") from None
        outputs = self._session.run(None, {**feed, **self.constants})
        return dict(zip(self.signature.output_names, outputs))

    def to_onnx(self, path: Path, config: ExportConfig, example: Feed) -> ExportRecord:
        start = time.perf_counter()
        if self._reference is not None or self.constants:
            model = self._reference if self._reference is not None else load_onnx(self.path, with_data=True)[0]
            notes = list(self.notes)
            if self.constants:
                model, self.binding = bind_constants(model, self.constants)
                folded = self.binding["control_flow_folded"]
                notes.append(f"bound {', '.join(f'{n}={v}' for n, v in self.binding['bound'].items())}; folded away: "
                             f"{', '.join(folded) if folded else 'no If/Loop/Scan'}")
            onnx.save_model(model, str(path), save_as_external_data=bool(self.data_files),
                            all_tensors_to_one_file=True, location=path.name + ".data", size_threshold=1024)
            return ExportRecord("copy", default_opset(model), seconds=time.perf_counter() - start, notes=tuple(notes))
        if self.data_files:
            model, _ = load_onnx(self.path, with_data=True)
            onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=path.name + ".data", size_threshold=1024)
        else:
            shutil.copyfile(self.path, path)
        return ExportRecord("copy", default_opset(self.model), seconds=time.perf_counter() - start)
