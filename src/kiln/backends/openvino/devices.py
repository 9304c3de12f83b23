"""Which OpenVINO devices this host has, asked in a subprocess so `kiln targets` never imports openvino."""

from __future__ import annotations

import functools
import json
import subprocess
import sys

_PROBE = ("import json, openvino as ov; c = ov.Core(); "
          "print(json.dumps({'version': ov.__version__, 'devices': c.available_devices}))")


@functools.cache
def openvino_devices() -> tuple[str | None, tuple[str, ...]]:
    """(OpenVINO version or None if not installed, devices it sees such as CPU, GPU.0, NPU)."""
    try:
        result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None, ()
    if result.returncode != 0:
        return None, ()
    data = json.loads(result.stdout.strip().splitlines()[-1])
    return data["version"], tuple(data["devices"])


def has_device(device: str) -> bool:
    """True when OpenVINO sees `device` (GPU matches GPU.0, GPU.1...)."""
    _, devices = openvino_devices()
    return any(d == device or d.startswith(device + ".") for d in devices)
