"""Random inputs shaped like the model's. Never used for accuracy unless the user consents."""

from __future__ import annotations

import math

import numpy as np

from kiln.calibration.samples import DataContext, Feed, Samples
from kiln.errors import UsageError
from kiln.signature import numpy_dtype


def resolve_shape(shape: tuple, dims: dict[str, int], overrides: dict[str, int] | None = None) -> tuple[int, ...]:
    out = []
    for d in shape:
        if isinstance(d, int):
            out.append(d)
        elif isinstance(d, str) and overrides and d in overrides:
            out.append(overrides[d])
        elif isinstance(d, str) and d in dims:
            out.append(dims[d])
        else:
            out.append(1)
    return tuple(out)


# Per input: 2^28 elements is 1 GiB of float32, far beyond any example a model is exported or measured with.
MAX_ELEMENTS = 1 << 28


def checked_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape, or a one-line error for a declared shape kiln cannot (or should not) allocate."""
    usage = f"give the shape to use with --input {name}=DIM,DIM,... (e.g. --input {name}=batch=1,3,224,224)"
    if any(d < 1 for d in shape):
        raise UsageError(f"input '{name}' declares shape {list(shape)} with a dimension below 1", hint=usage)
    if math.prod(shape) > MAX_ELEMENTS:
        raise UsageError(f"input '{name}' declares shape {list(shape)} ({math.prod(shape):.3g} elements)", hint=usage)
    return shape


def random_feed(context: DataContext, rng: np.random.Generator, overrides: dict[str, int] | None = None) -> Feed:
    feed: Feed = {}
    for info in context.signature.inputs:
        shape = checked_shape(info.name, resolve_shape(info.shape, context.dims, overrides))
        try:
            dtype = numpy_dtype(info.dtype)
        except TypeError:
            raise UsageError(f"input '{info.name}' has element type {info.dtype}, which kiln cannot make data for",
                             hint="kiln handles numeric and bool inputs; export a graph that takes those") from None
        lname = info.name.lower()
        if dtype.kind == "b":
            feed[info.name] = np.ones(shape, dtype=bool)
        elif dtype.kind in "iu":
            if "mask" in lname:
                feed[info.name] = np.ones(shape, dtype=dtype)
            elif "type" in lname or "segment" in lname:
                feed[info.name] = np.zeros(shape, dtype=dtype)
            else:
                high = context.int_high.get(info.name, 100)
                feed[info.name] = rng.integers(0, high, size=shape).astype(dtype)
        else:
            feed[info.name] = rng.standard_normal(shape).astype(dtype)
    return feed


def synthetic_samples(context: DataContext, count: int, seed: int) -> Samples:
    """Batch-1 random samples (dims named like a batch are set to 1, the size measured by default)."""
    rng = np.random.default_rng(seed)
    batch_one = {name: 1 for name in context.dims if "batch" in name.lower()}
    return Samples(
        feeds=tuple(random_feed(context, rng, batch_one) for _ in range(count)),
        kind="synthetic",
        description=f"{count} random samples (seed {seed}): accuracy figures against them are not meaningful",
        synthetic=True,
    )
