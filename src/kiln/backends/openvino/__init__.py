"""OpenVINO backend: IR from the checked ONNX graph, NNCF int8 (full) or weight compression (int8/int4),
explicit execution precision on every compiled model, LATENCY-hint runner and THROUGHPUT-hint measurement,
and optionally the compiled model cached in the artifact."""

from __future__ import annotations

import time
from pathlib import Path

from kiln._deps import require
from kiln.backends.base import Compiled
from kiln.backends.openvino.convert import CONVERSION, convert_onnx
from kiln.backends.openvino.quantize import compress_weights, quantize_int8
from kiln.passes.ml_ops import lower_ml_ops
from kiln.backends.openvino.static_shapes import fix_dynamic_ranks
from kiln.backends.openvino.session import (CACHE_DIR, OpenVinoRunner, compile_model, default_settings,
                                            resolved_settings, with_threads)
from kiln.calibration import Feed, Samples
from kiln.config import Plan
from kiln.errors import ExportError
from kiln.exporters import ExportedGraph
from kiln.signature import Signature, TensorInfo
from kiln.targets import TargetSpec

DEVICE = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU"}


def _fill_cache(model: Path, settings: dict) -> dict:
    """Compile once with CACHE_DIR set (writes the blob), then again to measure the cached load."""
    device, config, stand_in = resolved_settings(settings, model)
    if stand_in:
        return {"written": False, "reason": f"{settings['device']} is not on this host: nothing to cache for it"}
    times = []
    for _ in range(2):
        start = time.perf_counter()
        compile_model(model, settings, device, config)
        times.append((time.perf_counter() - start) * 1000.0)
    files = sorted(p.name for p in (model.parent / CACHE_DIR).glob("*") if p.is_file())
    import openvino as ov

    return {"written": bool(files), "device": device, "files": files, "openvino": ov.__version__.split("-")[0],
            "compile_ms_cold": round(times[0], 1), "compile_ms_from_cache": round(times[1], 1),
            "valid_for": "this OpenVINO version and this device; OpenVINO recompiles (and rewrites it) elsewhere"}


def _fixed(declared: tuple, fixed: list | None) -> tuple:
    """An input's dims after the static-shape fallback: the sizes it was fixed to, dynamic where it stayed so."""
    if fixed is None:
        return declared
    return tuple(d if size is None else size for d, size in zip(declared, fixed))


def _quantize_with_fallback(model, onnx_source: Path, plan: Plan, calibration: Samples, transformer: bool,
                            signature: Signature, details: dict):
    """int8 with the units the search keeps in float (--precision auto / --fallback): ranges from half the calibration
    data, the search on the other half, scored and timed on OpenVINO's CPU plugin (timed only when the target is
    this CPU)."""
    import onnx

    from kiln.backends.openvino.fallback import fall_back
    from kiln.backends.openvino.quantize import compress_quantized_weights
    from kiln.fallback.tune import node_flops, split_for_search
    from kiln.progress import report

    ranges, tuning, details["data_split"] = split_for_search(calibration)
    t0 = time.perf_counter()
    quantized, details["quantization"] = quantize_int8(model, plan, ranges, transformer, float_weights=True)
    details["steps"].append({"step": "nncf.quantize", "seconds": round(time.perf_counter() - t0, 3)})
    t0 = time.perf_counter()
    cpu = default_settings("CPU", "int8", plan.threads)["config"]
    flops = node_flops(onnx.load(str(onnx_source)), tuning)
    shipped, details["mixed_precision"] = fall_back(
        model, quantized, tuning, plan.quantization.fallback, cpu, flops=flops, declared=signature.output_names,
        timed=DEVICE[plan.device] == "CPU", progress=report)
    compress_quantized_weights(shipped)
    details["steps"].append({"step": "fallback search", "seconds": round(time.perf_counter() - t0, 3)})
    return shipped


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
        details: dict = {"steps": [], "conversion": CONVERSION}
        t0 = time.perf_counter()
        source, details["ml_ops"] = lower_ml_ops(graph.path, workdir / "ml-lowered.onnx")
        model = convert_onnx(source)
        static = fix_dynamic_ranks(model, graph.signature, example)
        if static:
            details["static_shapes"] = static
        details["steps"].append({"step": "convert", "seconds": round(time.perf_counter() - t0, 3)})
        t0 = time.perf_counter()
        if plan.precision == "int8":
            if calibration is None or not len(calibration):
                raise ExportError("int8 needs calibration samples and none were loaded", hint="pass --calibration PATH")
            transformer = bool(graph.hints.get("transformer"))
            if plan.quantization.fallback is None:
                model, details["quantization"] = quantize_int8(model, plan, calibration, transformer)
            else:
                model = _quantize_with_fallback(model, source, plan, calibration, transformer, graph.signature,
                                                details)
        elif plan.precision in ("int8-weights", "int4-weights"):
            model, details["quantization"] = compress_weights(model, plan)
        if "quantization" in details and "mixed_precision" not in details:
            details["steps"].append({"step": details["quantization"]["tool"], "seconds": round(time.perf_counter() - t0, 3)})
        target = root / "openvino" / "model.xml"
        ov.save_model(model, str(target), compress_to_fp16=plan.precision == "fp16")
        settings = default_settings(DEVICE[plan.device], plan.precision, plan.threads)
        if plan.compiled_cache:
            settings["cache_dir"] = CACHE_DIR
            details["compiled_cache"] = _fill_cache(target, settings)
            if not details["compiled_cache"]["written"]:
                del settings["cache_dir"]
        fixed = static["shapes"] if static else {}
        signature = Signature(
            tuple(TensorInfo(t.name, t.dtype, _fixed(t.shape, fixed.get(t.name))) for t in graph.signature.inputs),
            tuple(TensorInfo(t.name, t.dtype, t.shape) for t in graph.signature.outputs))
        return Compiled("openvino", root, target, signature, settings, details, time.perf_counter() - start)

    def runner(self, model: Path, signature: Signature, settings: dict) -> OpenVinoRunner:
        return OpenVinoRunner(model, signature, settings)

    def with_threads(self, settings: dict, threads: int) -> dict:
        return with_threads(settings, threads)

    def throughput(self, model: Path, settings: dict, feed: Feed, seconds: float) -> dict:
        from kiln.backends.openvino.throughput import measure_throughput

        return measure_throughput(model, settings, feed, seconds)

    def profile(self, model: Path, settings: dict, feed: Feed, runs: int):
        from kiln.backends.openvino.profile import profile_compiled

        return profile_compiled(model, settings, feed, runs=runs)


BACKEND = OpenVinoBackend()
