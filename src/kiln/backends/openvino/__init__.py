"""OpenVINO backend: IR from the checked ONNX graph, NNCF int8 (full) or weight compression (int8/int4),
explicit execution precision on every compiled model, LATENCY-hint runner."""

from __future__ import annotations

import re
import time
from pathlib import Path

from kiln._deps import require
from kiln.backends.base import Compiled
from kiln.backends.openvino.session import OpenVinoRunner, default_settings
from kiln.calibration import Samples
from kiln.config import Plan
from kiln.errors import ExportError
from kiln.exporters import ExportedGraph
from kiln.quiet import quiet
from kiln.signature import Signature, TensorInfo
from kiln.targets import TargetSpec

DEVICE = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU"}


def _convert(graph: ExportedGraph):
    ov = require("openvino", why="the OpenVINO backend")
    try:
        with quiet():
            return ov.convert_model(str(graph.path))
    except Exception as exc:  # OpenVINO's frontends raise OpConversionFailure, GeneralFailure, RuntimeError...
        text = str(exc)
        ops = sorted(set(re.findall(r"(?:operation|op(?:erator)?)[^A-Za-z]+([A-Z][A-Za-z0-9]+)", text)))
        nodes = sorted(set(re.findall(r"node (?:with )?name[:=\s]+['\"]?([^'\"\s,)]+)", text)))[:5]
        where = (f" (ops: {', '.join(ops)}" + (f"; nodes: {', '.join(nodes)}" if nodes else "") + ")") if ops else ""
        first = next((line for line in text.splitlines() if line.strip()), type(exc).__name__)[:300]
        raise ExportError(f"OpenVINO cannot convert the ONNX graph{where}: {first}",
                          hint="use the onnxruntime target for this model, or --exporter to try the other exporter") from None


def _nncf_int8(model, plan: Plan, calibration: Samples, transformer: bool) -> dict:
    nncf = require("nncf", why="int8 quantization with OpenVINO")
    inputs = {i.get_any_name() for i in model.inputs}
    dataset = nncf.Dataset([{k: v for k, v in f.items() if k in inputs} for f in calibration.feeds])
    names = [op.get_friendly_name() for op in model.get_ops()]
    keep = [n for n in names if any(p == n or p in n for p in plan.quantization.keep_fp32)]
    kwargs = {}
    alpha = plan.quantization.smooth_alpha
    if not transformer:
        # full bias correction: EfficientNet-Lite0 top-1 agreement 78 % -> 83 % (100 % where fp32 is confident)
        kwargs["fast_bias_correction"] = False
    if transformer:
        # NNCF's transformer default smooths MatMul inputs with alpha 0.95; 0.8 measured better on MiniLM
        # (minimum sentence cosine 0.984 -> 0.995), as with kiln's own smoothing for ONNX Runtime.
        from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                           AdvancedSmoothQuantParameters)

        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
        if alpha:
            kwargs["advanced_parameters"] = AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha))
    if keep:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=keep, validate=False)
    with quiet():
        quantized = nncf.quantize(model, dataset, subset_size=len(calibration), **kwargs)
    return quantized, {"mode": "static", "tool": "nncf.quantize", "model_type": "transformer" if transformer else "default",
                       "smooth_quant_alpha": alpha if transformer else None,
                       "bias_correction": "fast" if transformer else "full",
                       "calibration_samples": len(calibration), "kept_fp32": keep, "weights": "int8 per-channel symmetric",
                       "activations": "int8 per-tensor, calibrated"}


def _nncf_weights(model, bits: int) -> tuple:
    nncf = require("nncf", why="weight compression with OpenVINO")
    mode = nncf.CompressWeightsMode.INT8_ASYM if bits == 8 else nncf.CompressWeightsMode.INT4_SYM
    kwargs = {} if bits == 8 else {"group_size": 128, "ratio": 1.0}
    with quiet():
        compressed = nncf.compress_weights(model, mode=mode, **kwargs)
    return compressed, {"mode": "weights", "tool": "nncf.compress_weights", "weights": mode.value, **kwargs}


class OpenVinoBackend:
    name = "openvino"

    def check_environment(self, target: TargetSpec) -> None:
        require("openvino", why=f"target '{target.name}'")

    def compile(self, graph: ExportedGraph, plan: Plan, workdir: Path, calibration: Samples | None,
                example=None) -> Compiled:
        ov = require("openvino", why="the OpenVINO backend")
        start = time.perf_counter()
        root = workdir / "ov-compiled"
        (root / "openvino").mkdir(parents=True, exist_ok=True)
        details: dict = {"steps": [], "conversion": "ov.convert_model from the exported ONNX"}
        t0 = time.perf_counter()
        model = _convert(graph)
        details["steps"].append({"step": "convert", "seconds": round(time.perf_counter() - t0, 3)})
        t0 = time.perf_counter()
        if plan.precision == "int8":
            if calibration is None or not len(calibration):
                raise ExportError("int8 needs calibration samples and none were loaded", hint="pass --calibration PATH")
            model, details["quantization"] = _nncf_int8(model, plan, calibration, bool(graph.hints.get("transformer")))
        elif plan.precision in ("int8-weights", "int4-weights"):
            model, details["quantization"] = _nncf_weights(model, 8 if plan.precision == "int8-weights" else 4)
        if "quantization" in details:
            details["steps"].append({"step": details["quantization"]["tool"], "seconds": round(time.perf_counter() - t0, 3)})
        target = root / "openvino" / "model.xml"
        ov.save_model(model, str(target), compress_to_fp16=plan.precision == "fp16")
        settings = default_settings(DEVICE[plan.device], plan.precision, plan.threads)
        signature = Signature(
            tuple(TensorInfo(t.name, t.dtype, t.shape) for t in graph.signature.inputs),
            tuple(TensorInfo(t.name, t.dtype, t.shape) for t in graph.signature.outputs))
        return Compiled("openvino", root, target, signature, settings, details, time.perf_counter() - start)

    def runner(self, model: Path, signature: Signature, settings: dict) -> OpenVinoRunner:
        return OpenVinoRunner(model, signature, settings)


BACKEND = OpenVinoBackend()
