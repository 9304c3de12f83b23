"""What a runtime's own profiler says about one model: per-node time, with the tensors each node touched.

Backends fill a `Profile` (ONNX Runtime's profiler, OpenVINO's performance counters); `summarise` turns it
into the report's `profile` block, with FLOPs and bytes per node from `kiln.bench.flops`. Profiled runs
happen in their own session after the timed runs, so profiling never touches the latency figures.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from kiln.bench.flops import NodeCost, TensorInfo, tensor_bytes

TOP_NODES = 15


@dataclass(frozen=True)
class ProfiledNode:
    name: str
    op_type: str
    ms: float  # mean time per inference
    cost: NodeCost
    weight_bytes: int = 0  # the constant inputs' share of cost.bytes


def weight_bytes(inputs: list) -> int:
    return sum(tensor_bytes(t) for t in inputs if t is not None and t.constant)


@dataclass(frozen=True)
class Profile:
    runtime: str
    method: str
    runs: int
    wall_ms: float  # mean time per profiled inference, profiler on
    nodes: tuple[ProfiledNode, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def node_ms(self) -> float:
        return sum(n.ms for n in self.nodes)


def tensor(shape, dtype: str, constant: bool = False) -> TensorInfo:
    return TensorInfo(tuple(int(d) for d in shape), dtype, constant)


def node_rows(profile: Profile) -> list[dict]:
    """Every profiled node as a plain row, slowest first (the roofline analysis reads these)."""
    node_ms = profile.node_ms
    rows = [{"name": n.name, "op_type": n.op_type, "ms": n.ms, "share": n.ms / node_ms if node_ms else 0.0,
             "flops": n.cost.flops, "bytes": n.cost.bytes, "weight_bytes": n.weight_bytes,
             "intensity": n.cost.intensity, "kind": n.cost.kind, "compute_dtype": n.cost.compute_dtype}
            for n in profile.nodes]
    return sorted(rows, key=lambda r: -r["ms"])


def summarise(profile: Profile, peaks: dict | None = None) -> dict:
    """The report's `profile` block: time by op type and the top nodes, with their FLOPs and bytes, and
    with `peaks` each top node's roofline bound and efficiency."""
    from kiln.bench.roofline import node_bound

    node_ms = profile.node_ms
    by_type: dict[str, dict] = defaultdict(lambda: {"count": 0, "ms": 0.0, "flops": 0, "bytes": 0})
    for node in profile.nodes:
        entry = by_type[node.op_type]
        entry["count"] += 1
        entry["ms"] += node.ms
        entry["flops"] += node.cost.flops
        entry["bytes"] += node.cost.bytes
    rows = [{"op_type": op, **v, "ms": round(v["ms"], 4), "share": v["ms"] / node_ms if node_ms else 0.0}
            for op, v in by_type.items()]
    rows.sort(key=lambda r: -r["ms"])
    top = node_rows(profile)[:TOP_NODES]
    return {
        "runtime": profile.runtime, "method": profile.method, "runs": profile.runs,
        "wall_ms": round(profile.wall_ms, 4), "node_ms": round(node_ms, 4),
        "overhead_ms": round(max(profile.wall_ms - node_ms, 0.0), 4), "nodes": len(profile.nodes),
        "by_op_type": rows,
        "top_nodes": [node_bound(r, peaks) if peaks else r for r in top],
        "notes": list(profile.notes),
    }
