"""What this host is: architecture, CPU flags, cores, memory. Read once, cheaply, without heavy imports."""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Host:
    arch: str
    cpu_model: str
    cpu_flags: frozenset[str] = field(default_factory=frozenset)
    logical_cores: int = 1
    physical_cores: int = 1
    memory_bytes: int = 0
    os: str = ""

    def fingerprint(self) -> dict:
        """What a measurement depends on, for the manifest."""
        interesting = sorted(f for f in self.cpu_flags if f.startswith(("avx", "amx", "fma", "asimd", "sve", "f16c")))
        return {
            "arch": self.arch, "cpu_model": self.cpu_model, "isa_flags": interesting,
            "logical_cores": self.logical_cores, "physical_cores": self.physical_cores,
            "memory_gib": round(self.memory_bytes / 2**30, 1), "os": self.os,
        }


def _normalise_arch(machine: str) -> str:
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine.lower())


def _read_cpuinfo() -> tuple[str, frozenset[str]]:
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return platform.processor() or "unknown", frozenset()
    model, flags = "unknown", set()
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "CPU part") and model == "unknown":
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, frozenset(flags)


@functools.cache
def detect_host() -> Host:
    import psutil

    model, flags = _read_cpuinfo()
    logical = os.cpu_count() or 1
    try:
        logical = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    physical = psutil.cpu_count(logical=False) or logical
    return Host(
        arch=_normalise_arch(platform.machine()),
        cpu_model=model,
        cpu_flags=flags,
        logical_cores=logical,
        physical_cores=min(physical, logical),
        memory_bytes=psutil.virtual_memory().total,
        os=f"{platform.system()} {platform.release()}",
    )
