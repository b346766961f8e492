"""Shape priors from annotated slices: signed distance interpolated between them along their own axis.

For each volume axis that has annotated slices, a voxel's prior is the signed distance (mm, positive inside the
foreground) to the annotated outline on the two nearest annotated slices along that axis, blended linearly by
position (the nearest one's beyond the first and last), plus its distance (mm) to the nearest annotated slice —
how far the classifier should trust it. Axes without annotations give NaN (a missing value to the classifier).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from .annotations import Annotation

#: signed distances are clipped to this many millimetres (far from any outline the exact value says nothing)
CLIP_MM = 50.0


def signed_distance(mask: np.ndarray, spacing: Sequence[float], clip: float = CLIP_MM) -> np.ndarray:
    """Signed Euclidean distance (mm) of a 2D mask: positive inside, negative outside, clipped to ±``clip``."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.full(mask.shape, -clip, np.float32)
    if mask.all():
        return np.full(mask.shape, clip, np.float32)
    d = ndi.distance_transform_edt(mask, sampling=spacing) - ndi.distance_transform_edt(~mask, sampling=spacing)
    return np.clip(d, -clip, clip).astype(np.float32)


class AxisPrior:
    """The interpolated signed distance along one axis (0 = K, 1 = J, 2 = I) of a KJI volume of ``shape``."""

    def __init__(self, axis: int, annotations: Sequence[Annotation], shape: Sequence[int],
                 spacing_kji: Sequence[float], cache: dict[int, np.ndarray] | None = None) -> None:
        """``cache`` (keyed by ``id(annotation)``) shares each slice's signed distance between priors built from
        overlapping sets of annotations (the leave-one-out priors of training), so each is computed and held once."""
        self.axis, self.shape = axis, tuple(shape)
        anns = sorted((a for a in annotations if a.axis == axis), key=lambda a: a.index)
        self.positions = np.array([a.index for a in anns], dtype=np.int64)
        self.step = float(spacing_kji[axis])
        plane = [s for n, s in enumerate(spacing_kji) if n != axis]
        cache = {} if cache is None else cache
        for a in anns:
            if id(a) not in cache:
                cache[id(a)] = signed_distance(a.labels > 0, plane)
        self.sdf = [cache[id(a)] for a in anns] or None  # one 2D array per annotated slice, in index order

    def _bracket(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For slice indices ``idx`` along the axis: lower/upper annotation numbers, weight of the upper, distance mm."""
        pos = self.positions
        hi = np.clip(np.searchsorted(pos, idx, side="left"), 0, len(pos) - 1)
        lo = np.clip(np.searchsorted(pos, idx, side="right") - 1, 0, len(pos) - 1)
        span = (pos[hi] - pos[lo]).astype(np.float32)
        w = np.where(span > 0, (idx - pos[lo]) / np.maximum(span, 1), 0.0).astype(np.float32)
        w = np.where(idx < pos[0], 1.0, np.where(idx > pos[-1], 0.0, w)).astype(np.float32)
        dist = np.min(np.abs(idx[:, None] - pos[None, :]), axis=1).astype(np.float32) * self.step
        return lo, hi, w, dist

    def slab(self, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray]:
        """(signed distance, distance to the nearest annotated slice) for axial slices k0..k1-1, each (k1-k0, J, I)."""
        n, nj, ni = k1 - k0, self.shape[1], self.shape[2]
        if self.sdf is None:
            nan = np.full((n, nj, ni), np.nan, np.float32)
            return nan, nan.copy()
        if self.axis == 0:
            lo, hi, w, dist = self._bracket(np.arange(k0, k1))
            below, above = (np.stack([self.sdf[m] for m in ms]) for ms in (lo, hi))
            s = (1 - w)[:, None, None] * below + w[:, None, None] * above
            return s.astype(np.float32), np.broadcast_to(dist[:, None, None], s.shape).astype(np.float32)
        lo, hi, w, dist = self._bracket(np.arange(self.shape[self.axis]))
        block = np.stack([p[k0:k1] for p in self.sdf])  # (m, n, other): the annotated planes' rows for these slices
        s = (1 - w)[:, None, None] * block[lo] + w[:, None, None] * block[hi]  # (axis, n, other)
        if self.axis == 1:
            s = s.transpose(1, 0, 2)  # (n, J, I)
            d = np.broadcast_to(dist[None, :, None], s.shape)
        else:
            s = s.transpose(1, 2, 0)  # (n, J, I)
            d = np.broadcast_to(dist[None, None, :], s.shape)
        return np.ascontiguousarray(s, np.float32), np.ascontiguousarray(d, np.float32)


def prior_features(priors: Sequence[AxisPrior], k0: int, k1: int) -> np.ndarray:
    """(k1-k0, J, I, 2 × axes): signed distance and distance-to-annotation of every axis' prior."""
    parts = []
    for p in priors:
        parts.extend(p.slab(k0, k1))
    return np.stack(parts, axis=-1)
