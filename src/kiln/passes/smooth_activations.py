"""Activation smoothing (SmoothQuant, Xiao et al. 2022) before int8 quantization of MatMuls.

Transformer activations carry a few channels with outliers 10-100x the rest; a per-tensor int8 scale
set by them leaves the other channels a handful of levels. For X @ W, dividing channel j of X by s_j
and multiplying row j of W by s_j is exact in fp32 and moves the outliers into the weights, which
are quantized per channel. s_j = max|X_j|^alpha / max|W_j|^(1-alpha), from calibration data.
Measured on MiniLM int8-dynamic: minimum sentence cosine 0.984 -> 0.996 at alpha 0.8, same speed
(one Mul per smoothed tensor).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from kiln.calibration import Samples
from kiln.passes.probe import reduce_tensors

OP_TYPES = ("MatMul", "Attention", "Gemm")
MAX_SAMPLES = 64


def _eligible(node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> bool:
    if node.op_type not in OP_TYPES or len(node.input) < 2 or node.input[1] not in weights:
        return False
    if node.op_type == "Gemm" and any(a.name in ("transA", "transB") and a.i for a in node.attribute):
        return False
    return weights[node.input[1]].ndim == 2


def _absmax(model: onnx.ModelProto, tensors: list[str], samples: Samples) -> dict[str, np.ndarray]:
    """Per-channel (last axis) max |x| of `tensors` over the samples."""
    return reduce_tensors(model, tensors, samples, MAX_SAMPLES,
                          lambda v: np.abs(v.reshape(-1, v.shape[-1])).max(axis=0), np.maximum)


def smooth_activations(src: Path, dst: Path, samples: Samples, alpha: float) -> dict:
    """Write `dst`: `src` with a Mul(1/s) before every eligible MatMul input and rows of W scaled by s."""
    model = onnx.load(str(src))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        if _eligible(node, weights) and weights[node.input[1]].dtype == np.float32:
            consumers[node.input[0]].append(node)
    weight_users = defaultdict(int)
    for node in model.graph.node:
        for name in node.input:
            weight_users[name] += 1
    # a weight shared with another node cannot be rescaled for one of them alone
    consumers = {t: ns for t, ns in consumers.items() if all(weight_users[n.input[1]] == 1 for n in ns)}
    if not consumers:
        onnx.save(model, str(dst))
        return {"applied": False, "reason": "no MatMul with a constant 2-D weight"}
    peaks = _absmax(model, sorted(consumers), samples)
    initializers = {t.name: t for t in model.graph.initializer}
    new_nodes: dict[str, onnx.NodeProto] = {}
    for tensor, nodes in consumers.items():
        w_peak = np.max([np.abs(weights[n.input[1]]).max(axis=1) for n in nodes], axis=0)
        a_peak = peaks[tensor]
        if a_peak.shape != w_peak.shape:
            continue
        scale = np.power(np.maximum(a_peak, 1e-5), alpha) / np.power(np.maximum(w_peak, 1e-5), 1.0 - alpha)
        scale = np.clip(scale, 1e-2, 1e3).astype(np.float32)
        scale_name, smoothed = f"{tensor}_smooth_inv_scale", f"{tensor}_smoothed"
        model.graph.initializer.append(numpy_helper.from_array((1.0 / scale).astype(np.float32), scale_name))
        new_nodes[tensor] = helper.make_node("Mul", [tensor, scale_name], [smoothed], name=f"{tensor}_smooth")
        for node in nodes:
            w = weights[node.input[1]]
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array((w * scale[:, None]).astype(np.float32),
                                                                         node.input[1]))
            node.input[0] = smoothed
    ordered = []
    for node in model.graph.node:  # each Mul goes right before the first node that reads it
        for name in node.input:
            if name.endswith("_smoothed") and name[: -len("_smoothed")] in new_nodes:
                mul = new_nodes.pop(name[: -len("_smoothed")])
                ordered.append(mul)
        ordered.append(node)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    onnx.save(model, str(dst), save_as_external_data=model.ByteSize() > 1_800_000_000)
    return {"applied": True, "alpha": alpha, "tensors": len(consumers),
            "nodes": sum(len(v) for v in consumers.values()), "calibration_samples": min(len(samples), MAX_SAMPLES)}
