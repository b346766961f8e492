"""Classical bright-bone proxies on unlabelled real CT, so "bones kept" can be measured without labels.

A proxy is a conservative *subset* of the bone (the surest, brightest part), not a segmentation: the share
of it that a model labels (:func:`proxy_recall`) must stay high, so a model cannot remove speckle by
predicting nothing. Two methods, both "high threshold, then keep the large 2D components (8-connected)":

- ``thin``: thin bright bone in a large noisy matrix (the paddlefish slice). Residual of a light smoothing
  (σ 0.7 px) minus a smooth background (σ 12 px, a white top-hat), above ``k`` robust noise s.d. (1.4826 ×
  MAD of the residual in the field of view). Reconstruction padding (constant 3×3 patches, e.g. the fill
  outside the scanner's circle, and 3 px around it) is left out of the background and of the proxy.
- ``phase``: bone as a large high-contrast phase (micro-CT of bone, a shell in air): above the Otsu
  threshold of the measured slices.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.morphology import remove_small_objects

METHODS = ("thin", "phase")


def padding_mask(image: np.ndarray, margin: int = 3) -> np.ndarray:
    """Pixels in or within ``margin`` px of constant 3×3 patches (fill values, not measured signal)."""
    a = image.astype(np.float64)
    mean = ndimage.uniform_filter(a, 3)
    constant = ndimage.uniform_filter(a * a, 3) - mean * mean < 1e-6
    return ndimage.binary_dilation(constant, iterations=margin) if margin > 0 and constant.any() else constant


def large_components(mask: np.ndarray, min_px: int) -> np.ndarray:
    """The 8-connected pieces of a 2D ``mask`` with at least ``min_px`` pixels."""
    return remove_small_objects(mask, max_size=min_px - 1, connectivity=2)


def thin_bright(image: np.ndarray, k: float = 5.0, min_px: int = 100) -> np.ndarray:
    """The ``thin`` proxy of one slice: top-hat residual above ``k`` noise s.d., large pieces only."""
    a = image.astype(np.float32)
    field = ~padding_mask(image)
    if not field.any():
        return np.zeros(a.shape, dtype=bool)
    weight = field.astype(np.float32)  # the background is a smoothing of the field of view only
    background = ndimage.gaussian_filter(a * weight, 12.0) / np.maximum(ndimage.gaussian_filter(weight, 12.0), 1e-6)
    residual = ndimage.gaussian_filter(a, 0.7) - background
    values = residual[field]
    median = float(np.median(values))
    noise = 1.4826 * float(np.median(np.abs(values - median)))
    return large_components((residual > median + k * max(noise, 1e-6)) & field, min_px)


def bone_proxy(array: np.ndarray, method: str, min_px: int = 100) -> np.ndarray:
    """Boolean proxy mask of a (slices, rows, cols) array by ``method`` (``thin`` or ``phase``)."""
    if method == "thin":
        return np.stack([thin_bright(s, min_px=min_px) for s in array])
    if method == "phase":
        threshold = threshold_otsu(array)
        return np.stack([large_components(s > threshold, min_px) for s in array])
    raise ValueError(f"unknown bone proxy {method!r}; expected one of {METHODS}")


def proxy_recall(labels: np.ndarray, proxy: np.ndarray) -> float | None:
    """Share of the proxy's voxels the prediction labels as foreground (None for an empty proxy)."""
    total = int(proxy.sum())
    return float(((labels > 0) & proxy).sum() / total) if total else None
