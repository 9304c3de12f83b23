"""Resolve: a request plus a target give a Plan, or fail before any work is done."""

from __future__ import annotations

from pathlib import Path

from kiln.config import (AccuracyBudget, ExportConfig, FallbackPlan, HalfPrecisionPlan, Plan, QuantizationPlan,
                         TensorRTSettings, WeightCompression)
from kiln.errors import UnsupportedTargetError, UsageError
from kiln.targets import Host, TargetSpec, find_target, host_can_run
from kiln.targets.catalogue import FP8_MIN_CAPABILITY, RTX_CAPABILITIES

SMOOTH_ALPHA = 0.8  # MiniLM int8-dynamic: minimum cosine 0.984 -> 0.996 (ONNX Runtime), 0.984 -> 0.995 (OpenVINO)
# A searched TensorRT Q/DQ graph (static per-tensor activations) tries these on its tuning split. MiniLM, all int8:
# tuning cosine min 0.963 (0.8), 0.970 (0.9), 0.972 (1.0); with the six FFN output MatMuls in float, evaluation
# cosine min 0.975 (0.8), 0.990 (0.9), 0.992 (1.0).
SMOOTH_ALPHA_CHOICES = (0.8, 0.9, 1.0)


def resolve(config: ExportConfig, host: Host) -> Plan:
    spec = find_target(config.target)
    if spec.backend == "llamacpp":
        raise UnsupportedTargetError(f"target '{spec.name}' takes decoder language models (a Hugging Face folder of a "
                                     f"causal LM), and {Path(str(config.source)).name} is not one",
                                     hint="use --target onnxruntime or --target openvino for this model")
    notes: list[str] = []
    trt = _tensorrt_settings(config, spec) if spec.backend == "tensorrt" else None
    if trt is not None:
        notes.append("accuracy figures are the prepared ONNX graph's, run with ONNX Runtime on CPU; the TensorRT "
                     "engine's own accuracy and speed are measured only on the GPU")
    if trt is None and config.tensorrt != TensorRTSettings():
        raise UsageError(f"TensorRT build options were given but target '{spec.name}' uses {spec.backend}",
                         hint="drop them, or pass --target tensorrt (see `kiln targets`)")
    fallback = half = None
    if config.precision == "fp16" and spec.backend == "tensorrt":
        half = HalfPrecisionPlan(keep_fp32=config.keep_fp32, fallback=_fallback(config, spec)[1] if config.fallback
                                 else None)
        if half.fallback is not None:
            notes.append("--fallback: fp16, with the nodes that break the accuracy budget kept in fp32 behind Casts "
                         "(searched on a tuning split of the calibration data)")
    elif config.precision == "auto" or config.fallback:
        asked = "--precision auto" if config.precision == "auto" else "--fallback"
        config, fallback = _fallback(config, spec)
        notes.append(f"{asked}: {config.precision}, with the units that break the accuracy budget kept in float "
                     f"(searched on a tuning split of the calibration data)")
    if not spec.supports(config.precision):
        raise UnsupportedTargetError(f"target '{spec.name}' cannot run precision '{config.precision}'",
                                     hint=f"it runs {', '.join(spec.precisions)}")
    quant = None
    if config.weight_compression.given and config.precision not in ("int8-weights", "int4-weights"):
        raise UsageError(f"--group-size, --ratio and --symmetric/--asymmetric apply to int8-weights and int4-weights, "
                         f"not {config.precision}", hint="drop them, or pass --precision int4-weights")
    if config.compiled_cache and spec.backend != "openvino":
        raise UsageError(f"--compiled-cache is an OpenVINO option; target '{spec.name}' uses {spec.backend}",
                         hint="drop --compiled-cache, or use --target openvino")
    if config.keep_fp32 and (config.precision in ("fp32", "bf16") or (config.precision == "fp16" and half is None)):
        notes.append(f"--keep-fp32 has no effect at {config.precision} on target '{spec.name}' (it applies to int8, "
                     f"fp8, int8-dynamic and TensorRT fp16)")  # a note, not a refusal: a matrix passes it to every cell
    if half is not None and half.fallback is not None and config.calibration is None and not config.synthetic_data:
        raise UsageError("--precision fp16 --fallback needs --calibration data: the search tunes on it",
                         hint="pass --calibration PATH (the evaluation set stays for the final gate)")
    if config.precision in ("int8", "fp8"):
        if config.calibration is None and not config.synthetic_data:
            raise UsageError(f"{config.precision} needs calibration data and none was given",
                             hint="pass --calibration PATH (images, .npz, or a text file), or --synthetic-data to "
                                  "calibrate on random inputs (accuracy then means nothing), or use int8-dynamic")
        data = 'synthetic data' if config.calibration is None else 'the calibration set'
        if spec.backend == "tensorrt":  # TensorRT: symmetric Q/DQ on Conv/MatMul/Gemm inputs
            quant = QuantizationPlan(
                mode="static", activation_type="int8", keep_fp32=config.keep_fp32,
                weights=f"{config.precision} symmetric, " + ("per channel" if config.precision == "int8" else "per tensor"),
                activations=f"{config.precision}, per-tensor, symmetric, calibrated on {data}")
        else:
            quant = QuantizationPlan(
                mode="static", activation_type=spec.int8_activation, keep_fp32=config.keep_fp32,
                activations=f"{spec.int8_activation}, per-tensor, asymmetric, calibrated on {data}")
    elif config.precision == "int8-dynamic":
        quant = QuantizationPlan(mode="dynamic", activation_type="uint8", keep_fp32=config.keep_fp32,
                                 activations="uint8, per-tensor, range computed at run time")
    elif config.precision in ("int8-weights", "int4-weights"):
        compression = _compression(config)
        layout = "symmetric" if compression.symmetric else "asymmetric"
        groups = "per output channel" if compression.group_size == -1 else f"groups of {compression.group_size}"
        quant = QuantizationPlan(mode="weights", keep_fp32=config.keep_fp32, compression=compression,
                                 weights=f"{config.precision[:4]} weight-only, {layout}, {groups}"
                                         + (f", {compression.ratio:.0%} of layers (rest int8)" if compression.ratio < 1 else ""),
                                 activations="float (not quantized)")
    if fallback is not None:
        quant = quant.model_copy(update={"fallback": fallback})
    if quant is not None and quant.mode != "weights":
        has_data = config.calibration is not None or quant.mode == "static"
        wanted = SMOOTH_ALPHA if config.smooth_alpha is None else config.smooth_alpha
        alpha = wanted if wanted > 0 and has_data else None
        choices = ()
        if alpha and config.smooth_alpha is None and fallback is not None and spec.backend == "tensorrt":
            choices = SMOOTH_ALPHA_CHOICES
        quant = quant.model_copy(update={"smooth_alpha": alpha, "smooth_alpha_choices": choices})
        if wanted > 0 and not has_data:
            notes.append("activation smoothing for transformer MatMuls was skipped: it needs --calibration data "
                         "(it raised MiniLM's minimum cosine from 0.984 to 0.996)")
    if config.calibration is None and config.precision in ("int8", "fp8"):
        notes.append("calibrated on synthetic random data: accuracy figures are not meaningful")
    if config.evaluation is None:
        if config.calibration is not None:
            notes.append("no --eval data: validated on the calibration data, which flatters int8 accuracy")
        elif not config.synthetic_data:
            notes.append("no --eval data: validated on synthetic random inputs, so accuracy figures are not "
                         "meaningful; pass --eval PATH for real figures")
    if spec.required_cpu_flags and config.precision == "bf16" and "avx512_bf16" not in spec.required_cpu_flags \
            and "amx_bf16" not in spec.required_cpu_flags:
        notes.append("bf16 on a CPU without AVX512_BF16 or AMX is emulated and slow")
    can_measure, why = host_can_run(spec, host)
    measure = config.measure and can_measure
    reason = "" if measure else ("--no-bench" if not config.measure else f"not measured: {why}")
    threads = config.threads or host.physical_cores
    return Plan(target=spec.name, backend=spec.backend, device=spec.device, precision=config.precision,
                quantization=quant, half=half, threads=threads,
                needs_calibration=config.precision in ("int8", "fp8") or (half is not None and half.fallback is not None),
                measure=measure, measure_reason=reason, compiled_cache=config.compiled_cache, tensorrt=trt,
                notes=tuple(notes))


def _fallback(config: ExportConfig, spec: TargetSpec) -> tuple[ExportConfig, FallbackPlan]:
    """--precision auto (the target's int8), --precision int8/fp8 --fallback, or TensorRT's --precision fp16
    --fallback (fp32 islands): the request with its low precision, and the search's plan. Needs a budget to search
    for."""
    low = "int8" if config.precision == "auto" else config.precision
    if low not in ("int8", "fp8") and not (low == "fp16" and spec.backend == "tensorrt"):
        raise UsageError(f"--fallback applies to int8 and fp8 (and fp16 on TensorRT), not {config.precision}",
                         hint="pass --precision int8 --fallback, or --precision auto")
    if not config.budget.active:
        raise UsageError(f"--precision {'auto' if config.precision == 'auto' else low + ' --fallback'} needs an "
                         f"accuracy budget to search for", hint="add --min-cosine X, --max-top1-disagreement Y or "
                                                                "--max-abs-error Z")
    return (config.model_copy(update={"precision": low}),
            FallbackPlan(budget=config.budget, outputs=config.budget.outputs, seconds=config.search_seconds,
                         tuning_share=1.0 - (default_tuning_margin(config.budget) if config.tuning_margin is None
                                              else config.tuning_margin),
                         ladder=config.precision == "auto"))


def default_tuning_margin(budget: AccuracyBudget) -> float:
    """The share of the budget's slack a point must leave free on the tuning split. Half for a worst-sample budget
    (cosine, abs error): the worst of 400 evaluation sentences is 1.3 to 2.9 times further from 1 than the worst of 100
    tuning ones. A quarter for a top-1 budget alone, which the search reads as the expected disagreement rate
    (fallback/tune.py expected_disagreement): its error against the evaluation set's rate was 2.0 points on average
    and 3.5 at most, on EfficientNet-Lite0's 42 tuning images (docs/benchmarks.md)."""
    continuous = budget.min_cosine is not None or budget.max_abs_error is not None
    return 0.5 if continuous or budget.max_top1_disagreement is None else 0.25


def _compression(config: ExportConfig) -> WeightCompression:
    """Defaults measured on MiniLM: int8 asymmetric per channel (cosine min 0.999), int4 symmetric in groups of 128."""
    given = config.weight_compression
    if config.precision == "int8-weights":
        if given.group_size not in (None, -1) or given.ratio not in (None, 1.0):
            raise UsageError("--group-size and --ratio apply to int4-weights; int8 weights are per output channel",
                             hint="drop them, or pass --precision int4-weights")
        return WeightCompression(group_size=-1, ratio=1.0, symmetric=bool(given.symmetric))
    return WeightCompression(group_size=128 if given.group_size is None else given.group_size,
                             ratio=1.0 if given.ratio is None else given.ratio,
                             symmetric=True if given.symmetric is None else given.symmetric)


def _tensorrt_settings(config: ExportConfig, spec: TargetSpec) -> TensorRTSettings:
    """The capabilities to build for, checked against what the builder and the precision allow."""
    settings = config.tensorrt
    capabilities = settings.compute_capabilities or spec.compute_capabilities
    if settings.compute_capabilities:
        if spec.engine_builder != "tensorrt-rtx":
            raise UsageError("--compute-capability chooses what TensorRT-RTX builds for ahead of time; "
                             f"'{spec.name}' engines are built on the device itself",
                             hint="use --target tensorrt-rtx, or pick the target of your GPU (e.g. tensorrt-sm89)")
        unknown = [c for c in capabilities if c not in RTX_CAPABILITIES]
        if unknown:
            raise UsageError(f"TensorRT-RTX cannot build for compute capability {', '.join(unknown)}",
                             hint=f"it builds for {', '.join(RTX_CAPABILITIES)} (no Hopper SM90: use tensorrt-sm90)")
    if config.precision == "fp8":
        old = [c for c in capabilities if float(c) < FP8_MIN_CAPABILITY]
        if not capabilities or old:
            what = f"compute capability {', '.join(old)}" if old else f"target '{spec.name}' (any NVIDIA GPU)"
            raise UnsupportedTargetError(f"fp8 needs compute capability 8.9 or newer (Ada, Hopper, Blackwell); "
                                         f"{what} has no fp8 tensor cores",
                                         hint="use --target tensorrt-sm89/-sm90/-sm100, or tensorrt-rtx with "
                                              "--compute-capability 8.9 (or 12.0); otherwise --precision int8")
    return settings.model_copy(update={"compute_capabilities": tuple(capabilities), "builder": spec.engine_builder})
