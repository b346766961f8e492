"""The in-memory volume with exact geometry, shared by every part of the engine.

Conventions (the same as SimpleITK / ITK / NRRD "left-posterior-superior"):
- ``array`` is indexed ``[k, j, i]`` (slice, row, column); axial slices are ``array[k]``.
- ``spacing`` is ``(si, sj, sk)`` in mm, ``origin`` is the LPS position (mm) of voxel (0, 0, 0).
- ``direction`` is the 3x3 matrix, row-major as 9 floats, whose *columns* are the LPS directions of
  the i, j, k axes (SimpleITK's ``GetDirection()``).
Slicer uses RAS: negate the first two coordinates of origin and the first two rows of direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

IDENTITY_DIRECTION: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass
class Volume:
    """A 3D scalar image and its physical geometry (LPS, mm)."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = IDENTITY_DIRECTION
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.origin = tuple(float(o) for o in self.origin)  # type: ignore[assignment]
        self.direction = tuple(float(d) for d in np.asarray(self.direction, dtype=float).ravel())
        if len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise ValueError("spacing and origin need 3 values and direction 9")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(slices, rows, columns)."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    def with_array(self, array: np.ndarray, **meta: Any) -> "Volume":
        """The same geometry around another array of the same shape (e.g. a labelmap)."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array shape {array.shape} differs from volume shape {self.shape}")
        return replace(self, array=array, meta={**self.meta, **meta})

    def same_geometry(self, other: "Volume", tol: float = 1e-6) -> bool:
        """True when shape, spacing, origin and direction agree (within ``tol``)."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tol, rtol=0)
            and np.allclose(self.origin, other.origin, atol=tol, rtol=0)
            and np.allclose(self.direction, other.direction, atol=tol, rtol=0)
        )

    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix mapping (i, j, k, 1) to LPS millimetres."""
        m = np.eye(4)
        m[:3, :3] = np.asarray(self.direction).reshape(3, 3) @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m
