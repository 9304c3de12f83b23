"""Targets: the hardware catalogue, host detection, and whether this host can run a target."""

from __future__ import annotations

import functools

from kiln.targets.catalogue import CATALOGUE, find_target
from kiln.targets.host import Host, detect_host
from kiln.targets.spec import TargetSpec


@functools.cache
def nvidia_gpu() -> dict:
    """nvidia-smi's facts, asked once per process (`kiln targets` checks every NVIDIA target)."""
    from kiln.backends.tensorrt.build_engine import gpu_facts

    return gpu_facts()


def host_can_run(spec: TargetSpec, host: Host) -> tuple[bool, str]:
    """Whether artifacts for `spec` can be measured on `host`, and why not."""
    if spec.arch != "any" and spec.arch != host.arch:
        return False, f"needs {spec.arch}, host is {host.arch}"
    missing = [f for f in spec.required_cpu_flags if f not in host.cpu_flags]
    if missing:
        return False, f"host CPU lacks {', '.join(missing)}"
    if spec.openvino_device:
        from kiln.backends.openvino.devices import has_device, openvino_devices

        version, devices = openvino_devices()
        if version is None:
            return False, "openvino is not installed"
        if not has_device(spec.openvino_device):
            return False, f"OpenVINO sees no {spec.openvino_device} here (it sees {', '.join(devices) or 'nothing'})"
    if spec.backend == "tensorrt":
        gpu = nvidia_gpu()
        if not gpu.get("gpu"):
            return False, ("no NVIDIA GPU on this host: TensorRT engines are measured only on the GPU "
                           "(the graph's accuracy is measured with ONNX Runtime on CPU)")
        if spec.compute_capabilities and gpu.get("compute_capability") not in spec.compute_capabilities:
            return False, f"this host's GPU is {gpu['gpu']} (SM{gpu['compute_capability']}), not the target's"
    return True, "ok"


__all__ = ["CATALOGUE", "Host", "TargetSpec", "detect_host", "find_target", "host_can_run", "nvidia_gpu"]
