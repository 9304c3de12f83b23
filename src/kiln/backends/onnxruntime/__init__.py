"""ONNX Runtime CPU backend: transformer fusion where it helps, int8 static (QDQ) or dynamic, sessions
configured from recorded settings."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import onnx

from kiln.backends.base import Compiled
from kiln.fallback.search import Point
from kiln.fallback.tune import fall_back, fastest_within_budget, split_for_search, unsearched, whole_graph_scorer
from kiln.progress import report
from kiln.passes.ml_ops import LINEAR_MODELS, lower_ml_ops
from kiln.backends.onnxruntime.fusion import faster_of, fuse_transformer
from kiln.backends.onnxruntime.dynamic_fallback import search_dynamic
from kiln.backends.onnxruntime.quantize import quantize_dynamic_int8, quantize_static_int8
from kiln.passes.qdq_common import matching_nodes
from kiln.backends.onnxruntime.session import OrtRunner, default_settings, with_threads
from kiln.calibration import Samples
from kiln.config import Plan
from kiln.passes.bias_correction import correct_biases
from kiln.passes.smooth_activations import smooth_activations
from kiln.errors import ExportError, MissingDependencyError
from kiln.exporters import ExportedGraph
from kiln.signature import Signature, read_signature
from kiln.targets import TargetSpec


def _copy_model(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    data = src.with_name(src.name + ".data")
    if data.exists():
        shutil.copyfile(data, dst.with_name(dst.name + ".data"))


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def check_environment(self, target: TargetSpec) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError("onnxruntime is not installed", hint='pip install "modelkiln"') from exc
        if "CPUExecutionProvider" not in ort.get_available_providers():
            raise MissingDependencyError("this onnxruntime build has no CPU execution provider",
                                         hint="pip install onnxruntime")

    def compile(self, graph: ExportedGraph, plan: Plan, workdir: Path, calibration: Samples | None,
                example=None) -> Compiled:
        start = time.perf_counter()
        root = workdir / "onnxruntime"
        stage = workdir / "ort-stage"
        root.mkdir(parents=True, exist_ok=True)
        stage.mkdir(parents=True, exist_ok=True)
        settings = default_settings(plan.threads)
        details: dict = {"steps": []}
        current = graph.path
        model = onnx.load(str(current), load_external_data=False)
        if graph.hints.get("transformer"):
            t0 = time.perf_counter()
            fused_path = stage / "fused.onnx"
            try:
                counts = fuse_transformer(current, fused_path, num_heads=graph.hints.get("num_heads", 0),
                                          hidden_size=graph.hints.get("hidden_size", 0))
            except Exception as exc:  # the fusion scripts fail on graphs they do not recognise
                details["fusion"] = {"applied": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            else:
                keep, timing = True, {}
                if plan.quantization is None and example is not None:
                    keep, timing = faster_of(current, fused_path, settings, example)
                reason = ("int8: fused graphs quantize to QAttention, the fastest variant measured"
                          if plan.quantization else "faster than the plain graph" if keep else "not faster, dropped")
                details["fusion"] = {"applied": keep and bool(counts), "fused_ops": counts, "reason": reason, **timing}
                if keep and counts:
                    current = fused_path
            details["steps"].append({"step": "transformer fusion", "seconds": round(time.perf_counter() - t0, 3)})
        else:
            details["fusion"] = {"applied": False, "reason": "not a transformer graph"}
        quant = plan.quantization
        if quant is not None and quant.smooth_alpha and calibration is not None and graph.hints.get("transformer"):
            t0 = time.perf_counter()
            smoothed = stage / "smoothed.onnx"
            details["smoothing"] = smooth_activations(current, smoothed, calibration, quant.smooth_alpha)
            current = smoothed
            details["steps"].append({"step": "activation smoothing", "seconds": round(time.perf_counter() - t0, 3)})
        if quant is not None:  # the quantizer sees no MatMul inside scikit-learn's linear models; ONNX Runtime runs
            # the other ml operators itself (and its quantizer trips on a lowered Scaler's per-feature Mul)
            current, details["ml_ops"] = lower_ml_ops(current, stage / "ml-lowered.onnx", LINEAR_MODELS)
        tuning = uncorrected = None
        if quant is not None and quant.fallback is not None and calibration is not None:
            calibration, tuning, details["data_split"] = split_for_search(calibration)
        if quant is not None and quant.mode == "static" and calibration is not None:
            t0 = time.perf_counter()
            corrected, uncorrected = stage / "bias_corrected.onnx", current
            details["bias_correction"] = correct_biases(current, corrected, calibration,
                                                        set(matching_nodes(model, quant.keep_fp32)))
            current = corrected
            details["steps"].append({"step": "bias correction", "seconds": round(time.perf_counter() - t0, 3)})
        target = root / "model.onnx"
        if plan.quantization is not None:
            t0 = time.perf_counter()
            if plan.quantization.mode == "dynamic":
                details["quantization"] = quantize_dynamic_int8(current, target, plan.quantization)
            else:
                if calibration is None or not len(calibration):
                    raise ExportError("static int8 needs calibration samples and none were loaded",
                                      hint="pass --calibration PATH")
                prepared = stage / "prepared.onnx" if tuning is not None else None
                details["quantization"] = quantize_static_int8(current, target, plan.quantization, calibration,
                                                               prepared)
            details["steps"].append({"step": f"int8 {plan.quantization.mode} quantization",
                                     "seconds": round(time.perf_counter() - t0, 3)})
            if tuning is not None:
                t0 = time.perf_counter()
                if quant.fallback.ladder:
                    _auto_ladder(graph.path, (uncorrected, current), prepared, target, stage, tuning, quant,
                                 settings, details)
                else:
                    details["mixed_precision"] = fall_back(graph.path, (uncorrected, prepared), target, tuning,
                                                           quant.fallback, settings, timed=True, progress=report)
                details["steps"].append({"step": "fallback search", "seconds": round(time.perf_counter() - t0, 3)})
        else:
            _copy_model(current, target)
        shutil.rmtree(stage, ignore_errors=True)
        signature = read_signature(onnx.load(str(target), load_external_data=False))
        return Compiled("onnxruntime", root, target, signature, settings, details, time.perf_counter() - start)

    def runner(self, model: Path, signature: Signature, settings: dict) -> OrtRunner:
        return OrtRunner(model, signature, settings)

    def with_threads(self, settings: dict, threads: int) -> dict:
        return with_threads(settings, threads)

    def throughput(self, model: Path, settings: dict, feed, seconds: float) -> None:
        """ONNX Runtime has no throughput mode of its own: the latency run's throughput is the figure."""
        return None

    def profile(self, model: Path, settings: dict, feed, runs: int):
        from kiln.backends.onnxruntime.profile import profile_session

        return profile_session(model, settings, feed, runs=runs)


BACKEND = OnnxRuntimeBackend()


STATIC = "static int8 (searched)"
ALL_INT8 = "static int8 (every unit int8)"
DYNAMIC = "dynamic int8"
FLOAT = "float (no int8)"


def _auto_ladder(reference: Path, floats: tuple[Path | None, Path], prepared: Path, target: Path, stage: Path,
                 tuning: Samples, quant, settings: dict, details: dict) -> None:
    """--precision auto on ONNX Runtime: the fastest within budget of the searched static int8 graph, dynamic int8
    and dynamic int8 with nodes float. Plain dynamic int8 is scored and timed first: where it holds the budget and is
    faster than both the static graph with every unit int8 and the float graph, the static search is skipped, since
    a static graph with some units float lies between those two in time (MiniLM, Zen 4: dynamic 7.3 ms within budget
    against static 9.7 ms; the search spent 126 s to find a 12.2 ms point the ladder then dropped). Where float is
    faster (small models whose Q/DQ costs more than it saves), the search runs, and ships float if mixed is slower."""
    plan, (uncorrected, current) = quant.fallback, floats
    float_graph = uncorrected or current
    dynamic, searched = stage / "dynamic.onnx", stage / "dynamic_searched.onnx"
    quantize_dynamic_int8(float_graph, dynamic, quant)
    scorer = whole_graph_scorer(reference, tuning, plan, settings)
    scored = {DYNAMIC: scorer.score(onnx.load(str(dynamic)))}
    first = {ALL_INT8: target, DYNAMIC: dynamic, FLOAT: float_graph}
    checked = None  # the comparison before the search, kept in the report whichever way it went
    if scored[DYNAMIC].passed:
        checked = ladder = fastest_within_budget(reference, tuning, plan, settings, first, scorer, scored)
        rows = ladder["candidates"]
        if rows[DYNAMIC]["p50_ms"] < min(rows[ALL_INT8]["p50_ms"], rows[FLOAT]["p50_ms"]):
            why = (f"plain dynamic int8 holds the budget and is faster than the static graph with every unit int8 "
                   f"and than float ({rows[DYNAMIC]['p50_ms']:.3f} ms against {rows[ALL_INT8]['p50_ms']:.3f} and "
                   f"{rows[FLOAT]['p50_ms']:.3f} ms): keeping units float would only slow the static graph down")
            details["mixed_precision"] = block = unsearched(target, rows[ALL_INT8], plan, why)
            _ship_dynamic(block, ladder, DYNAMIC, dynamic, target, details)
            return
    details["mixed_precision"] = block = fall_back(reference, (uncorrected, prepared), target, tuning, plan, settings,
                                                   timed=True, progress=report)
    if checked is not None:
        block["dynamic_first"] = checked
    candidates = {STATIC: target, DYNAMIC: dynamic}

    def score(path: Path) -> Point:
        return scored[DYNAMIC] if path == dynamic else scorer.score(onnx.load(str(path)))

    # what the static search left of --search-seconds, and at least a fifth of it
    seconds = max(plan.seconds - block["search"]["seconds"], plan.seconds / 5)
    block["dynamic_search"] = rung = search_dynamic(float_graph, dynamic, searched, quant, block["search"]["order"],
                                                    score, seconds, progress=report)
    if "kept_fp32" in rung:  # plain dynamic int8 missed the budget: with some nodes float, within
        candidates["dynamic int8 (searched)"] = searched
    ladder = fastest_within_budget(reference, tuning, plan, settings, candidates, scorer, scored)
    if ladder["chosen"] != STATIC:
        _ship_dynamic(block, ladder, ladder["chosen"], candidates[ladder["chosen"]], target, details)
    else:
        block["ladder"] = ladder


def _ship_dynamic(block: dict, ladder: dict, chosen: str, path: Path, target: Path, details: dict) -> None:
    block["ladder"] = ladder
    target.with_name(target.name + ".data").unlink(missing_ok=True)
    _copy_model(path, target)
    block["shipped"] = "dynamic" if chosen == DYNAMIC else "dynamic-mixed"
    block["kept_fp32"] = block["dynamic_search"]["kept_fp32"] if block["shipped"] == "dynamic-mixed" else []
    details["quantization"] = {**details["quantization"], "shipped_instead": chosen}
