"""Region of interest: a box of voxels (half-open bounds in [k, j, i] order) to segment within a volume."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


@dataclass(frozen=True)
class Box:
    """Voxel box ``[k0, k1) × [j0, j1) × [i0, i1)`` (slices, rows, columns), stop excluded."""

    k0: int
    k1: int
    j0: int
    j1: int
    i0: int
    i1: int

    @classmethod
    def whole(cls, shape: tuple[int, int, int]) -> "Box":
        """The box covering a whole volume of ``shape`` (k, j, i)."""
        return cls(0, int(shape[0]), 0, int(shape[1]), 0, int(shape[2]))

    @property
    def shape(self) -> tuple[int, int, int]:
        """(slices, rows, columns) inside the box."""
        return (self.k1 - self.k0, self.j1 - self.j0, self.i1 - self.i0)

    def slices(self) -> tuple[slice, slice, slice]:
        """numpy index for ``array[box.slices()]``."""
        return (slice(self.k0, self.k1), slice(self.j0, self.j1), slice(self.i0, self.i1))

    def check_inside(self, shape: tuple[int, int, int]) -> "Box":
        """``self`` when it is a non-empty box inside a volume of ``shape``; else :class:`InputError`."""
        bounds = ((self.k0, self.k1), (self.j0, self.j1), (self.i0, self.i1))
        for axis, ((lo, hi), n) in enumerate(zip(bounds, shape)):
            if not 0 <= lo < hi <= n:
                name = "kji"[axis]
                raise InputError(f"region of interest {name} {lo}..{hi} is not a non-empty range inside the "
                                 f"volume's 0..{n} (stop excluded); volume shape (k, j, i) = {tuple(shape)}")
        return self
