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
