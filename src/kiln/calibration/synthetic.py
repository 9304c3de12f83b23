"""Random inputs shaped like the model's. Never used for accuracy unless the user consents."""

from __future__ import annotations

import numpy as np

from kiln.calibration.samples import DataContext, Feed, Samples
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


def random_feed(context: DataContext, rng: np.random.Generator, overrides: dict[str, int] | None = None) -> Feed:
    feed: Feed = {}
    for info in context.signature.inputs:
        shape = resolve_shape(info.shape, context.dims, overrides)
        dtype = numpy_dtype(info.dtype)
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
