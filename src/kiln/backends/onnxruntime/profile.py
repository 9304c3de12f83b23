"""Per-node time from ONNX Runtime's own profiler, joined with the graph ORT actually ran.

The profiler names the nodes of ORT's optimized graph (after fusion and layout changes) and lists the
shapes of their non-constant inputs only; the optimized graph, saved by the same session, supplies the
weights' shapes and each node's attributes. Both go to a scratch directory, never the working directory.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from kiln.bench.flops import dtype_name, node_cost
from kiln.bench.profiling import Profile, ProfiledNode, tensor, weight_bytes
from kiln.calibration import Feed


def _shapes(entries: list) -> list:
    return [tensor(shape, dtype_name(dtype)) for entry in entries for dtype, shape in entry.items()]


def _graph_nodes(path: Path) -> tuple[dict, dict]:
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    constants = {i.name: tensor(i.dims, dtype_name(i.data_type), True) for i in model.graph.initializer}
    nodes = {n.name: (list(n.input), n.domain, {a.name: helper.get_attribute_value(a) for a in n.attribute})
             for n in model.graph.node}
    return nodes, constants


def _inputs(names: list[str], constants: dict, activations: list) -> list:
    """The node's inputs in order: initializers from the graph, the rest from the profiler, in turn."""
    queue = list(activations)
    out = []
    for name in names:
        if not name:
            out.append(None)
        elif name in constants:
            out.append(constants[name])
        else:
            out.append(queue.pop(0) if queue else None)
    return out


def profile_session(model: Path, settings: dict, feed: Feed, *, runs: int = 20, warmup: int = 5) -> Profile:
    from kiln.backends.onnxruntime.session import make_session

    with tempfile.TemporaryDirectory(prefix="kiln-ort-profile-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        session = make_session(model, settings, profile_prefix=str(Path(tmp) / "profile"), optimized_path=optimized)
        names = [o.name for o in session.get_outputs()]
        inputs = {i.name: feed[i.name] for i in session.get_inputs()}
        for _ in range(warmup):
            session.run(names, inputs)
        start = time.perf_counter_ns()
        for _ in range(runs):
            session.run(names, inputs)
        wall_ms = (time.perf_counter_ns() - start) / 1e6 / runs
        events = json.loads(Path(session.end_profiling()).read_text())
        graph_nodes, constants = _graph_nodes(optimized)
    run_windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[-runs:]
    first = run_windows[0][0] if run_windows else 0
    totals: dict[str, float] = defaultdict(float)
    seen: dict[str, dict] = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time") or event["ts"] < first:
            continue
        name = event["name"][: -len("_kernel_time")]
        totals[name] += event["dur"] / 1000.0
        seen.setdefault(name, event["args"])
    nodes = []
    for name, total in totals.items():
        args = seen[name]
        op_type = args.get("op_name", "?")
        input_names, domain, attrs = graph_nodes.get(name, ([], "", {}))
        inputs = _inputs(input_names, constants, _shapes(args.get("input_type_shape", [])))
        cost = node_cost(op_type, inputs, _shapes(args.get("output_type_shape", [])), attrs, domain)
        nodes.append(ProfiledNode(name, op_type, total / max(len(run_windows), 1), cost, weight_bytes(inputs)))
    threads = settings.get("intra_op_num_threads")
    return Profile("onnxruntime", f"ONNX Runtime profiler, {runs} runs after {warmup} warm-up, separate session, "
                   f"{threads} intra-op threads", runs, wall_ms, tuple(nodes))
