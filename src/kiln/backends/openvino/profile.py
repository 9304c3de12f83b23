"""Per-layer time from OpenVINO's performance counters, joined with the runtime model's shapes.

The counters name the layers of the compiled (fused) model; `get_runtime_model()` gives the same layers
with their concrete input and output shapes and the precision they ran in, after an inference.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from kiln.bench.flops import dtype_name, openvino_layer_cost
from kiln.bench.profiling import Profile, ProfiledNode, tensor, weight_bytes
from kiln.calibration import Feed

CONSTANT_LAYERS = {"Const", "Constant"}


def _rt(node, key: str, default: str = "") -> str:
    info = node.get_rt_info()
    return info[key].astype(str) if key in info else default


def _layers(runtime_model) -> dict:
    """name -> (layer type, inputs, outputs); inputs produced only from constants are marked constant."""
    constant: set[str] = set()
    layers = {}
    for op in runtime_model.get_ordered_ops():
        name, kind = op.get_friendly_name(), _rt(op, "layerType")
        sources = [i.get_source_output().get_node().get_friendly_name() for i in op.inputs()]
        if kind in CONSTANT_LAYERS or (sources and all(s in constant for s in sources)):
            constant.add(name)
        inputs = [tensor(i.get_partial_shape().to_shape(), dtype_name(i.get_element_type().get_type_name()),
                         src in constant) if i.get_partial_shape().is_static else None
                  for i, src in zip(op.inputs(), sources)]
        outputs = [tensor(o.get_partial_shape().to_shape(), dtype_name(o.get_element_type().get_type_name()))
                   for o in op.outputs() if o.get_partial_shape().is_static]
        layers[name] = (kind, inputs, outputs)
    return layers


def profile_compiled(model: Path, settings: dict, feed: Feed, *, runs: int = 20, warmup: int = 5) -> Profile:
    from kiln.backends.openvino.session import port_name, compile_model, resolved_settings

    device, config, stand_in = resolved_settings(settings, model)
    config = {k: v for k, v in config.items() if k != "CACHE_DIR"}  # never write a blob for a profiling run
    compiled = compile_model(model, settings, device, {**config, "PERF_COUNT": "YES"})
    request = compiled.create_infer_request()
    inputs = {name: feed[name] for name in (port_name(i, tuple(feed)) for i in compiled.inputs)}
    for _ in range(warmup):
        request.infer(inputs)
    totals: dict[str, float] = defaultdict(float)
    types: dict[str, str] = {}
    wall_ns = 0
    for _ in range(runs):
        start = time.perf_counter_ns()
        request.infer(inputs)
        wall_ns += time.perf_counter_ns() - start
        for info in request.get_profiling_info():
            if info.status.name == "EXECUTED":
                totals[info.node_name] += info.real_time.total_seconds() * 1000.0
                types[info.node_name] = info.node_type
    layers = _layers(compiled.get_runtime_model())
    nodes = []
    for name, total in totals.items():
        kind, ins, outs = layers.get(name, (types[name], [], []))
        cost = openvino_layer_cost(kind or types[name], ins, outs)
        nodes.append(ProfiledNode(name, types[name], total / runs, cost, weight_bytes(ins)))
    notes = (f"profiled on {stand_in}",) if stand_in else ()
    return Profile("openvino", f"OpenVINO performance counters (PERF_COUNT), {runs} runs after {warmup} warm-up, "
                   f"separate compiled model on {device}, {config.get('INFERENCE_NUM_THREADS', 'default')} threads",
                   runs, wall_ns / 1e6 / runs, tuple(nodes), notes)
