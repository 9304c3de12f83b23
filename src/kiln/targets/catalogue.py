"""The catalogue of known targets. Explicit data: nothing registers itself on import."""

from __future__ import annotations

from kiln.errors import UsageError
from kiln.targets.spec import TargetSpec

_CPU_PRECISIONS = ("fp32", "int8", "int8-dynamic")

CATALOGUE: tuple[TargetSpec, ...] = (
    TargetSpec(
        name="onnxruntime-cpu",
        aliases=("onnxruntime", "ort", "cpu"),
        backend="onnxruntime",
        description="ONNX Runtime CPU execution provider on any CPU; int8 layout chosen for the host",
        precisions=_CPU_PRECISIONS,
    ),
    TargetSpec(
        name="x86-avx512-vnni",
        aliases=("avx512-vnni", "vnni"),
        backend="onnxruntime",
        arch="x86_64",
        description="x86-64 CPU with AVX-512 VNNI (Cascade Lake and newer): U8S8 int8 kernels",
        precisions=_CPU_PRECISIONS,
        required_cpu_flags=("avx512f", "avx512_vnni"),
        int8_activation="uint8",
    ),
    TargetSpec(
        name="x86-amx",
        aliases=("amx", "sapphire-rapids"),
        backend="onnxruntime",
        arch="x86_64",
        description="x86-64 CPU with AMX tiles (Sapphire Rapids and newer): AMX int8 GEMM",
        precisions=_CPU_PRECISIONS,
        required_cpu_flags=("avx512f", "avx512_vnni", "amx_int8", "amx_tile"),
        int8_activation="uint8",
    ),
    TargetSpec(
        name="x86-avx2",
        aliases=("avx2",),
        backend="onnxruntime",
        arch="x86_64",
        description="x86-64 CPU with AVX2 only: int8 runs on U8S8 with reduced range",
        precisions=_CPU_PRECISIONS,
        required_cpu_flags=("avx2", "fma"),
        int8_activation="uint8",
    ),
    TargetSpec(
        name="arm64-cpu",
        aliases=("aarch64", "arm64", "raspberry-pi", "graviton"),
        backend="onnxruntime",
        arch="aarch64",
        description="ARM64 edge or server CPU (NEON, dot-product where present): S8S8 int8 kernels",
        precisions=_CPU_PRECISIONS,
        required_cpu_flags=("asimd",),
        int8_activation="int8",
    ),
)


_OV_CPU = ("fp32", "bf16", "int8", "int8-weights", "int4-weights")
_OV_ACCEL = ("fp16", "int8", "int8-weights", "int4-weights")

CATALOGUE += (
    TargetSpec(
        name="openvino-cpu",
        aliases=("openvino", "ov", "intel-cpu"),
        backend="openvino",
        description="OpenVINO CPU plugin on any x86-64 CPU (f32 unless bf16 is asked for)",
        precisions=_OV_CPU,
        openvino_device="CPU",
    ),
    TargetSpec(
        name="intel-cpu-amx",
        aliases=("openvino-amx", "xeon-amx"),
        backend="openvino",
        arch="x86_64",
        description="Intel Xeon with AMX (Sapphire Rapids and newer) through OpenVINO: bf16 and int8 on AMX tiles",
        precisions=_OV_CPU,
        required_cpu_flags=("avx512f", "avx512_bf16", "amx_bf16", "amx_int8"),
        openvino_device="CPU",
    ),
    TargetSpec(
        name="intel-igpu",
        aliases=("openvino-gpu", "intel-gpu"),
        backend="openvino",
        device="gpu",
        description="Intel integrated or Arc GPU through OpenVINO's GPU plugin (fp16 IR)",
        precisions=_OV_ACCEL,
        openvino_device="GPU",
    ),
    TargetSpec(
        name="intel-npu",
        aliases=("openvino-npu", "npu"),
        backend="openvino",
        device="npu",
        description="Intel NPU (Core Ultra) through OpenVINO's NPU plugin (fp16 / int8 IR)",
        precisions=_OV_ACCEL,
        openvino_device="NPU",
    ),
)


# TensorRT: precision lives in the graph (casts, Q/DQ). fp8 Q/DQ needs Ada (8.9) or newer.
_TRT = ("fp16", "fp32", "int8")
_TRT_FP8 = ("fp16", "fp32", "int8", "fp8")


def _trt(name: str, cc: str, what: str, aliases: tuple[str, ...] = (), arch: str = "any") -> TargetSpec:
    return TargetSpec(name=name, aliases=aliases, backend="tensorrt", device="gpu", arch=arch,
                      description=f"{what} (SM{cc.replace('.', '')}) with TensorRT 10/11",
                      precisions=_TRT_FP8 if float(cc) >= 8.9 else _TRT, compute_capabilities=(cc,),
                      engine_builder="tensorrt", int8_activation="int8")


CATALOGUE += (
    TargetSpec(name="tensorrt", aliases=("nvidia", "trt", "cuda"), backend="tensorrt", device="gpu",
               description="any NVIDIA GPU with TensorRT 10/11: the engine is built on the device from the kit",
               precisions=_TRT, engine_builder="tensorrt", int8_activation="int8"),
    _trt("tensorrt-sm80", "8.0", "NVIDIA Ampere datacentre GPU (A100, A30)", ("a100",)),
    _trt("tensorrt-sm86", "8.6", "NVIDIA Ampere GPU (RTX 30xx, A10, A40)", ("a10", "rtx30")),
    _trt("tensorrt-sm89", "8.9", "NVIDIA Ada GPU (L4, L40S, RTX 40xx): fp8 tensor cores", ("l4", "ada", "rtx40")),
    _trt("tensorrt-sm90", "9.0", "NVIDIA Hopper GPU (H100, H200): fp8 tensor cores", ("h100", "hopper")),
    _trt("tensorrt-sm100", "10.0", "NVIDIA Blackwell datacentre GPU (B200): fp8 tensor cores", ("b200", "blackwell")),
    _trt("jetson-orin", "8.7", "NVIDIA Jetson Orin edge module (JetPack)", ("orin", "tensorrt-sm87"), "aarch64"),
    TargetSpec(name="tensorrt-rtx", aliases=("trt-rtx", "rtx"), backend="tensorrt", device="gpu",
               description="NVIDIA RTX GPUs with TensorRT for RTX: engines built ahead of time here, on any machine, "
                           "for each compute capability (default SM86, SM89, SM120)",
               precisions=_TRT_FP8, compute_capabilities=("8.6", "8.9", "12.0"), engine_builder="tensorrt-rtx",
               int8_activation="int8"),
)

RTX_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")  # what TensorRT-RTX 1.x builds for (no SM90)
FP8_MIN_CAPABILITY = 8.9


def find_target(name: str) -> TargetSpec:
    """Resolve a target name or alias, or fail with the list of known names."""
    key = name.strip().lower()
    for spec in CATALOGUE:
        if key == spec.name or key in spec.aliases:
            return spec
    known = ", ".join(sorted({s.name for s in CATALOGUE} | {a for s in CATALOGUE for a in s.aliases}))
    raise UsageError(f"unknown target '{name}'", hint=f"known targets: {known}; `kiln targets` lists them")

# llama.cpp: decoder language models only, as one GGUF file. Precisions are llama-quantize's types, best first by the
# measured quality per byte on SmolLM2 (docs/benchmarks.md), then the float masters.
CATALOGUE += (
    TargetSpec(name="llama.cpp", aliases=("llamacpp", "gguf", "llama-cpp"), backend="llamacpp",
               description="llama.cpp on any CPU: one GGUF file of a decoder language model (k-quants by llama.cpp's "
                           "own quantizer, an importance matrix from --calibration text)",
               precisions=("q4_k_m", "q8_0", "q6_k", "q5_k_m", "q4_0", "iq4_xs", "fp16", "bf16", "fp32")),
)
