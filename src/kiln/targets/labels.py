"""What a build-farm node must have for a target, and what a node says it has: kiln's own node labels.

Ray places a task by node labels and resources, but it knows no CPU features (no "AMX") and names GPUs by product
("RTX-6000" is both an SM89 and an SM75 card), so kiln publishes its own labels from the same host detection
`kiln targets` uses (`kiln node-labels`, for `ray start --labels`), and each target's need is derived from the
target's data (architecture, required CPU flags, compute capabilities, OpenVINO device). A timed cell also asks
for one unit of `kiln-bench`, so that two timed cells never share a machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kiln.targets.catalogue import CATALOGUE
from kiln.targets.host import Host
from kiln.targets.spec import TargetSpec

PREFIX = "kiln.dev/"
OPENVINO = f"{PREFIX}openvino"  # "true" on a node where OpenVINO is installed and sees at least the CPU
BENCH_RESOURCE = "kiln-bench"  # a node has 1: the timed cells it runs run one at a time


def _flag_label(flag: str) -> str:
    return f"{PREFIX}cpu-{flag.replace('_', '-')}"


def _sm(capability: str) -> str:
    return capability.replace(".", "")


@dataclass(frozen=True)
class HardwareNeed:
    """What a node must have to build and time one target's cells."""

    labels: dict[str, str] = field(default_factory=dict)  # Ray label selector: "v" or "in(a,b)"
    num_gpus: float = 0
    resources: dict[str, float] = field(default_factory=dict)
    num_cpus: float = 1

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.labels.items())]
        parts += [f"{self.num_gpus:g} GPU"] if self.num_gpus else []
        parts += [f"{v:g} {k}" for k, v in sorted(self.resources.items())]
        return ", ".join(parts) or "any node"


def need_of(spec: TargetSpec, timed: bool) -> HardwareNeed:
    labels = {}
    if spec.arch != "any":
        labels[f"{PREFIX}arch"] = spec.arch
    labels.update({_flag_label(flag): "true" for flag in spec.required_cpu_flags})
    if spec.backend == "openvino":  # the one runtime kiln's core install leaves out (an NVIDIA node may lack it)
        labels[OPENVINO] = "true"
    if spec.openvino_device and spec.openvino_device != "CPU":
        labels[f"{PREFIX}openvino-{spec.openvino_device.lower()}"] = "true"
    gpus = 0
    if spec.backend == "tensorrt":
        gpus = 1  # one engine build or timing run per GPU at a time; Ray sets CUDA_VISIBLE_DEVICES
        if spec.compute_capabilities:
            sms = [_sm(c) for c in spec.compute_capabilities]
            labels[f"{PREFIX}cuda-sm"] = sms[0] if len(sms) == 1 else f"in({','.join(sms)})"
    return HardwareNeed(labels, gpus, {BENCH_RESOURCE: 1} if timed else {})


def node_labels(host: Host, gpu: dict | None = None, openvino_devices: tuple[str, ...] = ()) -> dict[str, str]:
    """This node's labels: its architecture, the CPU flags some target needs, its NVIDIA GPU's compute capability,
    the TensorRT it has, whether OpenVINO is installed (`openvino_devices` is what it sees: empty without it) and
    the OpenVINO accelerators it sees."""
    labels = {f"{PREFIX}arch": host.arch}
    wanted = sorted({flag for spec in CATALOGUE for flag in spec.required_cpu_flags})
    labels.update({_flag_label(flag): "true" for flag in wanted if flag in host.cpu_flags})
    if gpu and gpu.get("compute_capability"):
        labels[f"{PREFIX}cuda-sm"] = _sm(gpu["compute_capability"])
    if gpu and gpu.get("tensorrt"):  # for people reading `ray status`; no target requires it yet
        labels[f"{PREFIX}tensorrt"] = gpu["tensorrt"]
    if openvino_devices:
        labels[OPENVINO] = "true"
    for device in openvino_devices:
        if device != "CPU":
            labels[f"{PREFIX}openvino-{device.split('.')[0].lower()}"] = "true"
    return labels


def _selector_holds(wanted: str, value: str | None) -> bool:
    if wanted.startswith("in(") and wanted.endswith(")"):
        return value in wanted[3:-1].split(",")
    return value == wanted


def node_fits(need: HardwareNeed, labels: dict[str, str], resources: dict[str, float]) -> str | None:
    """None when a node with these labels and total resources can run the need, else what it lacks."""
    for key, wanted in need.labels.items():
        if not _selector_holds(wanted, labels.get(key)):
            return f"{key}={wanted}"
    if resources.get("CPU", 0) < need.num_cpus:
        return "a CPU for tasks"  # a head started with --num-cpus 0 takes no task
    if need.num_gpus and resources.get("GPU", 0) < need.num_gpus:
        return "a GPU"
    for name, amount in need.resources.items():
        if resources.get(name, 0) < amount:
            return f"resource {name}"
    return None


def this_node_labels() -> dict[str, str]:
    """`node_labels` of the machine this runs on."""
    from importlib import metadata

    from kiln.targets import detect_host, nvidia_gpu

    gpu = dict(nvidia_gpu())
    try:
        gpu["tensorrt"] = metadata.version("tensorrt").split(".")[0] + ".x" if gpu.get("gpu") else None
    except metadata.PackageNotFoundError:
        pass
    devices: tuple[str, ...] = ()
    try:
        from kiln.backends.openvino.devices import openvino_devices

        devices = tuple(openvino_devices()[1] or ())
    except ImportError:
        pass
    return node_labels(detect_host(), gpu, devices)
