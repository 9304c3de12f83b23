"""Per-unit fallback for OpenVINO int8: NNCF's quantizer groups put back in float, chosen by kiln's search.

NNCF quantizes once, weights left as float constants behind their FakeQuantize (as its own
quantize_with_accuracy_control does). NNCF's accuracy-control helpers find the groups (a quantizer plus every op that
goes back to float with it: a Conv with its weight and input quantizers, a pooling's output) and revert them
(FakeQuantize removed, NNCF's bias correction undone). kiln's search (fallback/search.py) picks which groups, each
point scored on the tuning split by OpenVINO's CPU plugin running that very model, so what was scored is what ships.
The shipped IR is the chosen point with its int8 weights compressed, as nncf.quantize leaves them.

The ladder per artifact: int8 → the kept units in float with their weights still int8 (NNCF's ONLY_ACTIVATIONS
restore; a smaller file) → the kept units fully in float → all float. The fastest point within budget ships; mixed
only when it is faster than float.
"""

from __future__ import annotations

import numpy as np

from kiln.calibration import Samples
from kiln.config import FallbackPlan
from kiln.fallback.search import search
from kiln.fallback.tune import TuningEvaluator
from kiln.passes.qdq_units import Unit
from kiln.quiet import quiet

TIMED_RUNS = 50
SUFFIX = "/WithoutBiases"  # OpenVINO's name for a converted Conv/MatMul whose bias became a separate Add


def unit_name(op_name: str) -> str:
    """The ONNX node's name behind an OpenVINO op: what `--keep-fp32` matches (it also matches as a substring)."""
    return op_name[: -len(SUFFIX)] if op_name.endswith(SUFFIX) else op_name


class _Groups:
    """NNCF's view of the quantized model: its quantizer groups, and models with chosen groups reverted."""

    def __init__(self, float_model, quantized):
        from nncf.common.factory import build_graph
        from nncf.common.utils.backend import get_backend
        from nncf.quantization.algorithms.accuracy_control.algorithm import get_algo_backend
        from nncf.quantization.algorithms.accuracy_control.ranker import GroupToRank, Ranker

        self.quantized = quantized
        self.backend = get_algo_backend(get_backend(quantized))
        self.graph = build_graph(quantized)
        initial = build_graph(float_model)
        # NNCF's bias correction moved biases: a reverted op needs the original one back. Weights are not collected:
        # the quantized model's float weights are the ones its inputs expect (SmoothQuant scaled both together).
        for node in initial.get_all_nodes():
            if self.backend.is_node_with_bias(node, initial):
                self.graph.get_node_by_name(node.node_name).attributes["original_bias"] = \
                    self.backend.get_bias_value(node, initial, float_model)
        ranker = Ranker(1, None, self.backend, None, 1)
        groups = ranker.find_groups_of_quantizers_to_rank(self.graph)
        # NNCF walks from the outputs; units are listed in graph order. Groups that share their first op (an Add's
        # two input quantizers) are one unit: restoring every unit must give the float model back. NNCF collects a
        # group's operations in a set of nodes hashed by their text, so their order (and the unit's name, its first
        # op) changed with Python's hash seed from run to run: they are put in graph order here.
        self.groups: dict[str, GroupToRank] = {}
        for group in reversed(groups):
            group = GroupToRank(group.quantizers, sorted(group.operations, key=lambda op: op.node_id))
            name = unit_name(group.operations[0].node_name) if group.operations else group.quantizers[0].node_name
            if name in self.groups:
                held = self.groups[name]
                group = GroupToRank(held.quantizers + [q for q in group.quantizers if q not in held.quantizers],
                                    held.operations + [o for o in group.operations if o not in held.operations])
            self.groups[name] = group

    def units(self, flops: dict[str, int]) -> list[Unit]:
        return [Unit(name, tuple(unit_name(op.node_name) for op in g.operations),
                     g.operations[0].metatype.name.removesuffix("Metatype") if g.operations else "Quantizer",
                     sum(flops.get(unit_name(op.node_name), 0) for op in g.operations))
                for name, g in self.groups.items()]

    def model(self, kept: tuple[str, ...], weights_int8: bool = False):
        """The quantized model with the kept groups reverted (their weights kept int8 with `weights_int8`)."""
        from nncf.common.quantization.quantizer_removal import revert_operations_to_floating_point_precision
        from nncf.quantization.advanced_parameters import RestoreMode

        if not kept:
            return self.quantized
        groups = [self.groups[n] for n in kept]
        mode = RestoreMode.ONLY_ACTIVATIONS if weights_int8 else RestoreMode.ACTIVATIONS_AND_WEIGHTS
        with quiet():
            return revert_operations_to_floating_point_precision(
                [op for g in groups for op in g.operations], [q for g in groups for q in g.quantizers],
                self.quantized, self.graph, mode, self.backend.get_op_with_weights_metatypes(),
                self.backend.is_node_with_weight, self.backend.get_weight_tensor_port_ids)


class _Evaluator(TuningEvaluator):
    """OpenVINO models on the tuning split on the CPU plugin, scored against the float model's outputs."""

    def __init__(self, float_model, groups: _Groups, tuning: Samples, plan: FallbackPlan, config: dict,
                 declared: tuple[str, ...]):
        import openvino as ov

        self.core, self.config, self.groups, self.declared = ov.Core(), config, groups, declared
        self.float_model = float_model
        self.inputs = {n for i in float_model.inputs for n in i.get_names()}
        super().__init__(tuning, plan)

    def reference_model(self):
        return self.float_model

    def graph(self, kept: tuple[str, ...]):
        return self.groups.model(kept)

    def _compiled(self, model):
        with quiet():
            return self.core.compile_model(model, "CPU", self.config)

    def _run(self, model, indices: list[int] | None) -> list[dict]:
        from kiln.backends.openvino.session import port_name

        compiled = self._compiled(model)
        request = compiled.create_infer_request()
        names = [port_name(o, self.declared) for o in compiled.outputs]
        feeds = self.tuning.feeds if indices is None else [self.tuning.feeds[i] for i in indices]
        results = []
        for feed in feeds:
            out = request.infer({k: v for k, v in feed.items() if k in self.inputs})
            results.append({n: np.array(out[port]) for n, port in zip(names, compiled.outputs)})
        return results

    def p50_ms(self, model, runs: int = TIMED_RUNS) -> float:
        from kiln.bench.latency import median_ms

        request = self._compiled(model).create_infer_request()
        feed = {k: v for k, v in self.tuning.feeds[0].items() if k in self.inputs}
        return median_ms(lambda: request.infer(feed), runs)


def fall_back(float_model, quantized, tuning: Samples, plan: FallbackPlan, config: dict, *, flops: dict[str, int],
              declared: tuple[str, ...], timed: bool, progress=lambda text: None):
    """(the model to ship, the report's `mixed_precision` block). `quantized`: nncf.quantize's output with float
    weights behind FakeQuantize; `config`: the CPU plugin's settings the artifact runs with; `timed`: the target is
    this CPU, so low, mixed and float are timed here and the fastest within budget ships."""
    groups = _Groups(float_model, quantized)
    units = groups.units(flops)
    evaluate = _Evaluator(float_model, groups, tuning, plan, config, declared)
    result = search(units, evaluate, plan.seconds, progress, sweep=evaluate.sweep,
                    step_back_share=plan.step_back_share, alone=evaluate.alone)
    final = result.chosen or result.best
    block = {"units": len(units), "search": result.to_dict(), "budget_met_on_tuning": result.chosen is not None,
             "kept_fp32": list(final.kept), "shipped": "low" if not final.kept else "mixed",
             "search_seconds_limit": plan.seconds, "tuning_share": plan.tuning_share,
             "tool": "nncf accuracy-control groups and revert, kiln search, scored on OpenVINO CPU"}
    shipped = groups.model(final.kept)
    if final.kept and result.chosen is not None:  # the middle rung: the kept units' weights stay int8
        with_int8_weights = groups.model(final.kept, weights_int8=True)
        point = evaluate.score(with_int8_weights, final.kept)
        block["int8_weights_rung"] = {"passed": point.passed, "distance": point.distance, **point.summary}
    if timed:
        figures = {"low": evaluate.p50_ms(quantized), "high": evaluate.p50_ms(float_model)}
        if final.kept:
            figures["chosen"] = evaluate.p50_ms(shipped)
            if block.get("int8_weights_rung", {}).get("passed"):
                figures["chosen_int8_weights"] = evaluate.p50_ms(with_int8_weights)
                if figures["chosen_int8_weights"] <= figures["chosen"]:
                    shipped, block["kept_weights"] = with_int8_weights, "int8"
                    figures["chosen"] = figures["chosen_int8_weights"]
        else:
            figures["chosen"] = figures["low"]
        block["p50_ms"] = {**{k: round(v, 4) for k, v in figures.items()}, "timed_runs": TIMED_RUNS,
                           "note": "tuning sample 0, this host, OpenVINO CPU"}
        if final.kept and figures["chosen"] >= figures["high"]:
            block["shipped"] = "high"
            block["why"] = f"mixed ({figures['chosen']:.3f} ms) is not faster than all-float ({figures['high']:.3f} ms)"
            block["kept_fp32"] = list(groups.groups)
            shipped = groups.model(tuple(groups.groups))
    return shipped, block
