"""OpenVINO compiled models from recorded settings; the execution precision is read back, not assumed."""

from __future__ import annotations

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


def default_settings(device: str, precision: str, threads: int) -> dict:
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": EXECUTION_PRECISION[precision]}
    if device == "CPU":
        config["INFERENCE_NUM_THREADS"] = str(threads)
    return {"device": device, "config": config}


def compile_model(model: Path, settings: dict):
    ov = require("openvino", why="running an OpenVINO model")
    core = ov.Core()
    try:
        return core.compile_model(str(model), settings["device"], settings.get("config", {}))
    except RuntimeError as exc:
        raise ExportError(f"OpenVINO cannot compile the model for {settings['device']}: {str(exc).splitlines()[0][:300]}",
                          hint="rerun with --debug for OpenVINO's full message") from None


def execution_precision(compiled) -> str:
    """What the plugin actually runs floating-point ops in (f32, bf16, f16), as it reports it."""
    try:
        value = compiled.get_property("INFERENCE_PRECISION_HINT")
    except RuntimeError:
        return "unknown"
    return value.to_string() if hasattr(value, "to_string") else str(value)


class OpenVinoRunner:
    """A compiled model with one synchronous infer request (latency); `infer` maps names to arrays."""

    def __init__(self, model: Path, signature: Signature, settings: dict):
        self.model = model
        self.signature = signature
        self.settings = dict(settings)
        self.load_seconds = 0.0
        self._request = None

    def __enter__(self) -> "OpenVinoRunner":
        from kiln.backends.openvino.devices import has_device

        start = time.perf_counter()
        settings = self.settings
        if not has_device(settings["device"]):
            # The target's device is absent: the same IR runs on the CPU plugin as a stand-in, so the IR's
            # accuracy is still measured; the report says it is not the device's.
            settings = {"device": "CPU", "config": {k: v for k, v in settings.get("config", {}).items()
                                                      if k != "INFERENCE_PRECISION_HINT"}}
            self.settings["stand_in"] = f"CPU (no {self.settings['device']} on this host)"
        compiled = compile_model(self.model, settings)
        self.load_seconds = time.perf_counter() - start
        self.settings["execution_precision"] = execution_precision(compiled)
        self._request = compiled.create_infer_request()
        self._inputs = [i.get_any_name() for i in compiled.inputs]
        self._outputs = [o.get_any_name() for o in compiled.outputs]
        self._compiled = compiled
        return self

    def __exit__(self, *exc) -> None:
        self._request = None
        self._compiled = None

    def infer(self, feed: Feed) -> dict[str, np.ndarray]:
        results = self._request.infer({k: feed[k] for k in self._inputs})
        return {name: np.asarray(results[port]) for name, port in zip(self._outputs, self._compiled.outputs)}
