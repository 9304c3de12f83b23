"""The export stage: write the ONNX graph, check it, and prove it computes what the source computes."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from kiln.calibration import DataContext, Feed, Samples
from kiln.config import ExportConfig
from kiln.errors import ExportError, KilnError, UsageError
from kiln.exporters.base import ExportRecord, Source
from kiln.exporters.shapes import choose_probes, describe, failure, feed_at, spec_dims
from kiln.signature import Signature, default_opset, read_signature


@dataclass(frozen=True)
class ExportedGraph:
    path: Path  # model.onnx (+ model.onnx.data) in the work dir
    signature: Signature
    record: ExportRecord
    check: dict  # numeric comparison with the source at each checked shape
    reference_outputs: tuple[dict[str, np.ndarray], ...] = field(default=(), repr=False)  # source on eval samples
    hints: dict = field(default_factory=dict)  # what the source knows that passes can use (num_heads, hidden_size)
    seconds: float = 0.0

    @property
    def files(self) -> list[Path]:
        extra = self.path.with_name(self.path.name + ".data")
        return [self.path] + ([extra] if extra.exists() else [])


def compare(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray], rtol: float, atol: float) -> dict:
    """Max abs error per output against a tolerance scaled by the reference's magnitude."""
    rows = {}
    for name, ref in reference.items():
        got = actual.get(name)
        if got is None or got.shape != ref.shape:
            rows[name] = {"ok": False, "error": f"shape {None if got is None else list(got.shape)} != {list(ref.shape)}"}
            continue
        ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
        err = float(np.max(np.abs(ref64 - got64))) if ref.size else 0.0
        limit = atol + rtol * float(np.max(np.abs(ref64))) if ref.size else atol
        rows[name] = {"ok": bool(err <= limit), "max_abs_error": err, "tolerance": limit, "shape": list(ref.shape)}
    return rows


def looks_like_transformer(model: onnx.ModelProto) -> bool:
    """Attention (Softmax between MatMuls) plus a normalisation: what transformer-specific passes apply to."""
    ops = {n.op_type for n in model.graph.node}
    return "Softmax" in ops and "MatMul" in ops and bool(ops & {"LayerNormalization", "ReduceMean", "Pow", "Sqrt"})


def _why(row: dict) -> str:
    if "error" in row:
        return row["error"]
    return f"max abs error {row['max_abs_error']:.3g} > {row['tolerance']:.3g}"


def ort_reason(exc: Exception) -> str:
    """The informative part of an ONNX Runtime load error: without the temporary path, the C++ source location
    and the error-code prefix (they fill the one line before the reason, e.g. 'Opset 99 is under development')."""
    text = " ".join(str(exc).split())
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"Load model from \S+ failed:\s*", "", text)
    text = re.sub(r"/onnxruntime_src/\S+:\d+ [^(]*\([^)]*\)\s*", "", text)
    return text.strip()[:300]


def _run_onnx(path: Path) -> "object":
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 4  # a feed the model rejects is reported in kiln's one line, not logged
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _source_outputs(source: Source, feed: Feed, what: str, fix: str) -> dict[str, np.ndarray]:
    """The source model's outputs on `feed`, or one UsageError line naming the shapes, the node and op that failed,
    and what to do: a shape or sample the source cannot run is the user's fact, never a traceback."""
    try:
        return source.run(feed)
    except KilnError:
        raise
    except Exception as exc:  # ONNX Runtime and torch raise their own types for a feed the model rejects
        raise UsageError(f"the source model cannot run {what} ({describe(feed)}): {failure(exc)}", hint=fix) from None


def _first_probe_the_source_runs(source: Source, probes: list) -> tuple[tuple | None, dict]:
    """(label, feed, source outputs) of the first probe the source model runs, and what the report says about it.
    A probe the user named or the data holds must run (else one UsageError line); a derived one that does not is
    reported as skipped, with why."""
    refusals: list[str] = []
    for probe in probes:
        try:
            outputs = source.run(probe.feed)
        except Exception as exc:  # ORT and torch raise their own types; a torch source's is a UsageError
            if not probe.derived or (isinstance(exc, KilnError) and not isinstance(exc, UsageError)):
                if isinstance(exc, KilnError):
                    raise
                raise UsageError(f"the source model cannot run {probe.label} ({describe(probe.feed)}): {failure(exc)}",
                                 hint="give a shape the model runs with --check-shape NAME=DIM,...") from None
            refusals.append(f"{describe(probe.feed)}: {failure(exc)}")
            continue
        return (probe.label, probe.feed, outputs), {"inputs": probe.label, "status": "checked", "reason": None,
                                                   "shapes": {k: list(v.shape) for k, v in probe.feed.items()}}
    if not probes:
        return None, {"inputs": None, "status": "none", "reason": "the model has no dynamic dims"}
    return None, {"inputs": probes[0].label, "status": "skipped", "reason":
                  f"the source model cannot run {'; nor '.join(refusals)[:600]}; checked at the export shape and the "
                  f"data's shapes only (--check-shape NAME=DIM,... names another)"}


def export_graph(source: Source, config: ExportConfig, context: DataContext, workdir: Path,
                 evaluation: Samples, calibration: tuple[Samples, ...] = ()) -> ExportedGraph:
    """Write the graph, check it, and compare it with the source at the export shape, on two evaluation samples and
    at a second shape (shapes: kiln.exporters.shapes)."""
    start = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "model.onnx"
    rng = np.random.default_rng(config.seed)
    real = evaluation if not evaluation.synthetic else next((c for c in calibration if not c.synthetic), None)
    example = feed_at(context, real.feeds[0] if real is not None else {}, {}, rng)
    shape_fix = ("give a shape the model runs with --input NAME=DIM,... or real data with --eval"
                 if real is None else "check the shapes given with --input against the data")
    want = _source_outputs(source, example, "the export shape", shape_fix)
    record = source.to_onnx(path, config, example)
    try:
        onnx.checker.check_model(str(path), full_check=False)
        onnx.shape_inference.infer_shapes_path(str(path), str(path.with_name("inferred.onnx")))
        path.with_name("inferred.onnx").unlink(missing_ok=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported graph fails the ONNX checker: {str(exc).splitlines()[0][:300]}",
                          hint="try the other exporter with --exporter") from None
    model = onnx.load(str(path), load_external_data=False)
    signature = read_signature(model)
    opset = default_opset(model) or record.opset
    if opset != record.opset:  # exporters may settle on another opset than asked; record what is in the file
        record = ExportRecord(record.exporter, opset, record.attempts, record.seconds,
                              record.notes + (f"asked for opset {record.opset}, the exporter wrote {opset}",))
    try:
        session = _run_onnx(path)
    except Exception as exc:  # ORT raises its own exception types on load
        if record.exporter == "copy":  # the user's own ONNX file: no exporter to change
            raise ExportError(f"ONNX Runtime cannot load {Path(source.info.location).name}: {ort_reason(exc)}",
                              hint="check the file's opset and custom-domain operators against this ONNX Runtime "
                                   "(see `kiln targets`)") from None
        raise ExportError(f"ONNX Runtime cannot load the exported graph: {ort_reason(exc)}",
                          hint="try the other exporter with --exporter, or another --opset") from None

    checks: list[tuple[str, Feed, dict | None]] = [("export shape", example, want)]
    checks += [(f"sample {i}", evaluation.feeds[i], None) for i in range(min(2, len(evaluation)))]
    probes = choose_probes(context, example, (evaluation, *calibration),
                           spec_dims(context.signature, config.check_shapes, "--check-shape"), rng)
    probe_check, probe_record = _first_probe_the_source_runs(source, probes)
    checks += [probe_check] if probe_check else []
    report = []
    for label, feed, reference in checks:
        feed = {k: v for k, v in feed.items() if k in signature.input_names}
        if reference is None:
            reference = _source_outputs(source, feed, f"evaluation {label}", "check the evaluation data's shapes "
                                        "and dtypes against the model's inputs")
        try:
            got = dict(zip(signature.output_names, session.run(None, feed)))
        except Exception as exc:
            raise ExportError(f"the exported graph fails at {label} ({describe(feed)}), where the source model runs: "
                              f"{failure(exc)}", hint="try another --exporter or --opset") from None
        rows = compare(reference, got, config.export_rtol, config.export_atol)
        report.append({"inputs": label, "shapes": {k: list(v.shape) for k, v in feed.items()}, "outputs": rows})
        bad = [f"{n} ({_why(r)})" for n, r in rows.items() if not r["ok"]]
        if bad:
            raise ExportError(f"the exported graph does not match the source model at {label}: {'; '.join(bad)}",
                              hint="try --exporter torchscript/dynamo, or loosen --export-rtol if the model is "
                                   "numerically sensitive")
    references = tuple(_source_outputs(source, feed, f"evaluation sample {i}", "check the evaluation data's shapes "
                                       "and dtypes against the model's inputs") for i, feed in enumerate(evaluation.feeds))
    shapes_from = {dim: "--input" if dim in context.given else "data" if real is not None else "default"
                   for dim in context.dims}
    return ExportedGraph(path, signature, record, {"passed": True, "rtol": config.export_rtol,
                                                   "atol": config.export_atol, "checks": report,
                                                   "dims": dict(context.dims), "dims_from": shapes_from,
                                                   "probe": probe_record},
                         references, {**{k: source.info.details.get(k) for k in ("num_heads", "hidden_size")
                                         if source.info.details.get(k)},
                                      "transformer": looks_like_transformer(model)}, time.perf_counter() - start)
