"""Deterministic sample images for evaluating and calibrating exported vision models.

scikit-image ships about 20 natural (and a few synthetic) images that load
offline, without a network download, so they make a small, reproducible image
set that needs no dataset licence or fetch step. They are not ImageNet content,
so accuracy on them is reported as top-1 agreement with the fp32 model, not as
accuracy against labels.

``kind="eval"`` gives 8 views per source image (center square, three square
crops, each with its horizontal flip). ``kind="calibration"`` gives a disjoint
set of 4 random square crops per source (``numpy.random.default_rng(7)``), so
calibration and evaluation images are not the same pixels.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

SIZE = 256

# Images that load offline here (scikit-image 0.26, no pooch). "chelsea" is the
# same picture as "cat"; skin, eagle, lily, kidney, brain, etc. need a download.
SOURCES: tuple[str, ...] = (
    "astronaut", "brick", "camera", "cat", "checkerboard", "clock", "coffee",
    "coins", "colorwheel", "grass", "gravel", "horse", "hubble_deep_field",
    "immunohistochemistry", "logo", "moon", "motorcycle", "page", "retina",
    "rocket", "text",
)

# Eval crops: (name, fraction of the short side, anchor y, anchor x), anchors in [0, 1].
EVAL_CROPS = (("full", 1.0, 0.5, 0.5), ("tl70", 0.7, 0.0, 0.0),
              ("c60", 0.6, 0.5, 0.5), ("br70", 0.7, 1.0, 1.0))
CALIBRATION_PER_SOURCE = 4


def _load(name: str) -> np.ndarray | None:
    """Load one bundled image as RGB uint8, or None if it is not available offline."""
    import skimage.data

    try:
        if name == "motorcycle":
            img = skimage.data.stereo_motorcycle()[0]
        else:
            img = getattr(skimage.data, name)()
    except (ModuleNotFoundError, OSError) as exc:  # needs pooch / a download / missing file
        warnings.warn(f"skimage.data.{name} not available offline: {exc}", stacklevel=3)
        return None
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        img = np.clip(np.rint(img.astype(np.float64) * (255.0 if img.max() <= 1.0 else 1.0)), 0, 255)
        img = img.astype(np.uint8)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    elif img.shape[-1] == 4:  # composite RGBA over white
        alpha = img[..., 3:4].astype(np.float64) / 255.0
        img = np.rint(img[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(img[..., :3])


def _square_crop(img: np.ndarray, frac: float, ay: float, ax: float) -> np.ndarray:
    """Square crop with side ``frac * short side``, anchored at relative position (ay, ax)."""
    h, w = img.shape[:2]
    side = max(1, int(round(frac * min(h, w))))
    y0 = int(round(ay * (h - side)))
    x0 = int(round(ax * (w - side)))
    return img[y0:y0 + side, x0:x0 + side]


def _resize(img: np.ndarray) -> np.ndarray:
    from skimage.transform import resize

    out = resize(img.astype(np.float64), (SIZE, SIZE), order=1, mode="reflect",
                 anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _save(img: np.ndarray, path: Path) -> None:
    try:
        from PIL import Image
    except ImportError:
        import skimage.io

        skimage.io.imsave(path, img, check_contrast=False)
    else:
        Image.fromarray(img, mode="RGB").save(path, format="PNG")


def _views(kind: str, img: np.ndarray, params: list[tuple[float, float, float, bool]]):
    if kind == "eval":
        for name, frac, ay, ax in EVAL_CROPS:
            view = _resize(_square_crop(img, frac, ay, ax))
            yield name, view
            yield f"{name}_flip", view[:, ::-1]
    else:
        for i, (frac, ay, ax, flip) in enumerate(params):
            view = _resize(_square_crop(img, frac, ay, ax))
            yield (f"rc{i}_flip", view[:, ::-1]) if flip else (f"rc{i}", view)


def write_sample_images(out_dir: Path, *, kind: str = "eval", per_source: int = CALIBRATION_PER_SOURCE) -> list[Path]:
    """Write the deterministic ``kind`` image set as ``{kind}_{source}_{variant}.png``.

    ``per_source``: random crops per source image for ``kind="calibration"`` (a larger tuning split for
    ``--precision auto``). Returns the sorted list of written paths. Sources that are not available
    offline are skipped with a warning.
    """
    if kind not in ("eval", "calibration"):
        raise ValueError(f"kind must be 'eval' or 'calibration', got {kind!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths: list[Path] = []
    for source in SOURCES:
        # Draw crop parameters before loading, so a skipped source does not shift the others.
        params = [(float(rng.uniform(0.4, 0.9)), float(rng.uniform()), float(rng.uniform()), i % 2 == 1)
                  for i in range(per_source)]
        img = _load(source)
        if img is None:
            continue
        for variant, view in _views(kind, img, params):
            path = out_dir / f"{kind}_{source}_{variant}.png"
            _save(np.ascontiguousarray(view), path)
            paths.append(path)
    return sorted(paths)
