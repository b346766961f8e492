"""Region of interest: a box of voxels (half-open bounds in [k, j, i] order) to segment within a volume.

Users give boxes in x, y, z order: voxels as ``i0:i1,j0:j1,k0:k1`` (column, row, slice, like Slicer's IJK;
stop excluded; an empty start or stop means the volume's edge) or millimetres as ``x0:x1,y0:y1,z0:z1`` in
LPS (the same physical coordinates as the volume's origin and direction). A millimetre box becomes the
voxels it touches: its 8 corners go through the inverse of ``Volume.ijk_to_lps()`` (any oblique, flipped or
permuted direction), and every voxel whose extent (centre ± half a voxel along i, j, k) overlaps their
bounding box in IJK is kept, clipped to the volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Optional, Sequence

import numpy as np

from .errors import InputError

#: (start or None, stop or None) per axis, in i, j, k order — a voxel box before the volume's shape is known
VoxelSpec = tuple[tuple[Optional[int], Optional[int]], ...]
#: (low, high) in mm per axis, in x, y, z (LPS) order
MmBounds = tuple[tuple[float, float], ...]



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

    def intersect(self, other: "Box") -> Optional["Box"]:
        """The voxels in both boxes, or None when they share none."""
        box = Box(max(self.k0, other.k0), min(self.k1, other.k1), max(self.j0, other.j0), min(self.j1, other.j1),
                  max(self.i0, other.i0), min(self.i1, other.i1))
        return box if min(box.shape) > 0 else None

    def ijk_ranges(self) -> list[list[int]]:
        """``[[i0, i1], [j0, j1], [k0, k1]]`` (x, y, z order, stop excluded), as users write ``--roi``."""
        return [[self.i0, self.i1], [self.j0, self.j1], [self.k0, self.k1]]

    def __str__(self) -> str:
        return f"{self.i0}:{self.i1},{self.j0}:{self.j1},{self.k0}:{self.k1}"


# ---------------------------------------------------------------------------------------------- parsing
def _three_ranges(text: str, option: str, example: str) -> list[tuple[str, str]]:
    parts = [p.strip() for p in str(text).split(",")]
    pairs = [p.split(":") for p in parts]
    if len(parts) != 3 or any(len(p) != 2 for p in pairs):
        raise InputError(f"{option} takes three START:STOP ranges separated by commas (e.g. {example}), got {text!r}")
    return [(a.strip(), b.strip()) for a, b in pairs]


def parse_voxel_roi(text: str) -> VoxelSpec:
    """``"i0:i1,j0:j1,k0:k1"`` (column, row, slice; stop excluded; start/stop may be empty) → a VoxelSpec."""
    spec = []
    for axis, (a, b) in zip("ijk", _three_ranges(text, "--roi", "100:400,:,20:180")):
        try:
            start, stop = (int(a) if a else None), (int(b) if b else None)
        except ValueError as exc:
            raise InputError(f"--roi {text}: {axis} range {a}:{b} needs whole voxel indices") from exc
        if (start is not None and start < 0) or (stop is not None and stop < 0):
            raise InputError(f"--roi {text}: {axis} range {a}:{b} has a negative index")
        if start is not None and stop is not None and stop <= start:
            raise InputError(f"--roi {text}: {axis} range {a}:{b} is empty (need START < STOP)")
        spec.append((start, stop))
    return tuple(spec)


def parse_mm_roi(text: str) -> MmBounds:
    """``"x0:x1,y0:y1,z0:z1"`` in mm (LPS) → ((x0, x1), (y0, y1), (z0, z1)); each low < high, all finite."""
    bounds = []
    for axis, (a, b) in zip("xyz", _three_ranges(text, "--roi-mm", "-12.5:30,0:45.2,100:160")):
        try:
            lo, hi = float(a), float(b)
        except ValueError as exc:
            raise InputError(f"--roi-mm {text}: {axis} range {a}:{b} needs two numbers in mm") from exc
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
            raise InputError(f"--roi-mm {text}: {axis} range {a}:{b} must go from a lower to a higher finite value")
        bounds.append((lo, hi))
    return tuple(bounds)


# ---------------------------------------------------------------------------------------------- conversion
def box_from_voxel_spec(spec: VoxelSpec, shape: tuple[int, int, int]) -> Box:
    """The Box of a parsed ``--roi`` in a volume of ``shape`` (k, j, i): open ends → the volume's edges,
    stops past the edge clipped; a range starting at or past the edge → :class:`InputError`."""
    sizes = (shape[2], shape[1], shape[0])  # i, j, k
    ranges = []
    for axis, (start, stop), n in zip("ijk", spec, sizes):
        lo = 0 if start is None else start
        hi = n if stop is None else min(stop, n)
        if lo >= hi:
            raise InputError(f"--roi: the {axis} range starts at {lo}, outside the volume's 0..{n} (stop excluded); "
                             f"volume size (i, j, k) = {tuple(sizes)} voxels")
        ranges.append((lo, hi))
    (i0, i1), (j0, j1), (k0, k1) = ranges
    return Box(k0, k1, j0, j1, i0, i1)


def covering_box(points_ijk: np.ndarray, shape: tuple[int, int, int], tolerance: float = 1e-9) -> Optional[Box]:
    """The voxels of a volume of ``shape`` (k, j, i) whose extent overlaps the IJK bounding box of
    ``points_ijk`` (N × 3 continuous i, j, k; voxel centres at integers); None when they miss the volume.

    A voxel the box enters by no more than ``tolerance`` (in voxels) is left out, so that a box on voxel faces
    with rounding noise (10.5000000001 after a rotation; float32 positions in Slicer) selects what it encloses."""
    ijk = np.asarray(points_ijk, dtype=float).reshape(-1, 3)
    if not np.all(np.isfinite(ijk)):
        raise InputError("the region of interest has non-finite coordinates")
    lo, hi = ijk.min(axis=0), ijk.max(axis=0)
    first = np.floor(lo - 0.5 + tolerance).astype(np.int64) + 1  # n + 0.5 > lo
    last = np.ceil(hi + 0.5 - tolerance).astype(np.int64) - 1  # n - 0.5 < hi
    last = np.maximum(last, first)  # a flat region on a voxel boundary still selects one voxel
    sizes = np.array([shape[2], shape[1], shape[0]])
    first, stop = np.maximum(first, 0), np.minimum(last + 1, sizes)
    if np.any(stop <= first):
        return None
    return Box(int(first[2]), int(stop[2]), int(first[1]), int(stop[1]), int(first[0]), int(stop[0]))


def box_corners(bounds: Sequence[Sequence[float]]) -> np.ndarray:
    """The 8 corners (8 × 3) of an axis-aligned box ``((x0, x1), (y0, y1), (z0, z1))``."""
    return np.array(list(product(*[tuple(map(float, b)) for b in bounds])), dtype=float)


def lps_extent(ijk_to_lps: np.ndarray, shape: tuple[int, int, int]) -> MmBounds:
    """The volume's LPS bounding box (outer faces of its voxels) for messages: ((x0, x1), (y0, y1), (z0, z1))."""
    edges = box_corners([(-0.5, n - 0.5) for n in (shape[2], shape[1], shape[0])])
    lps = (np.asarray(ijk_to_lps, dtype=float) @ np.c_[edges, np.ones(8)].T)[:3].T
    return tuple((float(a), float(b)) for a, b in zip(lps.min(axis=0), lps.max(axis=0)))


def format_mm(bounds: MmBounds) -> str:
    """``x0:x1,y0:y1,z0:z1`` with 3 decimals (the ``--roi-mm`` syntax)."""
    return ",".join(f"{lo:.3f}:{hi:.3f}" for lo, hi in bounds)


def box_from_lps_bounds(bounds: MmBounds, ijk_to_lps: np.ndarray, shape: tuple[int, int, int]) -> Box:
    """The voxels touched by an axis-aligned LPS box, for a volume with this 4×4 IJK-to-LPS matrix and
    ``shape`` (k, j, i); a box missing the volume → :class:`InputError` naming the volume's LPS bounds."""
    to_ijk = np.linalg.inv(np.asarray(ijk_to_lps, dtype=float))
    corners = box_corners(bounds)
    ijk = (to_ijk @ np.c_[corners, np.ones(len(corners))].T)[:3].T
    box = covering_box(ijk, shape)
    if box is None:
        raise InputError(f"--roi-mm {format_mm(bounds)} lies entirely outside the volume, which spans "
                         f"{format_mm(lps_extent(ijk_to_lps, shape))} mm (x, y, z in LPS)")
    return box


def resolve_roi(shape: tuple[int, int, int], ijk_to_lps: np.ndarray, voxels: Optional[str] = None,
                mm: Optional[str] = None, slices: Optional[tuple[int, int]] = None) -> Optional[Box]:
    """The Box for the CLI's ``--roi`` or ``--roi-mm`` (not both) intersected with ``--slices`` (k range);
    None when neither ROI option is given. A ``--slices`` range disjoint from the ROI → :class:`InputError`."""
    if voxels and mm:
        raise InputError("give either --roi (voxels) or --roi-mm (millimetres), not both")
    if voxels:
        box = box_from_voxel_spec(parse_voxel_roi(voxels), shape)
    elif mm:
        box = box_from_lps_bounds(parse_mm_roi(mm), ijk_to_lps, shape)
    else:
        return None
    if slices is not None:
        k0, k1 = (int(v) for v in slices)
        both = box.intersect(Box(k0, k1, box.j0, box.j1, box.i0, box.i1))
        if both is None:
            raise InputError(f"--slices {k0}:{k1} and the region of interest (slices {box.k0}:{box.k1}) share "
                             "no slice")
        box = both
    return box.check_inside(shape)


def region_box(shape: tuple[int, ...], slice_range: tuple[int, int] | None = None, roi: Box | None = None) -> Box:
    """The voxels to work on: ``roi`` ∩ whole slices ``slice_range`` (each optional; neither → the whole
    volume of ``shape``). Bad bounds, or a range and box sharing no slice → :class:`InputError`."""
    k0, k1 = _check_range(slice_range, shape[0])
    if roi is None:
        return Box(k0, k1, 0, shape[1], 0, shape[2])
    if not isinstance(roi, Box):
        raise InputError(f"region of interest must be a Box of voxel bounds, got {type(roi).__name__}")
    bounds = (roi.k0, roi.k1, roi.j0, roi.j1, roi.i0, roi.i1)
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in bounds):
        raise InputError(f"region of interest bounds must be whole voxel indices, got {roi}")
    roi = Box(*(int(v) for v in bounds)).check_inside(tuple(shape))
    if max(k0, roi.k0) >= min(k1, roi.k1):
        raise InputError(f"region of interest slices {roi.k0}..{roi.k1} and slice range {k0}..{k1} share no slice")
    return Box(max(k0, roi.k0), min(k1, roi.k1), roi.j0, roi.j1, roi.i0, roi.i1)


def _check_range(slice_range: tuple[int, int] | None, n_slices: int) -> tuple[int, int]:
    if slice_range is None:
        return 0, n_slices
    try:
        k0, k1 = (int(v) for v in slice_range)
    except (TypeError, ValueError) as exc:
        raise InputError(f"slice range must be two integers (first, stop), got {slice_range!r}") from exc
    if not 0 <= k0 < k1 <= n_slices:
        raise InputError(f"slice range {k0}..{k1} is not inside the volume's 0..{n_slices} slices (stop excluded)")
    return k0, k1
