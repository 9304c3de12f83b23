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


def find_target(name: str) -> TargetSpec:
    """Resolve a target name or alias, or fail with the list of known names."""
    key = name.strip().lower()
    for spec in CATALOGUE:
        if key == spec.name or key in spec.aliases:
            return spec
    known = ", ".join(sorted({s.name for s in CATALOGUE} | {a for s in CATALOGUE for a in s.aliases}))
    raise UsageError(f"unknown target '{name}'", hint=f"known targets: {known}; `kiln targets` lists them")
