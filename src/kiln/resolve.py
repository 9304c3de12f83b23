"""Resolve: a request plus a target give a Plan, or fail before any work is done."""

from __future__ import annotations

from kiln.config import ExportConfig, Plan, QuantizationPlan, WeightCompression
from kiln.errors import UnsupportedTargetError, UsageError
from kiln.targets import Host, find_target, host_can_run


def resolve(config: ExportConfig, host: Host) -> Plan:
    spec = find_target(config.target)
    if not spec.supports(config.precision):
        raise UnsupportedTargetError(f"target '{spec.name}' cannot run precision '{config.precision}'",
                                     hint=f"it runs {', '.join(spec.precisions)}")
    notes: list[str] = []
    quant = None
    if config.weight_compression.given and config.precision not in ("int8-weights", "int4-weights"):
        raise UsageError(f"--group-size, --ratio and --symmetric/--asymmetric apply to int8-weights and int4-weights, "
                         f"not {config.precision}", hint="drop them, or pass --precision int4-weights")
    if config.compiled_cache and spec.backend != "openvino":
        raise UsageError(f"--compiled-cache is an OpenVINO option; target '{spec.name}' uses {spec.backend}",
                         hint="drop --compiled-cache, or use --target openvino")
    if config.precision == "int8":
        if config.calibration is None and not config.synthetic_data:
            raise UsageError("int8 needs calibration data and none was given",
                             hint="pass --calibration PATH (images, .npz, or a text file), or --synthetic-data to "
                                  "calibrate on random inputs (accuracy then means nothing), or use int8-dynamic")
        quant = QuantizationPlan(
            mode="static", activation_type=spec.int8_activation, keep_fp32=config.keep_fp32,
            activations=f"{spec.int8_activation}, per-tensor, asymmetric, calibrated on "
                        f"{'synthetic data' if config.calibration is None else 'the calibration set'}")
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
    if quant is not None and quant.mode != "weights":
        has_data = config.calibration is not None or quant.mode == "static"
        alpha = config.smooth_alpha if config.smooth_alpha > 0 and has_data else None
        quant = quant.model_copy(update={"smooth_alpha": alpha})
        if config.smooth_alpha > 0 and not has_data:
            notes.append("activation smoothing for transformer MatMuls was skipped: it needs --calibration data "
                         "(it raised MiniLM's minimum cosine from 0.984 to 0.996)")
    if config.calibration is None and config.precision == "int8":
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
                quantization=quant, needs_calibration=config.precision == "int8", threads=threads,
                measure=measure, measure_reason=reason, compiled_cache=config.compiled_cache,
                notes=tuple(notes))


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
