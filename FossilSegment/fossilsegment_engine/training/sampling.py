"""Random 2.5D training crops from the kept slices of the training specimens."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..inference.context import context_slices
from .data import Specimen


def specimen_weights(specs: Sequence[Specimen]) -> np.ndarray:
    """Pick a specimen with probability proportional to its number of kept slices."""
    n = np.array([max(len(s.slices), 0) for s in specs], dtype=np.float64)
    if n.sum() == 0:
        n = np.ones(len(specs))
    return n / n.sum()


def _pad_to(a: np.ndarray, size: int) -> np.ndarray:
    """Pad the last two axes of ``a`` to at least ``size`` (symmetric: mirrors image and labels alike)."""
    ph, pw = max(0, size - a.shape[-2]), max(0, size - a.shape[-1])
    if ph == 0 and pw == 0:
        return a
    pad = [(0, 0)] * (a.ndim - 2) + [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)]
    return np.pad(a, pad, mode="symmetric")


def sample_crop(
    spec: Specimen, crop: int, n_context: int, rng: np.random.Generator, foreground_prob: float
) -> tuple[np.ndarray, np.ndarray]:
    """One crop: image ``(n_context, crop, crop)`` float32 and labels ``(crop, crop)`` uint8.

    With probability ``foreground_prob`` the crop is centred (± crop/4) on a random foreground pixel of
    the chosen slice, else placed uniformly. Slices smaller than ``crop`` are mirrored out to it.
    """
    pool = spec.slices if len(spec.slices) else np.arange(spec.image.shape[0])
    k = int(rng.choice(pool))
    _, h, w = spec.image.shape
    lab = spec.labels.array[k]
    fg = np.flatnonzero(lab) if rng.random() < foreground_prob else np.zeros(0, dtype=np.int64)
    if fg.size:
        cy, cx = divmod(int(rng.choice(fg)), w)
        cy += int(rng.integers(-crop // 4, crop // 4 + 1))
        cx += int(rng.integers(-crop // 4, crop // 4 + 1))
        y0 = int(np.clip(cy - crop // 2, 0, max(h - crop, 0)))
        x0 = int(np.clip(cx - crop // 2, 0, max(w - crop, 0)))
    else:
        y0 = int(rng.integers(0, max(h - crop, 0) + 1))
        x0 = int(rng.integers(0, max(w - crop, 0) + 1))
    img = context_slices(spec.image[:, y0:y0 + crop, x0:x0 + crop], [k], n_context)[0]
    return _pad_to(img, crop).astype(np.float32), _pad_to(lab[y0:y0 + crop, x0:x0 + crop], crop)


def sample_batch(
    specs: Sequence[Specimen],
    weights: np.ndarray,
    batch_size: int,
    crop: int,
    n_context: int,
    rng: np.random.Generator,
    foreground_prob: float = 0.67,
) -> tuple[np.ndarray, np.ndarray]:
    """``(batch_size, n_context, crop, crop)`` float32 images and ``(batch_size, crop, crop)`` int64 labels."""
    images, labels = [], []
    for _ in range(batch_size):
        spec = specs[int(rng.choice(len(specs), p=weights))]
        x, y = sample_crop(spec, crop, n_context, rng, foreground_prob)
        images.append(x)
        labels.append(y)
    return np.stack(images), np.stack(labels).astype(np.int64)
