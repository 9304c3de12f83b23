"""OpenVINO compiled models from recorded settings; the execution precision is read back, not assumed."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from kiln._deps import require
from kiln.calibration import Feed
from kiln.errors import ExportError
from kiln.signature import Signature

# OpenVINO's CPU plugin runs bf16 on AVX512_BF16/AMX hosts when no hint is given (measured: top-1 changed
# on 6 % of EfficientNet inputs): every precision sets the hint explicitly.
EXECUTION_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32", "int8-weights": "f32",
                       "int4-weights": "f32"}
CACHE_DIR = "cache"  # beside model.xml, when the artifact ships a compiled-model cache


def default_settings(device: str, precision: str, threads: int) -> dict:
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": EXECUTION_PRECISION[precision]}
    if device == "CPU":
        config["INFERENCE_NUM_THREADS"] = str(threads)
    return {"device": device, "config": config}


def with_threads(settings: dict, threads: int) -> dict:
    """Another thread count. The shipped compiled-model cache is keyed by the settings, so it is not used
    (OpenVINO would otherwise write a second blob into the artifact)."""
    changed = {**settings, "config": {**settings.get("config", {}), "INFERENCE_NUM_THREADS": str(threads)}}
    if changed["config"] != settings.get("config"):
        changed.pop("cache_dir", None)
    return changed


def resolved_settings(settings: dict, model: Path) -> tuple[str, dict, str | None]:
    """(device, config, stand-in note) to compile with on this host.

    The target's device may be absent: the same IR then runs on the CPU plugin as a stand-in, so its accuracy
    is still measured, and the report says it is not the device's.
    """
    from kiln.backends.openvino.devices import has_device

    device, config, stand_in = settings["device"], dict(settings.get("config", {})), None
    if not has_device(device):
        stand_in = f"CPU (no {device} on this host)"
        device = "CPU"
        config = {k: v for k, v in config.items() if k != "INFERENCE_PRECISION_HINT"}
    if settings.get("cache_dir") and not stand_in:
        config["CACHE_DIR"] = str(model.parent / settings["cache_dir"])
    return device, config, stand_in


def openvino_message(text: str) -> str:
    """The informative line of an OpenVINO exception (they open with 'Exception from file:line' lines)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from", "Check '"))]
    message = (useful or lines or ["unknown error"])[0][:300]
    node = re.search(r"(?:Operation|node) name:\s*(\S+)", text)
    if node and node.group(1) not in message:
        message += f" (node {node.group(1)})"
    return message


def compile_model(model: Path, settings: dict, device: str | None = None, config: dict | None = None):
    ov = require("openvino", why="running an OpenVINO model")
    device = device or settings["device"]
    config = settings.get("config", {}) if config is None else config
    try:
        return ov.Core().compile_model(str(model), device, config)
    except RuntimeError as exc:
        raise ExportError(f"OpenVINO cannot compile the model for {device}: {openvino_message(str(exc))}",
                          hint="use --target onnxruntime for this model; --debug shows OpenVINO's full message") from None


def execution_precision(compiled) -> str:
    """What the plugin actually runs floating-point ops in (f32, bf16, f16), as it reports it."""
    try:
        value = compiled.get_property("INFERENCE_PRECISION_HINT")
    except RuntimeError:
        return "unknown"
    return value.to_string() if hasattr(value, "to_string") else str(value)


def port_name(port, declared: tuple[str, ...]) -> str:
    """The port's name as the artifact's signature has it: a port can carry several names (after static shapes,
    the CPU plugin folds the ops before an output into it and its names join the output's), any one of them first."""
    names = port.get_names()
    return next((n for n in declared if n in names), port.get_any_name())


class OpenVinoRunner:
    """A compiled model with one synchronous infer request (latency); `infer` maps names to arrays."""

    def __init__(self, model: Path, signature: Signature, settings: dict):
        self.model = model
        self.signature = signature
        self.settings = dict(settings)
        self.load_seconds = 0.0
        self._request = None

    def __enter__(self) -> "OpenVinoRunner":
        start = time.perf_counter()
        device, config, stand_in = resolved_settings(self.settings, self.model)
        if stand_in:
            self.settings["stand_in"] = stand_in
        compiled = compile_model(self.model, self.settings, device, config)
        self.load_seconds = time.perf_counter() - start
        self.settings["execution_precision"] = execution_precision(compiled)
        self._request = compiled.create_infer_request()
        self._inputs = [port_name(i, self.signature.input_names) for i in compiled.inputs]
        self._outputs = [port_name(o, self.signature.output_names) for o in compiled.outputs]
        self._compiled = compiled
        return self

    def __exit__(self, *exc) -> None:
        self._request = None
        self._compiled = None

    def infer(self, feed: Feed) -> dict[str, np.ndarray]:
        results = self._request.infer({k: feed[k] for k in self._inputs})
        return {name: np.asarray(results[port]) for name, port in zip(self._outputs, self._compiled.outputs)}
