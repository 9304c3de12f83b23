"""fp32 islands in an fp16 graph: the nodes a strongly typed TensorRT network must keep in fp32 (behind Casts) for
the budget to hold, found by the same search as per-unit fallback (fallback/search.py), on ONNX Runtime CPU.

The bottom rung of TensorRT's ladder (int8/fp8 -> fp16 -> fp32): fragile ops and what would overflow fp16 already
stay fp32 (passes/half_precision.py); what is left is precision, which only data shows. Basic Pitch's fp16 graph
read cosine 0.987 against the fp32 model; one Add (log(x + eps) of a spectrogram whose quiet bins are fp16
subnormals) held most of that loss. A unit here is a node with arithmetic and the moves after it; its cost is its
FLOPs (fp32 runs at a fraction of fp16's rate on tensor cores) plus the boundary's Casts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

from kiln.calibration import Samples
from kiln.config import FallbackPlan
from kiln.fallback.search import Point, search
from kiln.fallback.tune import QdqEvaluator, node_flops
from kiln.passes.half_precision import fp16_groups, name_nodes, out_of_range_nodes, to_fp16, with_following_moves
from kiln.passes.qdq_common import matching_nodes
from kiln.passes.qdq_units import Unit

# Within a quantized graph the fp16 rest must leave room for int8/fp8: islands are searched when the all-fp16 point
# (every unit restored) uses more than this share of what the budget lets the tuning split use, and to this share
CEILING_SHARE = 0.5


def island_units(model: onnx.ModelProto, kept: set[str], flops: dict[str, int]) -> list[Unit]:
    """The fp16 graph's node groups (half_precision.fp16_groups, less `kept`) as units, each named after its first
    node and costed by its FLOPs."""
    ops = {n.name: n.op_type for n in model.graph.node}
    return [Unit(nodes[0], tuple(nodes), ops[nodes[0]], sum(flops.get(n, 0) for n in nodes))
            for nodes in fp16_groups(model, kept)]


class _IslandEvaluator(QdqEvaluator):
    """The fp16 graph of `source` with `keep` and the searched nodes in fp32, scored against the reference."""

    def __init__(self, reference: onnx.ModelProto, source: Path, keep: tuple[str, ...], ranged: tuple[str, ...],
                 units: list[Unit], tuning: Samples, plan: FallbackPlan, settings: dict, workdir: Path):
        self.source, self.keep, self.ranged, self.workdir = source, keep, ranged, workdir
        super().__init__(reference, {}, onnx.ModelProto(), units, tuning, plan, settings)

    def nodes(self, kept: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(node for name in kept for node in self.units[name].nodes)

    def graph(self, kept: tuple[str, ...]) -> onnx.ModelProto:
        path = self.workdir / "island.onnx"
        to_fp16(self.source, path, self.keep, None, self.ranged + self.nodes(kept))
        return onnx.load(str(path))


def fp32_islands(reference_path: Path, source: Path, tuning: Samples, plan: FallbackPlan, settings: dict,
                 keep: tuple[str, ...], range_feeds: list[dict], share: float, progress=lambda text: None) -> dict:
    """Which nodes of `source`'s fp16 graph to keep in fp32 so that the tuning split passes `plan`'s budget within
    `share` of its slack: nothing when the all-fp16 graph already does. `reference_path`: the exported graph, whose
    outputs are the target; `keep`: the user's `--keep-fp32`; `range_feeds`: what the range probe reads (nodes that
    overflow fp16 stay fp32 whatever the search says). Returns the report's `fp32_islands` block; its "kept" list is
    what `to_fp16(..., islands=...)` takes."""
    model = onnx.load(str(source))
    name_nodes(model)
    ranged = tuple(out_of_range_nodes(model, range_feeds)) if range_feeds else ()
    kept_already = with_following_moves(model, set(matching_nodes(model, keep))) | set(ranged)
    units = island_units(model, kept_already, node_flops(model, tuning))
    plan = plan.model_copy(update={"tuning_share": share})
    with tempfile.TemporaryDirectory(prefix="kiln-islands-") as tmp:
        evaluate = _IslandEvaluator(onnx.load(str(reference_path)), source, keep, ranged, units, tuning, plan,
                                    settings, Path(tmp))
        ceiling = evaluate(())
        block = {"units": len(units), "nodes": sum(len(u.nodes) for u in units), "all_fp16": ceiling.to_dict(), "tuning_share": share,
                 "kept_out_of_range": list(ranged)}
        if ceiling.passed or not units:
            return {**block, "searched": False, "kept_units": [], "kept": [], "budget_met_on_tuning": ceiling.passed}
        progress(f"fp16 over budget on the tuning split: searching fp32 islands among {len(units)} units "
                 f"({sum(len(u.nodes) for u in units)} nodes)")
        result = search(units, evaluate, plan.seconds, progress, sweep=evaluate.sweep,
                        step_back_share=plan.step_back_share, alone=evaluate.alone)
        final: Point = result.chosen or result.best
        nodes = evaluate.nodes(final.kept)
    return {**block, "searched": True, "search": result.to_dict(), "kept_units": list(final.kept), "kept": list(nodes),
            "budget_met_on_tuning": result.chosen is not None}
