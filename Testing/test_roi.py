"""roi.py: parsing ``--roi``/``--roi-mm`` and mapping millimetre boxes to voxel boxes for any geometry.

Millimetre boxes are checked against brute force over every voxel centre in LPS: every voxel whose
centre lies in the box must be in the voxel box, and (for axis-aligned, flipped or permuted
geometry) the voxel box must be exactly the bounding box of the voxels whose extent overlaps it.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from fossilsegment_engine.errors import InputError
from fossilsegment_engine.roi import (Box, box_from_lps_bounds, box_from_voxel_spec, covering_box, parse_mm_roi,
                                      parse_voxel_roi, resolve_roi)
from fossilsegment_engine.volume import Volume

SHAPE = (9, 11, 13)  # k, j, i
SPACING = (0.5, 0.6, 0.7)
ORIGIN = (1.0, -2.0, 3.0)
FLIP_PERMUTE = (0, 0, -1, -1, 0, 0, 0, 1, 0)  # columns (LPS directions of i, j, k): i → -y, j → z, k → -x
OBLIQUE = tuple(sitk.VersorTransform((0.3, -0.2, 0.9), 0.7).GetMatrix())


def volume(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> Volume:
    return Volume(np.zeros(SHAPE, np.uint16), SPACING, ORIGIN, direction)


def centres_lps(vol: Volume) -> tuple[np.ndarray, np.ndarray]:
    """(N × 3 voxel indices i, j, k; N × 3 LPS centres) of every voxel."""
    k, j, i = np.indices(vol.shape).reshape(3, -1)
    ijk = np.c_[i, j, k]
    return ijk, (vol.ijk_to_lps() @ np.c_[ijk, np.ones(len(ijk))].T)[:3].T


def bbox_of(ijk: np.ndarray) -> Box:
    lo, hi = ijk.min(axis=0), ijk.max(axis=0) + 1
    return Box(int(lo[2]), int(hi[2]), int(lo[1]), int(hi[1]), int(lo[0]), int(hi[0]))


def contains(box: Box, ijk: np.ndarray) -> np.ndarray:
    i, j, k = ijk.T
    return (box.i0 <= i) & (i < box.i1) & (box.j0 <= j) & (j < box.j1) & (box.k0 <= k) & (k < box.k1)


# ------------------------------------------------------------------ voxels
def test_voxel_roi_is_i_j_k_order_with_open_ends_and_clipping() -> None:
    spec = parse_voxel_roi("2:5, :7 ,1:")
    assert spec == ((2, 5), (None, 7), (1, None))
    assert box_from_voxel_spec(spec, SHAPE) == Box(k0=1, k1=9, j0=0, j1=7, i0=2, i1=5)
    assert box_from_voxel_spec(parse_voxel_roi("10:99,:,:"), SHAPE) == Box(0, 9, 0, 11, 10, 13)  # stop clipped
    arr = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    box = box_from_voxel_spec(parse_voxel_roi("2:5,3:4,6:8"), SHAPE)
    assert arr[box.slices()].shape == (2, 1, 3) and box.ijk_ranges() == [[2, 5], [3, 4], [6, 8]]
    assert str(box) == "2:5,3:4,6:8"


@pytest.mark.parametrize("text", ["1:2,3:4", "1:2,3:4,5:6,7:8", "1-2,3:4,5:6", "a:2,3:4,5:6", "1.5:2,3:4,5:6",
                                  "-1:2,3:4,5:6", "4:4,3:4,5:6", "5:3,3:4,5:6", ""])
def test_bad_voxel_roi(text: str) -> None:
    with pytest.raises(InputError, match="--roi"):
        parse_voxel_roi(text)


def test_voxel_roi_starting_outside_names_the_size() -> None:
    with pytest.raises(InputError, match=r"\(13, 11, 9\)"):
        box_from_voxel_spec(parse_voxel_roi("13:20,:,:"), SHAPE)


# ------------------------------------------------------------------ millimetres
def test_mm_roi_identity_exact() -> None:
    vol = volume()
    # x 2.0..4.0 → i (2-1)/0.5 = 2 .. 6 → voxels 2..6 touch it; y -1.1..0.1 → j 1.5..3.5 (voxel boundaries:
    # 1 and 4 only touch at a face, so j 2..3); z 3.0..3.0+0.7*2.2 → k 0..2.2 → 0..2
    box = box_from_lps_bounds(parse_mm_roi("2:4,-1.1:0.1,3:4.54"), vol.ijk_to_lps(), vol.shape)
    assert box == Box(k0=0, k1=3, j0=2, j1=4, i0=2, i1=7)


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, 1, 0, 0, 0, -1), FLIP_PERMUTE])
def test_mm_roi_axis_aligned_matches_brute_force(direction) -> None:
    vol = volume(direction)
    ijk, lps = centres_lps(vol)
    half_voxel = 0.5 * np.abs(np.asarray(direction, float).reshape(3, 3) @ np.diag(SPACING)).sum(axis=1)
    lo_all, hi_all = lps.min(axis=0), lps.max(axis=0)
    rng = np.random.default_rng(1)
    for _ in range(40):
        a, b = rng.uniform(lo_all - 2, hi_all + 2, (2, 3))
        bounds = tuple((float(x), float(y)) for x, y in zip(np.minimum(a, b), np.maximum(a, b) + 0.01))
        lo, hi = np.array(bounds).T
        touched = np.all((lps + half_voxel > lo) & (lps - half_voxel < hi), axis=1)  # extents overlap
        if not touched.any():
            with pytest.raises(InputError, match="outside the volume"):
                box_from_lps_bounds(bounds, vol.ijk_to_lps(), vol.shape)
            continue
        assert box_from_lps_bounds(bounds, vol.ijk_to_lps(), vol.shape) == bbox_of(ijk[touched])


def test_mm_roi_oblique_matches_brute_force() -> None:
    """Every voxel centre inside the mm box is in the voxel box; when the box lies inside the volume, the voxel
    box is exactly the bounding box of the voxels containing points of the mm box (sampled on a grid)."""
    vol = volume(OBLIQUE)
    ijk, lps = centres_lps(vol)
    axes = np.asarray(OBLIQUE).reshape(3, 3) @ np.diag(SPACING)
    centre, extent = lps.mean(axis=0), lps.max(axis=0) - lps.min(axis=0)
    rng = np.random.default_rng(2)
    exact = 0
    for n in range(60):
        half = rng.uniform(0.03, 0.5, 3) * extent * (0.3 if n % 2 else 1.0)  # half the boxes small: no clipping
        mid = centre + rng.uniform(-0.4, 0.4, 3) * extent * (0.2 if n % 2 else 1.0)
        lo, hi = mid - half, mid + half
        box = box_from_lps_bounds(tuple(zip(lo.tolist(), hi.tolist())), vol.ijk_to_lps(), vol.shape)
        inside = np.all((lps >= lo) & (lps <= hi), axis=1)
        assert contains(box, ijk[inside]).all(), "a voxel centre inside the mm box is outside the voxel box"
        grid = np.stack(np.meshgrid(*[np.linspace(a, b, 5) for a, b in zip(lo, hi)]), -1).reshape(-1, 3)
        voxel = np.rint(np.linalg.solve(axes, (grid - ORIGIN).T).T).astype(int)  # the voxel holding each point
        if np.all((voxel >= 0) & (voxel < np.array(SHAPE[::-1]))):
            assert box == bbox_of(voxel)
            exact += 1
        else:
            assert box.intersect(Box.whole(SHAPE)) == box
    assert exact > 10, exact


def test_mm_roi_clipped_and_outside() -> None:
    vol = volume()
    whole = box_from_lps_bounds(((-100, 100), (-100, 100), (-100, 100)), vol.ijk_to_lps(), vol.shape)
    assert whole == Box.whole(SHAPE)
    with pytest.raises(InputError, match=r"spans 0\.750:7\.250,-2\.300:4\.300,2\.650:8\.950 mm"):
        box_from_lps_bounds(((50, 60), (0, 1), (4, 5)), vol.ijk_to_lps(), vol.shape)


@pytest.mark.parametrize("text", ["1:2,3:4", "1:x,3:4,5:6", "2:1,3:4,5:6", "1:1,3:4,5:6", "nan:1,3:4,5:6",
                                  "1:inf,3:4,5:6"])
def test_bad_mm_roi(text: str) -> None:
    with pytest.raises(InputError, match="--roi-mm"):
        parse_mm_roi(text)


def test_covering_box_none_when_outside() -> None:
    assert covering_box(np.array([[-3.0, 0, 0], [-0.6, 2, 2]]), SHAPE) is None
    assert covering_box(np.array([[-3.0, 0, 0], [-0.4, 2, 2]]), SHAPE) == Box(0, 3, 0, 3, 0, 1)


# ------------------------------------------------------------------ combined with --slices
def test_resolve_roi_with_slices() -> None:
    vol = volume()
    m = vol.ijk_to_lps()
    assert resolve_roi(SHAPE, m) is None
    assert resolve_roi(SHAPE, m, voxels="1:3,2:4,2:8", slices=(5, 9)) == Box(5, 8, 2, 4, 1, 3)
    with pytest.raises(InputError, match="share no slice"):
        resolve_roi(SHAPE, m, voxels="1:3,2:4,2:5", slices=(6, 9))
    with pytest.raises(InputError, match="not both"):
        resolve_roi(SHAPE, m, voxels="1:3,2:4,2:5", mm="0:1,0:1,0:1")
