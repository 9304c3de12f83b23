"""TargetSpec: a target is data (a backend, a device, what it runs fast), not code."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class TargetSpec(BaseModel):
    """One named piece of hardware, as the pipeline needs to know it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    aliases: tuple[str, ...] = ()
    backend: str
    device: Literal["cpu", "gpu", "npu"] = "cpu"
    arch: Literal["x86_64", "aarch64", "any"] = "any"
    description: str
    precisions: tuple[str, ...]  # what the backend can produce for this target, best first
    required_cpu_flags: tuple[str, ...] = ()  # the target's hardware has these (measured only where host has them)
    int8_activation: Literal["uint8", "int8"] = "uint8"  # QDQ activation type its int8 kernels run fastest
    openvino_device: str | None = None  # the OpenVINO device that must be present to measure this target
    compute_capabilities: tuple[str, ...] = ()  # NVIDIA: the GPU architectures the target means ("8.9")
    engine_builder: Literal["tensorrt", "tensorrt-rtx"] | None = None  # NVIDIA: which TensorRT builds its engines

    def supports(self, precision: str) -> bool:
        return precision in self.precisions
