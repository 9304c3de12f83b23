"""Which shapes the export check runs at: the user's word first, then the user's data, only then a default.

A model's dynamic axes do not say which sizes the model accepts: a detector wants multiples of 32, a streaming
audio model a minimum chunk, a model with positional tables a maximum length. So the sizes kiln checks come from
what the user gave (`--input`, `--check-shape`) and from the evaluation/calibration data, and a size kiln derives
(the probe of a second shape) only grows what already ran: doubling keeps every divisibility and minimum the first
shape met. A source model that cannot run a derived probe is a fact to report, not a crash: the check falls back to
the shapes that ran, and the report says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from kiln.calibration import DataContext, Feed, Samples, random_feed
from kiln.calibration.synthetic import resolve_shape
from kiln.config import InputSpec
from kiln.errors import KilnError, UsageError
from kiln.signature import Signature


def is_batch(name: str) -> bool:
    return "batch" in name.lower()


def dims_of(signature: Signature, feed: Feed) -> dict[str, int]:
    """Sizes of the named dynamic dims as `feed` shows them (first input that has each dim wins)."""
    out: dict[str, int] = {}
    for info in signature.inputs:
        value = feed.get(info.name)
        if value is None or value.ndim != len(info.shape):
            continue
        for axis, dim in enumerate(info.shape):
            if isinstance(dim, str) and dim not in out:
                out[dim] = int(value.shape[axis])
    return out


def with_data_dims(context: DataContext, *samples: Samples) -> DataContext:
    """The context with dims the user did not fix (`--input`) sized like the first real sample: the export shape
    is then a shape the user's data proves the model runs."""
    for data in samples:
        if data is not None and len(data) and not data.synthetic:
            seen = dims_of(context.signature, data.feeds[0])
            dims = {**context.dims, **{k: v for k, v in seen.items() if k not in context.given}}
            return replace(context, dims=dims)
    return context


def spec_dims(signature: Signature, specs: tuple[InputSpec, ...], option: str,
              model: str = "the model") -> dict[str, int]:
    """Dim sizes named by `--input`/`--check-shape` specs, mapped onto the model's dynamic dim names."""
    out: dict[str, int] = {}
    names = set(signature.input_names)
    for spec in specs:
        if spec.name not in names:
            raise UsageError(f"{option} names '{spec.name}', which is not an input of {model}",
                             hint=f"model inputs are {', '.join(sorted(names))}")
        info = signature.input(spec.name)
        if len(spec.dims) != len(info.shape):
            raise UsageError(f"{option} {spec.name} has {len(spec.dims)} dims, the model's input has {len(info.shape)}",
                             hint=f"the model declares {list(info.shape)}")
        for declared, given in zip(info.shape, spec.dims):
            if isinstance(declared, int) and declared != given.size:
                raise UsageError(f"{option} {spec} does not match the model's static shape {list(info.shape)}",
                                 hint="static dims must be given as declared")
            if isinstance(declared, str):
                out[declared] = given.size
    return out


@dataclass(frozen=True)
class Probe:
    """A second shape to check the graph at, and where it came from."""

    label: str
    feed: Feed
    derived: bool  # made up by kiln (a source that cannot run it is reported, not an error)


def _grown(context: DataContext) -> list[dict[str, int]]:
    """Derived second shapes, most thorough first: batch-like dims grown by one together with every other dynamic
    dim larger than 1 doubled (doubling keeps divisibility and minimums); then the non-batch growth alone; then the
    batch alone (a size-1 axis not named like a batch is left alone: more often than not it is a batch kiln cannot
    name, e.g. a recurrent state's axis 1)."""
    batch = {n: s + 1 for n, s in context.dims.items() if is_batch(n)}
    others = {n: s * 2 for n, s in context.dims.items() if not is_batch(n) and s > 1}
    if not batch and not others:
        return [{n: s + 1 for n, s in context.dims.items()}]
    candidates = [{**batch, **others}, others, batch]
    unique: list[dict[str, int]] = []
    for candidate in candidates:
        if candidate and candidate not in unique:
            unique.append(candidate)
    return unique


def feed_at(context: DataContext, base: Feed, dims: dict[str, int], rng: np.random.Generator) -> Feed:
    """`base` with the inputs whose shape changes under `dims` replaced by random values at the new shape: inputs
    that keep their shape (a sample rate, a recurrent state) keep their real values."""
    fresh = random_feed(context, rng, dims)
    feed = {}
    for info in context.signature.inputs:
        old = base.get(info.name)
        new_shape = resolve_shape(info.shape, {**context.dims, **dims})
        feed[info.name] = old if old is not None and old.shape == new_shape else fresh[info.name]
    return feed


def choose_probes(context: DataContext, base: Feed, data: tuple[Samples, ...], check_dims: dict[str, int],
                  rng: np.random.Generator) -> list[Probe]:
    """Second shapes to check, in order of preference: `--check-shape`; else the first data sample whose shapes
    differ from `base`; else the derived ones (`_grown`), of which the first the source model runs is used.
    Empty when the model has no dynamic dims."""
    if not context.dims:
        return []
    if check_dims:
        return [Probe("--check-shape", feed_at(context, base, check_dims, rng), derived=False)]
    shape = {k: v.shape for k, v in base.items()}
    for samples in data:
        for i, feed in enumerate(samples.feeds if samples is not None and not samples.synthetic else ()):
            if any(k in shape and v.shape != shape[k] for k, v in feed.items()):
                return [Probe(f"{samples.kind} sample {i} (another shape)", feed, derived=False)]
    return [Probe("a derived shape", feed_at(context, base, dims, rng), derived=True) for dims in _grown(context)]


def failure(exc: BaseException) -> str:
    """Why a model could not run a feed, in one line: the node and op ONNX Runtime names, or the first line of
    a torch error."""
    text = " ".join((exc.message if isinstance(exc, KilnError) else str(exc)).split())
    found = re.findall(r"running (\S+) node\. Name:'([^']*)' Status Message: (.*?)(?= Non-zero status code|$)", text)
    if found:  # nested in If/Loop bodies: the innermost node is the one that failed
        op, node, message = found[-1]
        message = re.sub(r"/onnxruntime_src/\S+:\d+ [^(]*\([^)]*\)\s*", "", message)
        message = re.sub(r"^.{0,200}? was false\.\s*", "", message)  # the C++ condition that failed
        return f"node '{node}' ({op}): {message.strip()[:200]}"
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    return text[:240] or type(exc).__name__


def describe(feed: Feed) -> str:
    return ", ".join(f"{k} {list(v.shape)}" for k, v in feed.items())
