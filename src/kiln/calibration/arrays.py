"""Array data: .npz files or .npy files keyed by input name."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiln.calibration.samples import DataContext, Feed, Samples, check_finite
from kiln.errors import UsageError
from kiln.signature import numpy_dtype


def _load(path: Path) -> dict[str, np.ndarray]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        return {path.stem: np.load(path, allow_pickle=False)}
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"cannot read array file {path}: {exc}",
                         hint="save arrays with numpy.save/numpy.savez (no pickled objects)") from None


def _split(name: str, array: np.ndarray, rank: int, where: str) -> list[np.ndarray]:
    """An array of the input's rank is split into batch-1 samples along axis 0; one rank higher is a list of feeds
    (the form for inputs whose batch axis is not axis 0, e.g. a recurrent state [layers, batch, hidden]); a scalar
    input takes a 0-d array (one sample) or a 1-d array (one value per sample)."""
    if array.ndim == rank == 0:
        return [array]
    if array.ndim == rank:
        return [array[i:i + 1] for i in range(array.shape[0])]
    if array.ndim == rank + 1:
        return list(array)
    raise UsageError(f"{where}: array '{name}' has {array.ndim} dims, the input has {rank}",
                     hint=f"store samples stacked on axis 0 (rank {rank}) or as a list of feeds (rank {rank + 1})")


def _check_constant(name: str, array: np.ndarray, value: np.ndarray, where: str) -> None:
    """Data may still hold an input the user bound with --constant (as it fed the unbound model): every sample must
    hold the bound value, or the artifact would be checked on data it will never see."""
    samples = array.reshape(-1, *value.shape) if value.ndim else array.reshape(-1)
    if not samples.size or not (samples == value).all():
        shown = np.unique(samples)[:4].tolist()
        raise UsageError(f"{where}: array '{name}' holds {shown}, but --constant binds {name}={value.tolist()}",
                         hint=f"drop '{name}' from the data, or bind the value it holds")


def array_samples(path: Path, context: DataContext, limit: int | None) -> Samples:
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy"))
    if not files:
        raise UsageError(f"folder {path} holds no .npz or .npy files", hint="save inputs with numpy.savez")
    merged: dict[str, list[np.ndarray]] = {}
    wanted = {t.name: t for t in context.signature.inputs}
    for file in files:
        for name, array in _load(file).items():
            if name in context.constants:
                _check_constant(name, array, context.constants[name], file.name)
                continue
            if name not in wanted:
                raise UsageError(f"{file.name}: array '{name}' is not a model input",
                                 hint=f"model inputs are {', '.join(wanted)}")
            merged.setdefault(name, []).extend(_split(name, array, len(wanted[name].shape), file.name))
    missing = [n for n in wanted if n not in merged]
    if missing:
        raise UsageError(f"{path.name}: no data for model input(s) {', '.join(missing)}",
                         hint="provide one array per model input, keyed by input name")
    counts = {n: len(v) for n, v in merged.items()}
    if len(set(counts.values())) != 1:
        raise UsageError(f"{path.name}: inputs have different sample counts {counts}", hint="align the arrays")
    total = next(iter(counts.values()))
    if total == 0:
        raise UsageError(f"{path.name} holds no samples (axis 0 is empty)", hint="save at least one sample per input")
    feeds: list[Feed] = []
    for i in range(min(total, limit or total)):
        feed = {}
        for name, info in wanted.items():
            value = merged[name][i]
            for axis, size in enumerate(info.shape):
                if isinstance(size, int) and axis < value.ndim and value.shape[axis] != size:
                    raise UsageError(f"{path.name}: input '{name}' has shape {list(value.shape)}, the model declares "
                                     f"{list(info.shape)}", hint="reshape the arrays to the model's static dims")
            want = numpy_dtype(info.dtype)
            if value.dtype != want:
                raise UsageError(f"{path.name}: input '{name}' is {value.dtype}, the model expects {want}",
                                 hint=f"convert with array.astype('{want}') before saving")
            feed[name] = np.ascontiguousarray(value) if np.ndim(value) else np.asarray(value)  # keeps 0-d
        check_finite(feed, f"{path.name} sample {i}")
        feeds.append(feed)
    return Samples(feeds=tuple(feeds), kind="arrays", description=f"{len(feeds)} samples from {path.name}")
