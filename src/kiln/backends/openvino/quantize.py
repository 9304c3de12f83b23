"""NNCF on an OpenVINO model: full int8 post-training quantization, or weight-only int8/int4 compression."""

from __future__ import annotations

from kiln._deps import require
from kiln.calibration import Samples
from kiln.config import Plan
from kiln.passes.qdq_common import matching_names
from kiln.quiet import quiet


def kept_nodes(model, patterns: tuple[str, ...]) -> list[str]:
    """The ops the user's --keep-fp32 patterns name, by the ONNX graph's rule (qdq_common.matching_names)."""
    return matching_names([op.get_friendly_name() for op in model.get_ops()], patterns)


def quantize_int8(model, plan: Plan, calibration: Samples, transformer: bool, float_weights: bool = False) -> tuple:
    """nncf.quantize on the calibration set; transformer mode with kiln's SmoothQuant alpha for transformers.
    `float_weights`: weights stay float behind their FakeQuantize, so that the fallback search can revert units
    (they are compressed to int8 once it is done)."""
    nncf = require("nncf", why="int8 quantization with OpenVINO")
    inputs = {n for i in model.inputs for n in i.get_names()}
    dataset = nncf.Dataset([{k: v for k, v in f.items() if k in inputs} for f in calibration.feeds])
    keep = kept_nodes(model, plan.quantization.keep_fp32)
    kwargs, advanced = {}, {}
    alpha = plan.quantization.smooth_alpha
    if not transformer:
        # full bias correction: EfficientNet-Lite0 top-1 agreement 78 % -> 83 % (100 % where fp32 is confident)
        kwargs["fast_bias_correction"] = False
    if transformer:
        # NNCF's transformer default smooths MatMul inputs with alpha 0.95; 0.8 measured better on MiniLM
        # (minimum sentence cosine 0.984 -> 0.995), as with kiln's own smoothing for ONNX Runtime.
        from nncf.quantization.advanced_parameters import AdvancedSmoothQuantParameters

        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
        if alpha:
            advanced["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=alpha)
    if float_weights:
        from nncf.openvino.quantization.backend_parameters import BackendParameters

        advanced["backend_params"] = {BackendParameters.COMPRESS_WEIGHTS: False}
    if advanced:
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(**advanced)
    if keep:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=keep, validate=False)
    with quiet():
        quantized = nncf.quantize(model, dataset, subset_size=len(calibration), **kwargs)
    return quantized, {"mode": "static", "tool": "nncf.quantize", "model_type": "transformer" if transformer else "default",
                       "smooth_quant_alpha": alpha if transformer else None,
                       "bias_correction": "fast" if transformer else "full",
                       "calibration_samples": len(calibration), "kept_fp32": keep, "weights": "int8 per-channel symmetric",
                       "activations": "int8 per-tensor, calibrated"}


def compress_weights(model, plan: Plan) -> tuple:
    """nncf.compress_weights with the plan's resolved options (bits, symmetry, group size, int4 ratio)."""
    nncf = require("nncf", why="weight compression with OpenVINO")
    options = plan.quantization.compression
    modes = nncf.CompressWeightsMode
    if plan.precision == "int8-weights":
        mode = modes.INT8_SYM if options.symmetric else modes.INT8_ASYM
        kwargs = {}
    else:
        mode = modes.INT4_SYM if options.symmetric else modes.INT4_ASYM
        kwargs = {"group_size": options.group_size, "ratio": options.ratio}
    keep = kept_nodes(model, plan.quantization.keep_fp32)
    if keep:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=keep, validate=False)
    with quiet():
        compressed = nncf.compress_weights(model, mode=mode, **kwargs)
    return compressed, {"mode": "weights", "tool": "nncf.compress_weights", "weights": mode.value,
                        "group_size": options.group_size, "ratio": options.ratio, "symmetric": options.symmetric,
                        "kept_fp32": keep}


def compress_quantized_weights(model) -> None:
    """Float weights behind FakeQuantize become int8 constants, as nncf.quantize leaves them by default."""
    from nncf.openvino.quantization.quantize_model import compress_quantize_weights_transformation

    compress_quantize_weights_transformation(model)
