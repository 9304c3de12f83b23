"""Reduce intermediate tensors of a model over calibration samples: what data-driven passes measure."""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import onnx
from onnx import helper

from kiln.calibration import Samples


def reduce_tensors(model: onnx.ModelProto, tensors: list[str], samples: Samples, limit: int,
                   reduce: Callable[[np.ndarray], np.ndarray],
                   combine: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> dict[str, np.ndarray]:
    """Run the first `limit` samples with `tensors` exposed as outputs (ORT optimizations off, so the names
    hold), apply `reduce` to each value and fold the results with `combine`."""
    import onnxruntime as ort

    probe = copy.deepcopy(model)
    known = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in known:
            probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    folded: dict[str, np.ndarray] = {}
    for feed in samples.feeds[:limit]:
        for name, value in zip(tensors, session.run(tensors, {k: v for k, v in feed.items() if k in inputs})):
            part = reduce(value)
            folded[name] = combine(folded[name], part) if name in folded else part
    return folded
