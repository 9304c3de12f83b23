"""A built TensorRT engine on the GPU: name-based tensor API (TensorRT 10/11), CUDA events for timing.

Used instead of the CPU graph check only where full TensorRT built the engine on this machine's GPU. Buffers
and events come from torch.cuda (torch is already a dependency, and it is in NVIDIA's containers).
`infer` includes the host<->device copies, as a caller sees it; `device_latency_ms` times the engine alone
with CUDA events, as trtexec's "GPU Compute Time" does. The engine inspector's layer information (the
precision TensorRT chose per layer) is read back into the settings for the report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from kiln.calibration import Feed
from kiln.signature import Signature


class EngineRunner:
    def __init__(self, engine: Path, signature: Signature, settings: dict):
        self.engine_path = engine
        self.signature = signature
        self.settings = dict(settings)
        self.load_seconds = 0.0

    def __enter__(self) -> "EngineRunner":
        import torch

        from kiln.backends.tensorrt.build_engine import import_builder, make_logger

        start = time.perf_counter()
        trt, _ = import_builder(self.settings.get("engine_builder", "tensorrt"))  # TensorRT-RTX: the same API
        self._torch, self._trt = torch, trt
        self._logger = make_logger(trt, [])
        runtime = trt.Runtime(self._logger)
        self._engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self._inputs = [n for n in names if self._engine.get_tensor_mode(n) == mode]
        self._outputs = [n for n in names if self._engine.get_tensor_mode(n) != mode]
        self.load_seconds = time.perf_counter() - start
        inspector = self._engine.create_engine_inspector()
        try:
            info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
            self.settings["engine_layers"] = info.get("Layers", info)
        except (ValueError, RuntimeError):
            self.settings["engine_layers"] = None
        self.settings["execution_precision"] = "as built (see engine_layers)"
        return self

    def __exit__(self, *exc) -> None:
        self._context = None
        self._engine = None

    def _bind(self, feed: Feed) -> dict:
        torch = self._torch
        buffers = {}
        for name in self._inputs:
            tensor = torch.from_numpy(np.ascontiguousarray(feed[name])).to("cuda")
            self._context.set_input_shape(name, tuple(tensor.shape))
            self._context.set_tensor_address(name, tensor.data_ptr())
            buffers[name] = tensor
        for name in self._outputs:
            shape = tuple(self._context.get_tensor_shape(name))
            dtype = torch.from_numpy(np.empty(0, dtype=self._trt.nptype(self._engine.get_tensor_dtype(name)))).dtype
            tensor = torch.empty(shape, dtype=dtype, device="cuda")
            self._context.set_tensor_address(name, tensor.data_ptr())
            buffers[name] = tensor
        return buffers

    def infer(self, feed: Feed) -> dict[str, np.ndarray]:
        buffers = self._bind(feed)
        self._context.execute_async_v3(self._stream.cuda_stream)
        self._stream.synchronize()
        return {name: buffers[name].cpu().numpy() for name in self._outputs}

    def device_latency_ms(self, feed: Feed, runs: int = 200) -> list[float]:
        """Engine time alone (inputs already on the device), from CUDA events."""
        torch = self._torch
        self._bind(feed)
        times = []
        for _ in range(runs):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record(self._stream)
            self._context.execute_async_v3(self._stream.cuda_stream)
            end.record(self._stream)
            end.synchronize()
            times.append(begin.elapsed_time(end))
        return times
