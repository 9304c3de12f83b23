"""Per-unit fallback on a Q/DQ graph: the search run on ONNX Runtime CPU against the float graph, on a tuning split
carved from the calibration data (never the evaluation set, which the final gate reads once).

Used by every backend whose low precision is a Q/DQ ONNX graph (ONNX Runtime static int8, the TensorRT int8/fp8
graph): the graph is edited (units restored to float, `passes/qdq_units.py`), never quantized again, so what was
scored is what ships, byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from kiln.calibration import Samples
from kiln.config import AccuracyBudget, FallbackPlan
from kiln.errors import UsageError
from kiln.fallback.search import Point, search
from kiln.passes.calibration_ranges import samples_digest
from kiln.passes.qdq_units import Unit, find_units, float_weights, restore_units
from kiln.validate import is_class_logits, output_metrics

MIN_CALIBRATION = 4
# By default a point passes on the tuning split only within half the budget's slack (cosine 0.99: 0.995; --tuning-margin):
# the split is small. The worst of the evaluation set's samples is worse than the worst of fewer tuning samples
# (MiniLM's TensorRT graph, 100 tuning sentences against 400: 0.9929 -> 0.9902, 0.9919 -> 0.9885, 0.9953 -> 0.9914;
# ONet, 12 crops, margin 0.25: 0.986 < 0.99 on the evaluation set), and a rate on 42 images has a standard error of
# about 4.5 points (EfficientNet-Lite0, top-1 budget 90 %, margin 0.25: OpenVINO 90.5 % on the 168 evaluation images,
# the TensorRT fp8 graph 88.1 %, gate failed).
SWEEP_SAMPLES = 16  # tuning samples the one-unit-at-a-time sensitivity sweep runs
MAX_TUNING = 128
TIMED_RUNS = 30


def split_for_search(calibration: Samples) -> tuple[Samples, Samples, dict]:
    """(ranges, tuning, record): every other calibration sample tunes the search (at most 128), the rest set ranges.
    Ranges need few samples (MinMax/percentile of activations); a budget on the worst sample needs many."""
    feeds = calibration.feeds
    tuning_idx = [i for i in range(len(feeds)) if i % 2 == 1][:MAX_TUNING]
    ranges_idx = [i for i in range(len(feeds)) if i not in set(tuning_idx)]
    if len(tuning_idx) < 2 or len(ranges_idx) < MIN_CALIBRATION:
        raise UsageError(f"per-unit fallback needs at least 8 calibration samples (it tunes on every other one); "
                         f"{len(feeds)} were loaded", hint="give more --calibration data (32 or more is better)")

    def part(idx: list[int], role: str) -> Samples:
        labels = tuple(calibration.labels[i] for i in idx) if calibration.labels else ()
        return Samples(tuple(feeds[i] for i in idx), calibration.kind, f"{calibration.description} ({role})",
                       calibration.synthetic, labels)

    ranges, tuning = part(ranges_idx, "ranges"), part(tuning_idx, "tuning")
    record = {"calibration": {"count": len(ranges), "sha256": samples_digest(ranges.feeds)},
              "tuning": {"count": len(tuning), "sha256": samples_digest(tuning.feeds),
                         "rule": "every other calibration sample, at most 128"}}
    return ranges, tuning, record


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """Phi(x) with numpy only (Abramowitz & Stegun 7.1.26 for erf, absolute error below 1.5e-7)."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


NEAREST_CLASSES = 64  # the classes closest to the top-1 that the estimate reads per position


def expected_disagreement(refs: list[np.ndarray], gots: list[np.ndarray]) -> float:
    """The top-1 disagreement rate the error predicts: per position, the chance that Gaussian noise of the error's
    measured size (its standard deviation over the classes, independent per class) lifts another class over the
    reference's top-1, summed over classes (the union bound, at most 1), averaged. A count of flips on a small tuning
    split moves in whole samples and misses near flips; this sees how close every sample came. The exact probability
    under that noise model came out low (real quantization error has heavier tails), the bound close: EfficientNet-Lite0,
    five OpenVINO int8 and TensorRT fp8 graphs, 42 tuning against 168 evaluation images (docs/benchmarks.md): the bound
    was off the evaluation set's rate by 2.0 points on average and 3.5 at most, the count of flips by 4.8 and 8.3 (a
    TensorRT fp8 point at 2 flips of 42, 4.8 %, gave 13.1 %; the bound read 9.6 %)."""
    ref = np.concatenate([r.reshape(-1, r.shape[-1]) for r in refs])
    got = np.concatenate([g.reshape(-1, g.shape[-1]) for g in gots])
    rows = max(1, 2**22 // ref.shape[1])  # positions per step: about 4 M logits
    return float(np.concatenate([_flip_chances(ref[i:i + rows], got[i:i + rows])
                                 for i in range(0, len(ref), rows)]).mean())


def _flip_chances(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """The bound on P(the top-1 changes) per position (see expected_disagreement)."""
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    sigma = np.maximum((got - ref).std(axis=-1, keepdims=True), 1e-30)
    top = ref.argmax(-1)
    # another class wins when its noise minus the top class's, N(0, 2 sigma^2), exceeds its margin
    z = (np.take_along_axis(ref, top[:, None], -1) - ref) / (np.sqrt(2.0) * sigma)
    z[np.arange(len(ref)), top] = np.inf
    if z.shape[1] > NEAREST_CLASSES:  # a vocabulary: the far classes add nothing
        z = np.partition(z, NEAREST_CLASSES - 1, axis=1)[:, :NEAREST_CLASSES]
    return np.minimum(_normal_cdf(-np.minimum(z, 40.0)).sum(axis=1), 1.0)


def _distance(metrics: dict, budget: AccuracyBudget, share: float = 1.0) -> float:
    """The budget's own metric as one number, 1.0 at the limit: the worst active term over the gated outputs,
    plus a small share of the mean cosine gap so that coarse metrics still rank. A top-1 term is the expected rate
    (expected_disagreement), or the counted rate times `share` where that is larger, so that a point passing within
    `share` also has its counted rate within the budget. A top-1 budget also keeps every confident sample (the reference's
    top-1 probability at least 0.5): one of them flipped puts the point over budget, as users read a classifier's
    budget (a flip among near-ties is noise, a flip of a sure answer is a wrong answer)."""
    worst, gap = 0.0, 0.0
    for m in metrics.values():
        if m.get("non_finite_samples"):
            return float("inf")
        if "cosine_mean" in m:
            gap = max(gap, 1.0 - m["cosine_mean"])
        if budget.min_cosine is not None and "cosine_min" in m:
            worst = max(worst, (1.0 - m["cosine_min"]) / max(1.0 - budget.min_cosine, 1e-9))
        if budget.max_top1_disagreement is not None and m.get("class_logits"):
            # the rate the error predicts, within the share of the slack; and the flips counted, within the budget
            # itself (never a point whose own tuning samples break it: an fp8 point predicted at 7.4 % had 14.3 %)
            expected = m.get("top1_expected_disagreement", 1.0 - m["top1_agreement"])
            rate = max(expected, (1.0 - m["top1_agreement"]) * share)
            worst = max(worst, rate / max(budget.max_top1_disagreement, 1e-9))
            confident = m.get("top1_agreement_confident")  # None: no confident sample
            if confident is not None and confident < 1.0:  # a confident sample flipped: over, whatever the rate
                worst = max(worst, 2.0 - confident)
        if budget.max_abs_error is not None and "max_abs_error" in m:
            worst = max(worst, m["max_abs_error"] / max(budget.max_abs_error, 1e-12))
    return worst + 1e-3 * gap


def score_outputs(references: list[dict], gots: list[dict], outputs: list[str], budget: AccuracyBudget, share: float,
                  kept: tuple[str, ...] = ()) -> Point:
    """A point from a graph's outputs on (a prefix of) the tuning split: within budget on the tuning split only
    within `share` of its slack. Shared by every backend's evaluator."""
    metrics = {}
    for name in outputs:
        refs = [r[name] for r in references[:len(gots)]]
        if refs[0].dtype.kind not in "fc":
            continue
        metrics[name] = output_metrics(refs, [g[name] for g in gots], is_class_logits(name, refs[0].shape))
        if metrics[name].get("class_logits") and budget.max_top1_disagreement is not None:  # read only by that term
            metrics[name]["top1_expected_disagreement"] = expected_disagreement(refs, [g[name] for g in gots])
    distance = _distance(metrics, budget, share)  # each term 1.0 at its limit (a top-1 budget: the expected rate); NaN: inf
    summary = {"tuning": {n: {k: m[k] for k in ("cosine_min", "cosine_mean", "top1_agreement", "top1_agreement_confident",
                                                 "top1_expected_disagreement", "max_abs_error")
                              if m.get(k) is not None} for n, m in metrics.items()}}
    return Point(kept, distance, distance <= share, summary)


class TuningEvaluator:
    """Scores graphs on the tuning split against the reference's outputs there. A backend supplies `graph(kept)` (the
    low-precision graph with those units restored) and `_run(model, indices)` (its outputs on those tuning samples).

    The one-unit sensitivity sweep runs on SWEEP_SAMPLES tuning samples (see `sweep`)."""

    def __init__(self, tuning: Samples, plan: FallbackPlan):
        self.tuning, self.budget, self.share = tuning, plan.budget, plan.tuning_share
        outputs = plan.outputs
        self.references = self._run(self.reference_model(), None)
        names = list(self.references[0])
        self.outputs = [n for n in (outputs or names) if n in names] or names
        self._hardest: list[int] | None = None

    def reference_model(self):
        raise NotImplementedError

    def graph(self, kept: tuple[str, ...]):
        raise NotImplementedError

    def _run(self, model, indices: list[int] | None) -> list[dict]:
        raise NotImplementedError

    def __call__(self, kept: tuple[str, ...]) -> Point:
        return self.score(self.graph(kept), kept)

    def score(self, model, kept: tuple[str, ...] = (), indices: list[int] | None = None) -> Point:
        references = self.references if indices is None else [self.references[i] for i in indices]
        gots = self._run(model, indices)
        if self._hardest is None and indices is None and not kept and self.budget.max_top1_disagreement is not None:
            # the all-low graph: its worst samples, which a top-1 budget's sweep runs on
            self._hardest = hardest_samples(self.references, gots, self.outputs, SWEEP_SAMPLES)
        return score_outputs(references, gots, self.outputs, self.budget, self.share, kept)

    @property
    def alone(self) -> str:
        """How the sweep isolates a unit. A continuous budget: each unit quantized alone on the all-high graph, which
        measures the error it adds without the other units' noise. Restore-alone on the all-low graph ranked MiniLM's
        units by that noise (layer 2's attention output projection 4th with 1.5 % of an FFN output projection's own
        error, the FFN output projection with the largest error 11th); its TensorRT search kept 16 of 36 units where
        the quantize-alone order keeps 12, at the same tuning split and margin. A top-1 budget: restored alone on
        the all-low graph, on the samples it gets most wrong, as NNCF ranks (see `sweep`)."""
        return "restore" if self.budget.max_top1_disagreement is not None else "quantize"

    def sweep(self, kept: tuple[str, ...]) -> Point:
        """A continuous score for ranking units: the mean normalised squared error of the gated outputs (NNCF's
        ranking score) on SWEEP_SAMPLES tuning samples. A continuous budget (a minimum cosine, a maximum error): on
        the first samples (not the budget's own metric, a worst case over 16 samples, which ranks by whichever
        sample happens to be worst). A top-1 budget: on the samples the all-low graph gets most wrong (flipped
        first, then lowest cosine), as NNCF ranks on its worst items. A top-1 rate on 16 samples moves in steps of 6 % and
        ranked EfficientNet-Lite0's units by which flips a unit happened to fix (86.9 % on the evaluation set where
        the NMSE ranking gave 92.3 % with as many units); for MiniLM's cosine budget the hardest samples ranked worse
        (measured with restore-alone: 24 of 36 units kept instead of 19)."""
        if self.budget.max_top1_disagreement is None:
            indices = list(range(min(SWEEP_SAMPLES, len(self.tuning))))
        else:
            if self._hardest is None:
                self(())
            indices = self._hardest
        gots = self._run(self.graph(kept), indices)
        return Point(kept, normalised_error([self.references[i] for i in indices], gots, self.outputs), False)


def normalised_error(references: list[dict], gots: list[dict], outputs: list[str]) -> float:
    """Mean over samples and float outputs of ||ref - got||^2 / ||ref||^2; infinite where an output is NaN or Inf,
    so a unit that breaks the graph ranks first."""
    values = []
    for ref, got in zip(references, gots):
        for name in outputs:
            a = np.asarray(ref[name])
            if a.dtype.kind not in "fc":
                continue
            a, b = a.astype(np.float64).ravel(), np.asarray(got[name], dtype=np.float64).ravel()
            if not np.isfinite(b).all():
                return float("inf")
            values.append(float(np.sum((a - b) ** 2)) / max(float(np.sum(a * a)), 1e-30))
    return float(np.mean(values)) if values else 0.0


def hardest_samples(references: list[dict], gots: list[dict], outputs: list[str], count: int) -> list[int]:
    """Indices of the `count` samples furthest from the reference: a changed argmax first, then the lowest cosine
    over the float outputs, in sample order among equals (deterministic)."""
    def badness(i: int) -> tuple:
        flips, gap = 0, 0.0
        for name in outputs:
            ref, got = np.asarray(references[i][name]), np.asarray(gots[i][name])
            if ref.dtype.kind not in "fc":
                continue
            a, b = ref.ravel().astype(np.float64), got.ravel().astype(np.float64)
            gap = max(gap, 1.0 - float(a @ b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-30))
            flips += int(ref.ndim >= 1 and ref.size > 1 and np.argmax(a) != np.argmax(b))
        return (-flips, -gap, i)

    return sorted(sorted(range(len(references)), key=badness)[:count])


class QdqEvaluator(TuningEvaluator):
    """ONNX Runtime graphs (Q/DQ units restored), with the artifact's session settings, against the float graph."""

    def __init__(self, reference: onnx.ModelProto, weights: dict, qdq: onnx.ModelProto,
                 units: list[Unit], tuning: Samples, plan: FallbackPlan, settings: dict):
        self.floats, self.qdq, self.units, self.settings = weights, qdq, {u.name: u for u in units}, settings
        self._reference = reference
        super().__init__(tuning, plan)

    def reference_model(self) -> onnx.ModelProto:
        return self._reference

    def graph(self, kept: tuple[str, ...]) -> onnx.ModelProto:
        return restore_units(self.qdq, [self.units[n] for n in kept], self.floats)

    def _run(self, model: onnx.ModelProto, indices: list[int] | None) -> list[dict]:
        from kiln.backends.onnxruntime.session import make_session

        session = make_session(model.SerializeToString(), self.settings)
        names = [o.name for o in session.get_outputs()]
        inputs = [i.name for i in session.get_inputs()]
        feeds = self.tuning.feeds if indices is None else [self.tuning.feeds[i] for i in indices]
        return [dict(zip(names, session.run(None, {k: feed[k] for k in inputs}))) for feed in feeds]

    def p50_ms(self, model: onnx.ModelProto, runs: int = TIMED_RUNS) -> float:
        from kiln.backends.onnxruntime.fusion import median_latency_ms

        inputs = {i.name for i in model.graph.input}
        return median_latency_ms(model.SerializeToString(), self.settings,
                                 {k: v for k, v in self.tuning.feeds[0].items() if k in inputs}, runs)


def node_flops(model: onnx.ModelProto, tuning: Samples) -> dict[str, int]:
    """FLOPs per ONNX node at the tuning split's shapes: what keeping a unit in high precision costs, for ranking."""
    from kiln.bench.flops import graph_costs

    shapes = {k: tuple(v.shape) for k, v in tuning.feeds[0].items() if k in {i.name for i in model.graph.input}}
    try:
        return {name: cost.flops for name, _, cost in graph_costs(model, shapes)}
    except Exception:  # the estimate is only a ranking aid: without it every unit costs the same
        return {}


def fall_back(reference_path: Path, float_paths: tuple[Path | None, Path], qdq_path: Path, tuning: Samples,
              plan: FallbackPlan, settings: dict, *, timed: bool, progress=lambda text: None) -> dict:
    """Search which units of the Q/DQ graph at `qdq_path` to restore to float, and rewrite it in place with them.
    `reference_path`: the exported graph, whose outputs on the tuning split are the target. `float_paths`: where
    restored units take their weights, first match by name winning: the graph before bias correction (its biases
    compensate int8 error, wrong in float; None when there was none), then the graph the quantizer read (smoothed
    weights that match their smoothed inputs, fused Conv+BN). `timed`: measure p50 of the low, chosen and float
    graphs here (ONNX Runtime CPU is the target) and ship the float graph when mixed is not faster. Returns the
    report's `mixed_precision` block."""
    seconds = plan.seconds
    uncorrected, float_path = float_paths
    float_model, qdq = onnx.load(str(float_path)), onnx.load(str(qdq_path))
    weights = float_weights(*([onnx.load(str(uncorrected))] if uncorrected else []), float_model)
    _unique_node_names(qdq)
    units = find_units(qdq, node_flops(float_model, tuning))
    evaluate = QdqEvaluator(onnx.load(str(reference_path)), weights, qdq, units, tuning, plan, settings)
    result = search(units, evaluate, seconds, progress, sweep=evaluate.sweep, step_back_share=plan.step_back_share,
                    alone=evaluate.alone)
    final = result.chosen or result.best
    block = {"units": len(units), "search": result.to_dict(), "budget_met_on_tuning": result.chosen is not None,
             "kept_fp32": list(final.kept), "shipped": "low" if not final.kept else "mixed",
             "search_seconds_limit": seconds, "tuning_share": plan.tuning_share}
    if timed:
        low_ms = evaluate.p50_ms(qdq)
        high = evaluate.graph(tuple(evaluate.units))
        high_ms = evaluate.p50_ms(high)
        chosen_ms = low_ms if not final.kept else evaluate.p50_ms(evaluate.graph(final.kept))
        block["p50_ms"] = {"low": round(low_ms, 4), "chosen": round(chosen_ms, 4), "high": round(high_ms, 4),
                           "timed_runs": TIMED_RUNS, "note": "tuning sample 0, this host"}
        if final.kept and chosen_ms >= high_ms:
            block["shipped"] = "high"
            block["why"] = f"mixed ({chosen_ms:.3f} ms) is not faster than all-float ({high_ms:.3f} ms)"
            final = Point(tuple(evaluate.units), 0.0, True)
    block["kept_fp32"] = list(final.kept)
    _save(evaluate.graph(final.kept), qdq_path)
    return block


def unsearched(qdq_path: Path, low: dict, plan: FallbackPlan, why: str) -> dict:
    """The report's `mixed_precision` block where the search was not run (`why`): the Q/DQ graph's units counted, its
    all-low point (`low`: a fastest_within_budget row) as the whole curve."""
    qdq = onnx.load(str(qdq_path), load_external_data=False)
    _unique_node_names(qdq)
    point = {"kept": 0, "kept_units": [], "distance": low["distance"], "passed": low["passed"],
             **({"tuning": low["tuning"]} if "tuning" in low else {})}
    search = {"chosen": point if low["passed"] else None, "best": point, "curve": [point], "sensitivity": {},
              "order": [], "evaluations": 1, "timed_out": False, "seconds": 0.0, "skipped": why}
    return {"units": len(find_units(qdq)), "search": search, "budget_met_on_tuning": low["passed"], "kept_fp32": [],
            "shipped": "low", "search_seconds_limit": plan.seconds, "tuning_share": plan.tuning_share}


def _unique_node_names(model: onnx.ModelProto) -> None:
    """Units are found and restored by node name: unnamed or repeated names get `<op>_kiln_<index>`."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_kiln_{index}"
        seen.add(node.name)


def _save(model: onnx.ModelProto, path: Path) -> None:
    big = model.ByteSize() > 1_800_000_000
    for leftover in (path, path.with_name(path.name + ".data")):
        leftover.unlink(missing_ok=True)
    onnx.save(model, str(path), save_as_external_data=big, all_tensors_to_one_file=True,
              location=path.name + ".data", size_threshold=1024)


LADDER_RUNS = 100  # timed runs per candidate when whole recipes are compared


def whole_graph_scorer(reference_path: Path, tuning: Samples, plan: FallbackPlan, settings: dict) -> QdqEvaluator:
    """An evaluator with no units: `score(model)` and `p50_ms(model)` for whole graphs (recipes, smoothing strengths)
    against the reference on the tuning split."""
    return QdqEvaluator(onnx.load(str(reference_path)), {}, onnx.ModelProto(), [], tuning, plan, settings)


def fastest_within_budget(reference_path: Path, tuning: Samples, plan: FallbackPlan, settings: dict,
                          candidates: dict[str, Path], scorer: QdqEvaluator | None = None,
                          scored: dict[str, Point] | None = None) -> dict:
    """The recipe ladder above per-unit fallback (ONNX Runtime: the searched static int8 graph, dynamic int8): each
    candidate scored on the tuning split and timed, in this order, here; the fastest within budget wins (the first
    candidate when none is). `scorer`: a whole_graph_scorer the caller already built; `scored`: candidates it
    already scored with it. Returns {"candidates": {name: figures}, "chosen": name}."""
    evaluate = scorer or whole_graph_scorer(reference_path, tuning, plan, settings)
    scored = scored or {}
    rows = {}
    for name, path in candidates.items():
        model = onnx.load(str(path))
        point = scored.get(name) or evaluate.score(model)
        rows[name] = {"passed": point.passed, "distance": point.distance, "p50_ms": round(evaluate.p50_ms(
            model, LADDER_RUNS), 4), **point.summary}
    passing = [n for n, r in rows.items() if r["passed"]]
    chosen = min(passing, key=lambda n: rows[n]["p50_ms"]) if passing else next(iter(candidates))
    return {"candidates": rows, "chosen": chosen, "timed_runs": LADDER_RUNS}
