"""ExportConfig (what the user asked for) and Plan (what kiln will do), both frozen.

The config holds only plain, serialisable settings: it is recorded in the manifest and hashed.
A PyTorch module passed through the Python API travels next to it, never inside it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kiln.errors import UsageError
from kiln.errors import one_line as _shown

DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool")
# q8_0 ... iq4_xs are llama.cpp's GGUF types (--target llama.cpp), named as llama-quantize names them, lower case
Precision = Literal["fp32", "bf16", "fp16", "int8", "int8-dynamic", "int8-weights", "int4-weights", "fp8", "auto",
                    "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "iq4_xs"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8", "int8-dynamic", "int8-weights", "int4-weights", "fp8",
                               "auto", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "iq4_xs")

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")  # used with fullmatch: `$` would accept a trailing newline


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Dim(Frozen):
    """One axis: static (`name` is None) or dynamic with a symbolic name and an example size."""

    size: int = Field(ge=1, le=2**31 - 1)
    name: str | None = None

    @property
    def dynamic(self) -> bool:
        return self.name is not None

    def __str__(self) -> str:
        return f"{self.name}={self.size}" if self.name else str(self.size)


class InputSpec(Frozen):
    """A model input: name, dims and dtype. Parsed from `NAME=DIM,DIM,...[:DTYPE]`."""

    name: str
    dims: tuple[Dim, ...]
    dtype: str = "float32"

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise ValueError(f"unknown dtype '{value}' (one of {', '.join(DTYPES)})")
        return value

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(d.size for d in self.dims)

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d.name for i, d in enumerate(self.dims) if d.name}

    def __str__(self) -> str:
        return f"{self.name}={','.join(str(d) for d in self.dims)}:{self.dtype}"

    @classmethod
    def parse(cls, text: str) -> "InputSpec":
        """Parse `pixel_values=batch=1,3,224,224:float32`; a bare name is a dynamic dim of size 2."""
        usage = ("write it as NAME=DIM,DIM,...[:DTYPE], a DIM being a size (224), a dynamic axis "
                 "name (batch) or a name with its example size (batch=1), e.g. "
                 "--input pixel_values=batch=1,3,224,224:float32")
        shown = _shown(text)
        name, sep, rest = text.partition("=")
        if not sep or not _IDENT.fullmatch(name.strip()) or not rest.strip():
            raise UsageError(f"input spec '{shown}' is malformed", hint=usage)
        dtype = "float32"
        head, colon, tail = rest.rpartition(":")
        if colon:
            if tail.strip() not in DTYPES:
                raise UsageError(f"input spec '{shown}' has unknown dtype '{_shown(tail.strip())}'",
                                 hint=f"use one of {', '.join(DTYPES)}")
            dtype, rest = tail.strip(), head
        dims = []
        for raw in rest.replace("x", ",").split(",") if _looks_numeric_x(rest) else rest.split(","):
            raw = raw.strip()
            dim_name, eq, size = raw.partition("=")
            try:
                if raw.isdigit():
                    dims.append(Dim(size=int(raw)))
                elif eq and _IDENT.fullmatch(dim_name) and size.isdigit():
                    dims.append(Dim(size=int(size), name=dim_name))
                elif not eq and _IDENT.fullmatch(raw):
                    dims.append(Dim(size=2, name=raw))
                else:
                    raise ValueError
            except ValueError:
                raise UsageError(f"input spec '{shown}': dimension '{_shown(raw)}' is not valid", hint=usage) from None
        return cls(name=name.strip(), dims=tuple(dims), dtype=dtype)


class ConstantInput(Frozen):
    """A model input fixed to a value (`--constant sr=16000`): the export binds it and folds what depends on it."""

    name: str
    values: tuple[bool | int | float, ...] = Field(min_length=1, max_length=4096)

    def __str__(self) -> str:
        return f"{self.name}={','.join(str(v).lower() if isinstance(v, bool) else str(v) for v in self.values)}"

    @classmethod
    def parse(cls, text: str) -> "ConstantInput":
        """Parse `sr=16000`, `flags=true`, `scales=1.0,2.0` (a scalar, or the values of a 1-D input)."""
        usage = "write it as NAME=VALUE[,VALUE...], e.g. --constant sr=16000"
        shown = _shown(text)
        name, sep, rest = text.partition("=")
        if not sep or not _IDENT.fullmatch(name.strip()) or not rest.strip():
            raise UsageError(f"constant '{shown}' is malformed", hint=usage)
        values: list[bool | int | float] = []
        for raw in rest.split(","):
            raw = raw.strip()
            if raw.lower() in ("true", "false"):
                values.append(raw.lower() == "true")
                continue
            try:
                values.append(int(raw))
            except ValueError:
                try:
                    values.append(float(raw))
                except ValueError:
                    raise UsageError(f"constant '{shown}': value '{_shown(raw)}' is not a number or true/false",
                                     hint=usage) from None
        return cls(name=name.strip(), values=tuple(values))


def _looks_numeric_x(text: str) -> bool:
    """`1x3x224x224` is accepted as a shorthand for static shapes."""
    return bool(re.fullmatch(r"\d+(x\d+)+", text.strip()))


class DataSpec(Frozen):
    """A calibration or evaluation data source: a folder of images, .npy/.npz files, or a text file."""

    path: Path
    limit: int | None = Field(default=None, ge=1)


class ImagePreprocessing(Frozen):
    """How images become tensors. Stated in the report; defaults come from the model when it says."""

    size: tuple[int, int] = (224, 224)
    resize_shorter: int | None = None  # resize the shorter side to this, then centre-crop to `size`
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    source: str = "default"  # where these values came from

    def describe(self) -> str:
        return (f"{self.layout} {self.size[0]}x{self.size[1]}, x*{self.scale:g}, "
                f"mean {list(self.mean)}, std {list(self.std)} (from {self.source})")


class AccuracyBudget(Frozen):
    """Limits that turn validation into a gate. None means not checked."""

    min_cosine: float | None = Field(default=None, ge=-1.0, le=1.0)
    max_top1_disagreement: float | None = Field(default=None, ge=0.0, le=1.0)
    max_abs_error: float | None = Field(default=None, ge=0.0)
    outputs: tuple[str, ...] = ()  # outputs the gate applies to; empty: the model's primary outputs, else all

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.min_cosine, self.max_top1_disagreement, self.max_abs_error))


class WeightCompression(Frozen):
    """Options of weight-only precisions (int8-weights, int4-weights). None: kiln's measured default."""

    group_size: int | None = Field(default=None, ge=-1)  # int4: weights per scale (-1: per output channel)
    ratio: float | None = Field(default=None, gt=0.0, le=1.0)  # int4: share of layers in int4, the rest int8
    symmetric: bool | None = None  # default: int8 asymmetric, int4 symmetric

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.group_size, self.ratio, self.symmetric))


class ShapeRange(Frozen):
    """A TensorRT optimization-profile range for one input: `NAME=MIN:OPT:MAX`, shapes as 1x128."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> "ShapeRange":
        usage = "write NAME=MIN:OPT:MAX with shapes like 1x128, e.g. input_ids=1x16:1x128:8x512"
        name, _, spec = text.partition("=")
        name = name.strip()
        parts = spec.split(":")
        if not name or len(parts) != 3:
            raise UsageError(f"profile '{_shown(text)}' is not NAME=MIN:OPT:MAX", hint=usage)
        try:
            shapes = [tuple(int(d) for d in p.lower().split("x")) for p in parts]
        except ValueError:
            raise UsageError(f"profile '{_shown(text)}': shapes must be integers joined by x", hint=usage) from None
        if len({len(s) for s in shapes}) != 1 or any(a > b for lo, hi in zip(shapes, shapes[1:]) for a, b in zip(lo, hi)) \
                or any(d < 1 for s in shapes for d in s):
            raise UsageError(f"profile '{_shown(text)}': need min <= opt <= max, same rank, dims >= 1", hint=usage)
        return cls(name=name, min=shapes[0], opt=shapes[1], max=shapes[2])


class TensorRTSettings(Frozen):
    """Engine build settings for NVIDIA targets; recorded in the build kit (build.json)."""

    compute_capabilities: tuple[str, ...] = ()  # TensorRT-RTX: build for these (default: the target's)
    profiles: tuple[ShapeRange, ...] = ()  # per-input ranges; unnamed dynamic inputs get kiln's defaults
    static_shapes: bool = False  # min = opt = max = the example shape
    max_batch: int = Field(default=16, ge=1)  # default max for axes named like a batch
    workspace_mib: int | None = Field(default=None, ge=1)
    optimization_level: int = Field(default=3, ge=0, le=5)
    hardware_compatibility: Literal["none", "ampere_plus", "same_compute_capability"] = "none"
    version_compatible: bool = False
    builder: Literal["tensorrt", "tensorrt-rtx"] = "tensorrt"  # resolved from the target


class BenchSettings(Frozen):
    warmup: int = Field(default=10, ge=0)
    min_runs: int = Field(default=50, ge=1)
    min_seconds: float = Field(default=2.0, ge=0.0)
    max_seconds: float = Field(default=30.0, gt=0.0)
    throughput_seconds: float = Field(default=2.0, ge=0.0)  # THROUGHPUT-hint run where the backend has one; 0: off


class ReportSettings(Frozen):
    """What the report adds around the timed runs; all of it runs apart from them."""

    analysis: bool = True  # source baseline, runtime profile, roofline, batch sweep
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # swept where the model has a dynamic batch axis
    latency_budget_ms: float | None = Field(default=None, gt=0.0)
    price_per_hour: float | None = Field(default=None, gt=0.0)  # the machine's price: cost per 1M inferences
    profile_runs: int = Field(default=20, ge=1)

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if not sizes or any(b < 1 for b in sizes):
            raise ValueError("batch sizes must be positive integers, e.g. 1,2,4,8")
        return tuple(sorted(set(sizes)))


class LanguageModelSettings(Frozen):
    """Decoder-only models: generation measured, weight-only options, and the memory limit of the export."""

    new_tokens: int = Field(default=128, ge=2)  # decoded per timed generation (the prompt is --sequence-length)
    rounds: int = Field(default=3, ge=1)  # timed generations; the median is reported
    prompts: int = Field(default=8, ge=1)  # evaluation lines whose greedy continuations are compared
    block_size: int | None = Field(default=None, ge=16)  # ONNX Runtime MatMulNBits block (power of 2)
    accuracy_level: int = Field(default=4, ge=0, le=4)  # MatMulNBits compute type: 4 = int8 (VNNI), 0 = unset
    keep_embeddings: bool = False  # ONNX Runtime int4: the token embedding stays fp32
    min_agreement: float | None = Field(default=None, ge=0.0, le=1.0)  # gate on greedy agreement
    max_perplexity_increase: float | None = Field(default=None, ge=0.0)  # gate: 0.05 = at most 5 % above torch's
    max_memory: int | None = Field(default=None, ge=1)  # bytes: refuse models whose export would need more
    draft: Path | None = None  # a kiln language-model artifact shipped in draft/ for speculative decoding

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int | None) -> int | None:
        if value is not None and value & (value - 1):
            raise ValueError("the block size must be a power of 2 (16, 32, 64, 128, ...)")
        return value


class ExportConfig(Frozen):
    """Everything a user can ask of `kiln export`. Recorded in the manifest."""

    source: str
    out: Path
    target: str = "onnxruntime"
    precision: Precision = "fp32"
    inputs: tuple[InputSpec, ...] = ()
    check_shapes: tuple[InputSpec, ...] = ()  # the second shape the export check runs at (else data, else derived)
    constants: tuple[ConstantInput, ...] = ()  # ONNX inputs bound to values in the exported graph
    zipmap_as_tensor: bool = False  # ONNX: scikit-learn's ZipMap outputs become the probability tensors they wrap
    task: str | None = None
    calibration: DataSpec | None = None
    evaluation: DataSpec | None = None
    synthetic_data: bool = False
    sequence_length: int = Field(default=128, ge=1)
    image_preprocessing: ImagePreprocessing | None = None
    budget: AccuracyBudget = AccuracyBudget()
    keep_fp32: tuple[str, ...] = ()
    fallback: bool = False  # int8/fp8: search which units to keep in float so that the budget holds
    search_seconds: float = Field(default=150.0, gt=0)  # wall-clock limit of that search
    # share of the budget's slack kept free on the tuning split; None: resolve.default_tuning_margin
    tuning_margin: float | None = Field(default=None, ge=0.0, lt=1.0)
    # activation smoothing before int8; 0 turns it off; None: kiln's default (0.8), or, when a TensorRT Q/DQ graph is
    # searched per unit, the strength of resolve.SMOOTH_ALPHA_CHOICES that scores best on the tuning split
    smooth_alpha: float | None = Field(default=None, ge=0.0, le=1.0)
    weight_compression: WeightCompression = WeightCompression()
    compiled_cache: bool = False  # OpenVINO: ship the compiled-model cache for the measured device
    tensorrt: TensorRTSettings = TensorRTSettings()
    exporter: Literal["auto", "dynamo", "torchscript"] = "auto"
    opset: int | None = Field(default=None, ge=13, le=23)  # None: the exporter's own choice per source
    export_rtol: float = Field(default=1e-3, ge=0.0)
    export_atol: float = Field(default=1e-4, ge=0.0)
    trust_pickle: bool = False
    trust_remote_code: bool = False
    threads: int | None = Field(default=None, ge=1)
    bench: BenchSettings = BenchSettings()
    report: ReportSettings = ReportSettings()
    llm: LanguageModelSettings = LanguageModelSettings()
    measure: bool = True
    seed: int = 0
    # Where and how the artifact is written: not part of what it is, so neither in the manifest nor in cache keys.
    bundle: Path | None = None  # also write this reproducible .tar.gz
    sign_key: Path | None = None  # Ed25519 private key (PEM): sign manifest.json
    cache: bool = True  # reuse and store stage results in the cache (KILN_CACHE_DIR, default ~/.cache/kiln)

    def recorded(self) -> dict:
        """The request as the manifest records it."""
        return self.model_dump(mode="json", exclude=WRITE_OPTIONS)


WRITE_OPTIONS = {"out", "bundle", "sign_key", "cache"}


class FallbackPlan(Frozen):
    """Per-unit fallback to float: the budget the tuning split must meet, the outputs it reads, the time limit."""

    budget: AccuracyBudget
    outputs: tuple[str, ...] = ()  # filled in once the source's primary outputs are known; empty: all
    seconds: float = 150.0
    ladder: bool = False  # --precision auto: other recipes of the target (dynamic int8) compete with the search's
    tuning_share: float = 0.5  # a point passes on the tuning split within this share of the budget's slack

    @property
    def step_back_share(self) -> float | None:
        """The share step-back holds half of what the prefix point left of (search._step_back): continuous budgets
        only; a top-1 rate moves in whole samples, where half a step does not exist."""
        return None if self.budget.max_top1_disagreement is not None else self.tuning_share


class QuantizationPlan(Frozen):
    """How int8 will be produced, decided from the target and the host before any work."""

    mode: Literal["static", "dynamic", "weights"]
    weights: str = "int8, per-channel, symmetric"
    activations: str  # e.g. "uint8, per-tensor, asymmetric, calibrated (MinMax)"
    activation_type: Literal["uint8", "int8"] = "uint8"
    keep_fp32: tuple[str, ...] = ()
    smooth_alpha: float | None = None  # SmoothQuant strength for transformer MatMuls; None: not applied
    smooth_alpha_choices: tuple[float, ...] = ()  # when set: strengths tried on the tuning split, the best one used
    compression: WeightCompression | None = None  # weight-only modes: the resolved options
    fallback: FallbackPlan | None = None  # --precision auto / --fallback: units kept in float by search


class HalfPrecisionPlan(Frozen):
    """TensorRT fp16: the nodes kept in fp32 behind Casts (`--keep-fp32`), and with `--fallback` the search for more
    of them (fp32 islands, fallback/islands.py) that brings the fp16 graph within the budget."""

    keep_fp32: tuple[str, ...] = ()
    fallback: FallbackPlan | None = None


class Plan(Frozen):
    """What kiln will do for a request: resolved once, before any work, then read by every stage."""

    target: str
    backend: str
    device: str
    precision: str
    quantization: QuantizationPlan | None = None
    half: HalfPrecisionPlan | None = None  # TensorRT fp16 only
    needs_calibration: bool = False
    threads: int
    measure: bool
    measure_reason: str = ""
    compiled_cache: bool = False
    tensorrt: TensorRTSettings | None = None  # NVIDIA targets: build settings, capabilities resolved
    notes: tuple[str, ...] = ()

    @property
    def fallback(self) -> FallbackPlan | None:
        """The accuracy search this plan runs, if any: per-unit fallback (int8/fp8) or fp32 islands (fp16)."""
        return (self.quantization.fallback if self.quantization else None) or (self.half.fallback if self.half else None)

    def with_fallback_outputs(self, outputs: tuple[str, ...]) -> "Plan":
        """The plan whose search reads `outputs` (the gate's), unless the request named its own."""
        fallback = self.fallback
        if fallback is None or fallback.outputs or not outputs:
            return self
        fallback = fallback.model_copy(update={"outputs": outputs})
        if self.quantization is not None and self.quantization.fallback is not None:
            return self.model_copy(update={"quantization": self.quantization.model_copy(update={"fallback": fallback})})
        return self.model_copy(update={"half": self.half.model_copy(update={"fallback": fallback})})
