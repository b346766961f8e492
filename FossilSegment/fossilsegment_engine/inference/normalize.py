"""Per-volume robust intensity normalisation, shared by inference and training.

CT values differ between scanners, energies and reconstructions, so each volume is mapped with its
own low/high percentiles (computed on a deterministic subsample) to [0, 1], clipped.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..mapped_pages import release_pages

DEFAULT_NORMALIZATION: dict[str, Any] = {"method": "percentile", "low_percentile": 0.5, "high_percentile": 99.5}
#: voxels read at a time while sampling (a memory-mapped input's pages are handed back after each slab)
SAMPLE_SLAB_VOXELS = 16 << 20


def strided_sample(array: np.ndarray, step: int) -> np.ndarray:
    """``array.reshape(-1)[::step]`` as float64, read a slab of axial slices at a time: the pages of a memory-mapped
    ``array`` are handed back after each slab, so sampling never holds the whole input in memory."""
    if array.ndim < 2:
        return np.asarray(array.reshape(-1)[::step], dtype=np.float64)
    plane = int(np.prod(array.shape[1:]))
    rows = max(1, SAMPLE_SLAB_VOXELS // max(plane, 1))
    parts = [np.zeros(0)]
    for k0 in range(0, array.shape[0], rows):
        k1 = min(k0 + rows, array.shape[0])
        first = (-k0 * plane) % step  # the first multiple of step inside this slab
        parts.append(np.asarray(array[k0:k1].reshape(-1)[first::step], dtype=np.float64))
        release_pages(array, k0, k1)
    return np.concatenate(parts)


def intensity_range(
    array: np.ndarray, low_percentile: float = 0.5, high_percentile: float = 99.5, max_samples: int = 2_000_000
) -> tuple[float, float]:
    """(lo, hi) intensity percentiles of ``array`` from at most ``max_samples`` evenly strided voxels."""
    step = max(1, array.size // max_samples)
    sample = strided_sample(array, step)
    lo, hi = np.percentile(sample, [low_percentile, high_percentile])
    if not hi > lo:  # nearly constant volume: widen to the full range
        lo, hi = float(sample.min()), float(sample.max())
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def volume_intensity_range(array: np.ndarray, normalization: Mapping[str, Any] | None = None) -> tuple[float, float]:
    """The (lo, hi) range a model config's ``normalization`` asks for on this volume."""
    cfg = {**DEFAULT_NORMALIZATION, **(normalization or {})}
    if cfg["method"] != "percentile":
        raise ValueError(f"unknown normalization method {cfg['method']!r}")
    return intensity_range(array, cfg["low_percentile"], cfg["high_percentile"])


def apply_intensity_range(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``values`` mapped linearly so lo→0 and hi→1, clipped to [0, 1], as float32."""
    out = (np.asarray(values, dtype=np.float32) - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)
