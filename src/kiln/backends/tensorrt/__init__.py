"""TensorRT backend: precision put into the ONNX graph (fp16 casts, int8/fp8 symmetric Q/DQ), checked on CPU
with ONNX Runtime, a build kit in every artifact, and real engines where a builder exists: TensorRT-RTX
ahead of time on any machine, full TensorRT 10/11 on a machine with an NVIDIA GPU."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import onnx

from kiln.backends.base import Compiled
from kiln.backends.onnxruntime.session import OrtRunner, default_settings, with_threads
from kiln.calibration import Feed, Samples
from kiln.config import HalfPrecisionPlan, Plan
from kiln.errors import ExportError, MissingDependencyError, UnsupportedTargetError
from kiln.exporters import ExportedGraph
from kiln.fallback.tune import fall_back, split_for_search
from kiln.passes.ml_ops import lower_ml_ops
from kiln.progress import report
from kiln.signature import Signature, read_signature
from kiln.targets import TargetSpec, nvidia_gpu

KIT = "tensorrt"
RANGE_SAMPLES = 8  # calibration samples whose activations decide what fp16 would overflow


def _prepare_graph(graph: ExportedGraph, plan: Plan, stage: Path, target: Path,
                   calibration: Samples | None, example: Feed | None = None) -> dict:
    """The graph TensorRT will build, with its precision decided: copied (fp32), cast (fp16), or Q/DQ."""
    if plan.precision == "fp32":
        shutil.copyfile(graph.path, target)
        return {"pass": "none (fp32 graph)"}
    if plan.precision == "fp16":
        return _fp16_graph(graph, plan, target, calibration, example)
    if calibration is None or not len(calibration):
        raise ExportError(f"{plan.precision} needs calibration samples and none were loaded",
                          hint="pass --calibration PATH")
    from kiln.passes.explicit_qdq import quantize_for_tensorrt, rest_in_fp16

    current, steps = graph.path, []
    quant = plan.quantization
    tuning = split = uncorrected = choice = None
    if quant.fallback is not None:
        calibration, tuning, split = split_for_search(calibration)
    if graph.hints.get("transformer") and quant.smooth_alpha:
        from kiln.passes.smooth_activations import smooth_activations

        alpha = quant.smooth_alpha
        if quant.smooth_alpha_choices and tuning is not None:
            from kiln.fallback.smoothing import choose_alpha

            def smoothed_graph(src: Path, dst: Path, samples: Samples, strength: float) -> None:
                smooth_activations(src, dst.with_suffix(".smoothed.onnx"), samples, strength)
                quantize_for_tensorrt(dst.with_suffix(".smoothed.onnx"), dst, samples, plan.precision,
                                      quant.keep_fp32)
                dst.with_suffix(".smoothed.onnx").unlink()

            alpha, choice = choose_alpha(graph.path, current, calibration, tuning, quant.fallback,
                                         graph_check_settings(plan), quant.smooth_alpha_choices, smoothed_graph,
                                         stage, progress=report)
        smoothed = stage / "smoothed.onnx"
        steps.append({"smoothing": smooth_activations(current, smoothed, calibration, alpha)})
        current = smoothed
    elif plan.precision == "int8" and not graph.hints.get("transformer"):
        from kiln.passes.bias_correction import correct_biases

        corrected, uncorrected = stage / "bias_corrected.onnx", current
        steps.append({"bias_correction": correct_biases(current, corrected, calibration)})
        current = corrected
    prepared = stage / "prepared.onnx" if tuning is not None else None
    details = quantize_for_tensorrt(current, target, calibration, plan.precision, quant.keep_fp32, prepared)
    islands: tuple[str, ...] = ()
    range_feeds = list(calibration.feeds[:RANGE_SAMPLES])
    fallback = quant.fallback
    if tuning is not None:  # the ladder's bottom rung first: the fp16 rest must leave room for the units' search
        from kiln.fallback.islands import CEILING_SHARE, fp32_islands

        t0 = time.perf_counter()
        details["fp32_islands"] = fp32_islands(graph.path, uncorrected or current, tuning, fallback,
                                               graph_check_settings(plan), quant.keep_fp32, range_feeds,
                                               fallback.tuning_share * CEILING_SHARE, progress=report)
        islands = tuple(details["fp32_islands"]["kept"])
        # one --search-seconds for both searches: the units' search gets what the islands left
        fallback = fallback.model_copy(update={"seconds": max(fallback.seconds - (time.perf_counter() - t0), 0.0)})
    # before the search, which then scores the graph that ships: units it restores run in fp16 (the ladder's middle
    # rung below int8/fp8), and fp32 stays where fp16 would overflow, the user kept it or the island search found it
    details["rest"] = rest_in_fp16(target, range_feeds, quant.keep_fp32, islands)
    if islands:  # found on the float graph: names the quantized graph lacks (folded by the quantizer, or unnamed) said
        names = {n.name for n in onnx.load(str(target), load_external_data=False).graph.node}
        details["fp32_islands"]["not_in_quantized_graph"] = [n for n in islands if n not in names]
    if tuning is not None:  # scored on ONNX Runtime CPU, as the graph is checked; TensorRT's speed is the GPU's
        details["data_split"] = split
        details["mixed_precision"] = fall_back(graph.path, (uncorrected, prepared), target, tuning, fallback,
                                               graph_check_settings(plan), timed=False, progress=report)
        if choice:
            details["mixed_precision"]["smoothing_choice"] = choice
    return {**details, "before": steps}


def _fp16_graph(graph: ExportedGraph, plan: Plan, target: Path, calibration: Samples | None,
                example: Feed | None) -> dict:
    """The fp16 graph: `--keep-fp32` nodes, fragile ops and what would overflow in fp32; with `--fallback`, also the
    fp32 islands that bring the tuning split within the budget (fallback/islands.py)."""
    from kiln.passes.half_precision import to_fp16

    half = plan.half or HalfPrecisionPlan()
    feeds = list(calibration.feeds[:RANGE_SAMPLES]) if calibration is not None and len(calibration) else \
        [example] if example else []
    if half.fallback is None or calibration is None:
        return to_fp16(graph.path, target, half.keep_fp32, feeds)
    from kiln.fallback.islands import fp32_islands

    ranges, tuning, split = split_for_search(calibration)
    feeds = list(ranges.feeds[:RANGE_SAMPLES])
    block = fp32_islands(graph.path, graph.path, tuning, half.fallback, graph_check_settings(plan), half.keep_fp32,
                         feeds, half.fallback.tuning_share, progress=report)
    details = to_fp16(graph.path, target, half.keep_fp32, feeds, tuple(block["kept"]))
    return {**details, "data_split": split, "fp32_islands": block}


def graph_check_settings(plan: Plan) -> dict:
    """ONNX Runtime CPU settings that run the prepared graph (the check, and the fallback search's scoring)."""
    settings = default_settings(plan.threads)
    # Q/DQ stay unfused, in float: what TensorRT computes (int8 products accumulated exactly in int32), on every
    # host. ONNX Runtime's fused kernels compute something else: fp8 (ORT 1.32's ClipQuantFusion rejects float8 zero
    # points), int8 on CPUs whose int8 kernels saturate, and int8 with fp16 scales (the rest in fp16) on AVX-512 VNNI
    # CPUs, where the fused graph's logits were noise (EfficientNet-Lite0: top-1 agreement 0.0 fused, 93.8 % unfused,
    # AMD EPYC Zen 4). The rest is still optimised: constant folding dequantizes the weights once (MiniLM's searched
    # int8 graph scored 1.5x faster than with no optimisation)
    if plan.precision in ("int8", "fp8"):
        settings["config_entries"] = {**settings.get("config_entries", {}), "session.disable_quant_qdq": "1"}
    if plan.precision == "fp8":  # basic only: the same outputs as no optimisation (EfficientNet-Lite0, 1.25x faster);
        settings["graph_optimization_level"] = "ORT_ENABLE_BASIC"  # full optimisation moves its logits by up to 0.74
    return settings


def _build_engines(kit: Path, plan: Plan) -> dict:
    """Build with whichever builder the target uses, if it is installed (and, for full TensorRT, a GPU)."""
    from kiln.backends.tensorrt.build_engine import BuildError, build, import_builder

    which = "tensorrt_rtx" if plan.tensorrt.builder == "tensorrt-rtx" else "tensorrt"
    try:
        import_builder(which)
    except BuildError:
        package = "tensorrt-rtx (pip install 'modelkiln[tensorrt-rtx]')" if which == "tensorrt_rtx" else "tensorrt"
        return {"built": False, "reason": f"{package} is not installed here: the kit builds the engine on the device"}
    if which == "tensorrt" and not nvidia_gpu().get("gpu"):
        return {"built": False, "reason": "no NVIDIA GPU here: TensorRT builds engines on the GPU they run on; "
                                          "run `kiln build-engine ARTIFACT` (or the kit's build_engine.py) there"}
    try:
        result = build(kit, kit / "engines", which, list(plan.tensorrt.compute_capabilities) or None, echo=False)
    except BuildError as exc:
        raise ExportError(str(exc), hint="keep the failing node out of low precision with --keep-fp32 NAME, or "
                                         "export with --precision fp32 to see whether the op itself is the problem") from None
    return {"built": True, **result}


def _engine_for_this_gpu(engine: dict, gpu: dict) -> tuple[str, str] | str:
    """(the engine file, the builder whose runtime runs it) when this machine's GPU runs one of the built engines: full
    TensorRT's (built on this GPU) or TensorRT-RTX's for this GPU's compute capability (built ahead of time);
    else why no engine runs here."""
    if not gpu.get("gpu"):
        return "no NVIDIA GPU here: the engine is timed on the device"
    if not engine.get("built"):
        return f"no engine was built here ({engine.get('reason', 'unknown reason')})"
    if engine.get("builder") == "tensorrt":
        return f"engines/{engine['engines'][0]['file']}", "tensorrt"
    for built in engine.get("engines", []):
        if built.get("compute_capability") == gpu.get("compute_capability"):
            return f"engines/{built['file']}", "tensorrt_rtx"
    made = ", ".join(f"SM{e.get('compute_capability')}" for e in engine.get("engines", []))
    return f"TensorRT-RTX built engines for {made}, and this GPU ({gpu['gpu']}) is SM{gpu.get('compute_capability')}"


def _refuse_foreign_domains(path: Path) -> None:
    """TensorRT's ONNX parser builds ai.onnx operators (and its own plugins): a graph with ai.onnx.ml trees and
    scalers (scikit-learn) or com.microsoft contrib ops cannot become an engine, so no kit is written for it."""
    model = onnx.load(str(path), load_external_data=False)
    foreign = sorted({f"{n.domain}.{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx", "trt")})
    if foreign:
        raise UnsupportedTargetError(f"TensorRT's ONNX parser has no {', '.join(foreign[:4])} operator"
                                     f"{'s' if len(foreign) > 1 else ''}",
                                     hint="use --target onnxruntime for this model")


class TensorRtBackend:
    name = "tensorrt"

    def check_environment(self, target: TargetSpec) -> None:
        try:
            import onnxruntime  # noqa: F401  (the prepared graph is checked on CPU with it)
        except ImportError as exc:
            raise MissingDependencyError("onnxruntime is needed to check the TensorRT graph on CPU",
                                         hint='pip install "modelkiln"') from exc

    def compile(self, graph: ExportedGraph, plan: Plan, workdir: Path, calibration: Samples | None,
                example: Feed | None = None) -> Compiled:
        from kiln.backends.tensorrt.kit import profile_for, write_kit

        start = time.perf_counter()
        root = workdir / "trt-compiled"
        kit = root / KIT
        stage = workdir / "trt-stage"
        kit.mkdir(parents=True, exist_ok=True)
        stage.mkdir(parents=True, exist_ok=True)
        details: dict = {"steps": []}
        lowered, details["ml_ops"] = lower_ml_ops(graph.path, stage / "ml-lowered.onnx")
        graph = dataclasses.replace(graph, path=lowered)
        _refuse_foreign_domains(graph.path)
        t0 = time.perf_counter()
        target = kit / "model.onnx"
        details["graph_precision"] = _prepare_graph(graph, plan, stage, target, calibration, example)
        details["steps"].append({"step": f"{plan.precision} graph", "seconds": round(time.perf_counter() - t0, 3)})
        if plan.quantization is not None:
            details["quantization"] = {"mode": "static", "tool": details["graph_precision"].get("tool", ""),
                                       **{k: details["graph_precision"].get(k) for k in ("weights", "activations")}}
        signature = read_signature(onnx.load(str(target), load_external_data=False))
        profile = profile_for(signature, example or {}, plan)
        details["build_settings"] = write_kit(kit, target.name, plan, profile, details["graph_precision"])
        t0 = time.perf_counter()
        details["engine"] = _build_engines(kit, plan)
        details["steps"].append({"step": "engine build", "seconds": round(time.perf_counter() - t0, 3)})
        shutil.rmtree(stage, ignore_errors=True)
        settings = {**graph_check_settings(plan), "graph_check": "ONNX Runtime CPU runs the prepared graph"}
        runnable = _engine_for_this_gpu(details["engine"], nvidia_gpu())
        if isinstance(runnable, tuple):  # the engine itself runs the checks and the timing
            settings["engine"], settings["engine_builder"] = runnable
        else:  # never time the CPU graph check as if it were the engine
            details["not_timed"] = runnable
        return Compiled("tensorrt", root, target, signature, settings, details, time.perf_counter() - start)

    def runner(self, model: Path, signature: Signature, settings: dict):
        """The engine on the GPU where full TensorRT built one here; otherwise the prepared graph on ONNX
        Runtime CPU (the graph's accuracy, not the engine's)."""
        if settings.get("engine"):
            from kiln.backends.tensorrt.engine_runner import EngineRunner

            return EngineRunner(model.parent / settings["engine"], signature, settings)
        return OrtRunner(model, signature, {k: v for k, v in settings.items() if k != "graph_check"})

    def fp16_rounded_runner(self, model: Path, signature: Signature, settings: dict, workdir: Path):
        """The prepared graph with every fp16 tensor rounded (passes/fp16_rounding.py) on ONNX Runtime CPU: the
        other reading of the graph's accuracy, beside the check. None where an engine runs the checks
        or the graph has no fp16 tensor."""
        from kiln.passes.fp16_rounding import rounded_everywhere

        if settings.get("engine"):
            return None
        graph = onnx.load(str(model))
        copy = rounded_everywhere(graph)
        if copy is None:
            return None
        rounded = workdir / "fp16-rounded.onnx"
        rounded.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(copy, str(rounded), save_as_external_data=graph.ByteSize() > 1_800_000_000,
                  location=rounded.name + ".data")
        return OrtRunner(rounded, signature, {k: v for k, v in settings.items() if k != "graph_check"})

    def with_threads(self, settings: dict, threads: int) -> dict:
        return with_threads(settings, threads)

    def throughput(self, model: Path, settings: dict, feed: Feed, seconds: float) -> None:
        return None

    def profile(self, model: Path, settings: dict, feed: Feed, runs: int) -> str:
        return ("per-layer engine profiling is not implemented: run `trtexec --loadEngine=... --dumpProfile` "
                "on the device")


BACKEND = TensorRtBackend()
