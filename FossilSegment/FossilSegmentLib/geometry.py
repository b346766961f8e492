"""Exact conversion between Slicer's IJK-to-RAS matrix and the engine's LPS geometry (numpy only)."""

from __future__ import annotations

import numpy as np

#: RAS <-> LPS: negate the first two axes.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lpsGeometryFromIJKToRAS(ijkToRAS: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """``(spacing, origin, direction)`` in the engine's LPS convention for any IJK-to-RAS matrix.

    Works for oblique, permuted, flipped and anisotropic axes: spacing is the length of each
    column, direction the unit column (as LPS), origin the LPS position of voxel (0, 0, 0).
    """
    m = np.asarray(ijkToRAS, dtype=float)
    if m.shape != (4, 4):
        raise ValueError(f"IJK-to-RAS must be 4x4, got {m.shape}")
    lps = RAS_TO_LPS @ m
    axes = lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if np.any(spacing <= 0) or abs(np.linalg.det(axes)) < 1e-12:
        raise ValueError("IJK-to-RAS matrix is singular (a zero spacing or collinear axes)")
    direction = axes / spacing
    return tuple(spacing.tolist()), tuple(lps[:3, 3].tolist()), tuple(direction.ravel().tolist())


def ijkToRASFromLpsGeometry(spacing, origin, direction) -> np.ndarray:
    """The inverse of :func:`lpsGeometryFromIJKToRAS`: a 4x4 IJK-to-RAS matrix."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3) @ np.diag(np.asarray(spacing, dtype=float))
    m[:3, 3] = np.asarray(origin, dtype=float)
    return RAS_TO_LPS @ m


def kRangeOfPoints(rasToIJK: np.ndarray, pointsRAS: np.ndarray, dims: tuple[int, int, int]) -> tuple[int, int]:
    """Half-open range of K slices ``(start, stop)`` covered by RAS points, clipped to the volume.

    ``dims`` is ``(ni, nj, nk)``; points whose box misses the volume on any axis → ``ValueError``.
    """
    pts = np.c_[np.asarray(pointsRAS, dtype=float), np.ones(len(pointsRAS))]
    ijk = (np.asarray(rasToIJK, dtype=float) @ pts.T)[:3]
    lo = np.maximum(0, np.floor(ijk.min(axis=1) + 0.5)).astype(int)
    hi = np.minimum(np.asarray(dims), np.floor(ijk.max(axis=1) + 0.5) + 1).astype(int)
    if np.any(hi <= lo):
        raise ValueError("the region of interest does not overlap the volume")
    return int(lo[2]), int(hi[2])
