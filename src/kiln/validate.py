"""Accuracy of a compiled model against the source model's own outputs, and the gate built on it."""

from __future__ import annotations

import time

import numpy as np

from kiln.calibration import Samples
from kiln.config import AccuracyBudget


def is_class_logits(name: str, shape: tuple, classifier_hint: bool | None = None) -> bool:
    """Outputs whose last axis holds class scores: stated by the task, else assumed from name or shape."""
    if classifier_hint is not None:
        return classifier_hint
    return "logit" in name.lower() or (len(shape) == 2 and shape[-1] >= 10)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")  # counted as non_finite_samples; no figure to compute
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def output_metrics(refs: list[np.ndarray], gots: list[np.ndarray], classes: bool, confident: float = 0.5) -> dict:
    abs_err = max(float(np.max(np.abs(r.astype(np.float64) - g.astype(np.float64)))) for r, g in zip(refs, gots))
    scale = max(float(np.max(np.abs(r))) for r in refs) or 1.0
    cos = np.array([_cosine(r, g) for r, g in zip(refs, gots)])
    out = {
        "samples": len(refs), "max_abs_error": abs_err, "max_rel_error": abs_err / scale,
        "mean_abs_error": float(np.mean([np.mean(np.abs(r.astype(np.float64) - g)) for r, g in zip(refs, gots)])),
        "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()), "cosine_p01": float(np.quantile(cos, 0.01)),
        "worst_sample": int(np.nan_to_num(cos, nan=-2.0).argmin()),
        # outputs the source model gives finite and the compiled model does not (fp16 overflow): every other
        # figure is then NaN (null in JSON), and the gate must not read that as a pass
        "non_finite_samples": sum(1 for r, g in zip(refs, gots) if np.isfinite(r).all() and not np.isfinite(g).all()),
    }
    if all(r.size == 1 for r in refs):  # a score, a probability: cosine of one number is its sign, 1.0 for any error
        out["one_value_per_sample"] = True
    if classes:
        ref = np.concatenate([r.reshape(-1, r.shape[-1]) for r in refs])
        got = np.concatenate([g.reshape(-1, g.shape[-1]) for g in gots])
        top1_ref, top1_got = ref.argmax(-1), got.argmax(-1)
        agree = top1_ref == top1_got
        top5_got = np.argsort(-got, axis=-1)[:, :5]
        prob = _softmax(ref.astype(np.float64)).max(-1)
        sure = prob >= confident
        out.update({
            "class_logits": True, "positions": int(len(agree)),
            "top1_agreement": float(agree.mean()),
            "top5_agreement": float(np.mean([t in row for t, row in zip(top1_ref, top5_got)])),
            "confident_threshold": confident, "confident_positions": int(sure.sum()),
            "top1_agreement_confident": float(agree[sure].mean()) if sure.any() else None,
        })
    return out


def _real_tokens(value: np.ndarray, feed: dict) -> np.ndarray:
    """Token-level outputs ([batch, sequence, ...]) keep only positions the attention mask marks as real:
    padding positions are computed but meaningless, and their drift would hide or fake a regression."""
    mask = feed.get("attention_mask")
    if mask is None or value.ndim < 3 or value.shape[:2] != mask.shape:
        return value
    return value[mask.astype(bool)]


def validate(runner, samples: Samples, references: tuple[dict, ...], budget: AccuracyBudget,
             classifier_outputs: dict[str, bool] | None = None, primary_outputs: tuple[str, ...] = ()) -> dict:
    """Run every evaluation sample and compare with the source outputs; apply the budget."""
    start = time.perf_counter()
    got_all = [runner.infer(feed) for feed in samples.feeds]
    metrics = {}
    for name in references[0]:
        refs = [_real_tokens(r[name], f) for r, f in zip(references, samples.feeds)]
        gots = [_real_tokens(g[name], f) for g, f in zip(got_all, samples.feeds)]
        masked = refs[0].shape != references[0][name].shape
        if refs[0].dtype.kind not in "fc":
            metrics[name] = {"samples": len(refs), "exact_match": float(np.mean([np.array_equal(r, g)
                                                                               for r, g in zip(refs, gots)]))}
            continue
        hint = (classifier_outputs or {}).get(name)
        metrics[name] = output_metrics(refs, gots, is_class_logits(name, references[0][name].shape, hint))
        metrics[name]["padding_excluded"] = masked
        if samples.labels:  # which input was worst, by name: the first thing anyone asks
            metrics[name]["worst_sample_label"] = samples.labels[metrics[name]["worst_sample"]]
    gated = gated_outputs(budget, primary_outputs, tuple(metrics))
    unknown = [n for n in gated if n not in metrics]
    if unknown:
        from kiln.errors import UsageError

        raise UsageError(f"--gate-output names {', '.join(unknown)}, not an output of the model",
                         hint=f"outputs are {', '.join(metrics)}")
    failures = gate({n: metrics[n] for n in gated}, budget)
    blind = [n for n in gated if budget.min_cosine is not None and metrics[n].get("one_value_per_sample")]
    return {
        "data": samples.to_dict(), "meaningful": not samples.synthetic, "outputs": metrics,
        "budget": budget.model_dump(),
        "gate": {"checked": budget.active, "passed": not failures, "failures": failures, "outputs": list(gated),
                 **({"not_judged_by_cosine": blind} if blind else {})},
        "seconds": round(time.perf_counter() - start, 3),
    }


def rounded_reading(make_runner, samples: Samples, references: tuple[dict, ...],
                    classifier_outputs: dict[str, bool] | None = None) -> dict | None:
    """The accuracy of the graph with every fp16 tensor rounded (`make_runner()`: its runner, or None when there is
    nothing to round), beside the check's: information, never gated. A graph the rounding copy cannot run is said in
    one line, not raised: the check that gates has already run."""
    note = ("ONNX Runtime's check rounds only where the graph casts, TensorRT at every layer it does not fuse; where "
            "the two readings differ, the CPU check does not settle the engine's accuracy")
    try:
        runner = make_runner()
        if runner is None:
            return None
        with runner:
            result = validate(runner, samples, references, AccuracyBudget(), classifier_outputs)
    except Exception as exc:  # onnx/ORT raise their own types; the reading is information, not the gate
        return {"note": note, "unavailable": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
    return {"note": note, "outputs": result["outputs"], "seconds": result["seconds"]}


def gated_outputs(budget: AccuracyBudget, primary: tuple[str, ...], names: tuple[str, ...]) -> tuple[str, ...]:
    """The outputs the budget judges: those it names (--gate-output), else the source's primary ones, else all."""
    return tuple(budget.outputs or primary or names)


def gate(metrics: dict, budget: AccuracyBudget) -> list[str]:
    """The budget's failures over these outputs. --min-cosine does not judge an output with one value per sample
    (`check_budget_can_judge`): the abs-error and top-1 terms do."""
    failures = []
    for name, m in metrics.items():
        if budget.active and m.get("non_finite_samples"):
            failures.append(f"{name}: {m['non_finite_samples']} of {m['samples']} samples have NaN/Inf outputs "
                            "where the source model's are finite")
            continue
        if (budget.min_cosine is not None and "cosine_min" in m and not m.get("one_value_per_sample")
                and m["cosine_min"] < budget.min_cosine):
            failures.append(f"{name}: minimum cosine {m['cosine_min']:.5f} < {budget.min_cosine}")
        if budget.max_abs_error is not None and "max_abs_error" in m and m["max_abs_error"] > budget.max_abs_error:
            failures.append(f"{name}: max abs error {m['max_abs_error']:.4g} > {budget.max_abs_error}")
        if budget.max_top1_disagreement is not None and m.get("class_logits"):
            disagreement = 1.0 - m["top1_agreement"]
            if disagreement > budget.max_top1_disagreement:
                failures.append(f"{name}: top-1 disagreement {disagreement:.3f} > {budget.max_top1_disagreement}")
    return failures


def check_budget_can_judge(references: tuple[dict, ...], budget: AccuracyBudget, primary: tuple[str, ...] = ()) -> None:
    """Refuse, before any compile, a budget that --min-cosine or --max-top1-disagreement alone states for outputs with
    one value per sample: the cosine of one number is 1.0 whatever the error (PLCMOS's quality score read cosine
    1.0 in int8 with an error of 0.063) and it has no classes to agree on, so that gate could not fail. A model with
    other outputs is judged on those, and the report names the ones cosine skipped (`gate.not_judged_by_cosine`)."""
    if not budget.active or budget.max_abs_error is not None or not references:
        return
    floats = [n for n, v in references[0].items() if np.asarray(v).dtype.kind in "fc"]
    gated = [n for n in gated_outputs(budget, primary, tuple(floats)) if n in floats]
    scalar = [n for n in gated if all(np.asarray(r[n]).size == 1 for r in references)]
    if gated and scalar == gated:
        from kiln.errors import UsageError

        flags = " and ".join(f for f, v in (("--min-cosine", budget.min_cosine),
                                            ("--max-top1-disagreement", budget.max_top1_disagreement)) if v is not None)
        raise UsageError(f"{flags} cannot judge {', '.join(scalar)}: one value per sample, where cosine is 1.0 "
                         "whatever the error and there are no classes to agree on",
                         hint="state the budget for it with --max-abs-error E (the largest difference from the source "
                              "model you accept)")
