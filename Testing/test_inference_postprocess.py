"""Post-processing: tiny islands go, every real fragment stays, enclosed cavities fill, open ones don't."""

from __future__ import annotations

import numpy as np
import pytest

from fossilsegment_engine.errors import InputError
from fossilsegment_engine.inference.postprocess import PostprocessOptions, postprocess

CLASSES = [{"value": 0, "name": "Background"}, {"value": 1, "name": "Bone"}, {"value": 2, "name": "Tooth"}]


def _hollow_box(lab: np.ndarray, k: slice, j: slice, i: slice, value: int = 1) -> None:
    lab[k, j, i] = value
    lab[k.start + 2 : k.stop - 2, j.start + 2 : j.stop - 2, i.start + 2 : i.stop - 2] = 0


def test_keeps_separate_fragments_and_removes_a_tiny_island() -> None:
    lab = np.zeros((16, 48, 48), np.uint8)
    lab[2:6, 2:6, 2:6] = 1  # 64 voxels: exactly the threshold, kept
    lab[8:14, 30:40, 30:44] = 1  # a bigger, separate fragment, kept
    lab[10, 5, 40] = lab[10, 6, 41] = 1  # 2 voxels touching diagonally: one tiny island, removed
    out = postprocess(lab, CLASSES, PostprocessOptions(min_island_voxels=64, fill_holes=False))
    assert out.dtype == lab.dtype and out.shape == lab.shape
    assert out[2:6, 2:6, 2:6].all() and out[8:14, 30:40, 30:44].all()
    assert out[10, 5, 40] == 0 and out[10, 6, 41] == 0
    assert int(out.sum()) == 64 + 6 * 10 * 14


def test_diagonal_contact_joins_pieces_into_one_component() -> None:
    lab = np.zeros((8, 16, 16), np.uint8)
    lab[1:3, 1:3, 1:3] = 1  # 8 voxels
    lab[3:5, 3:5, 3:5] = 1  # 8 voxels, touching the first at a corner
    out = postprocess(lab, [0, 1], PostprocessOptions(min_island_voxels=16, fill_holes=False))
    assert int(out.sum()) == 16


def test_fills_an_enclosed_cavity_but_not_an_open_one_or_a_canal() -> None:
    lab = np.zeros((16, 48, 96), np.uint8)
    _hollow_box(lab, slice(2, 12), slice(2, 14), slice(2, 14))  # closed cavity
    _hollow_box(lab, slice(2, 12), slice(2, 14), slice(20, 32))  # cavity with a foramen
    lab[6, 7, 20:22] = 0
    lab[:, 20:32, 40:52] = 1  # a "long bone" along k, its medullary canal open at both ends
    lab[:, 23:29, 43:49] = 0
    out = postprocess(lab, CLASSES, PostprocessOptions(min_island_voxels=0, fill_holes=True))
    assert out[4:10, 4:12, 4:12].all()  # enclosed: filled
    assert not out[4:10, 4:12, 22:30].any()  # open through the foramen: untouched
    assert not out[:, 23:29, 43:49].any()  # canal: enclosed in every slice, open in 3D: untouched


def test_a_cavity_open_only_through_a_diagonal_gap_stays_open() -> None:
    lab = np.zeros((12, 12, 12), np.uint8)
    _hollow_box(lab, slice(1, 11), slice(1, 11), slice(1, 11))
    lab[2, 2, 2] = 0  # inner corner voxel of the wall, touches cavity (3,3,3) diagonally...
    lab[1, 1, 1] = 0  # ...and the outer corner touches the outside
    out = postprocess(lab, [0, 1], PostprocessOptions(min_island_voxels=0))
    assert not out[3:9, 3:9, 3:9].any()


def test_holes_are_filled_only_with_background_and_other_classes_survive() -> None:
    lab = np.zeros((12, 20, 20), np.uint8)
    _hollow_box(lab, slice(1, 11), slice(1, 19), slice(1, 19), value=1)
    lab[5:7, 8:12, 8:12] = 2  # a tooth inside the closed bone cavity
    lab[0, 0, 0] = 2  # a one-voxel tooth island
    before = lab.copy()
    out = postprocess(lab, CLASSES, PostprocessOptions(min_island_voxels=10))
    assert np.array_equal(lab, before)  # input untouched
    assert (out[5:7, 8:12, 8:12] == 2).all() and out[0, 0, 0] == 0
    cavity = out[3:9, 3:17, 3:17]
    assert set(np.unique(cavity)) == {1, 2} and int((cavity == 1).sum()) == 6 * 14 * 14 - 2 * 4 * 4


def test_options_off_returns_an_equal_copy() -> None:
    lab = np.zeros((6, 10, 10), np.uint8)
    _hollow_box(lab, slice(0, 6), slice(0, 10), slice(0, 10))
    lab[0, 0, 0] = 0
    out = postprocess(lab, [0, 1], PostprocessOptions(min_island_voxels=0, fill_holes=False))
    assert np.array_equal(out, lab) and out is not lab


def test_empty_labelmap_and_bad_arguments() -> None:
    assert not postprocess(np.zeros((4, 5, 6), np.uint8), CLASSES).any()
    with pytest.raises(InputError, match="3D"):
        postprocess(np.zeros((5, 6), np.uint8), CLASSES)
    with pytest.raises(InputError, match="min_island_voxels"):
        PostprocessOptions(min_island_voxels=-1)


def _blobs(n_slices: int = 40) -> np.ndarray:
    """Two classes: a hollow bone box with a tiny island, and a tooth block."""
    lab = np.zeros((n_slices, 24, 24), np.uint8)
    lab[5:30, 4:16, 4:16] = 1
    lab[10:20, 7:12, 7:12] = 0  # enclosed cavity
    lab[35, 20, 20] = 1  # island
    lab[2:8, 18:22, 18:22] = 2
    return lab


@pytest.mark.parametrize("max_bytes", [10**9, 8 * 24 * 24 * 3])  # one slab; slabs of 3 slices
def test_progress_rises_to_the_total_and_matches_the_result(max_bytes: int) -> None:
    lab = _blobs()
    seen: list[tuple[int, int]] = []
    out = postprocess(lab, [0, 1, 2], PostprocessOptions(min_island_voxels=4), max_bytes=max_bytes,
                      progress=lambda d, t: seen.append((d, t)))
    assert np.array_equal(out, postprocess(lab, [0, 1, 2], PostprocessOptions(min_island_voxels=4)))
    totals = {t for _, t in seen}
    assert totals == {3 * 40 * 4}  # 2 steps × 2 classes × 3 passes over 40 slices
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == 3 * 40 * 4
    if max_bytes < 10**6:  # many slabs: many reports within each step
        assert len(set(done)) > 40


def test_cancel_during_cleanup_raises() -> None:
    import threading

    from fossilsegment_engine.errors import Cancelled

    token = threading.Event()
    calls: list[int] = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        if done > total // 3:
            token.set()

    with pytest.raises(Cancelled):
        postprocess(_blobs(), [1, 2], max_bytes=8 * 24 * 24 * 3, progress=progress, cancel=token)
    assert calls and calls[-1] < 3 * 40 * 4
    token.set()
    with pytest.raises(Cancelled):  # cancelled before it starts: nothing reported
        postprocess(_blobs(), [1, 2], cancel=token)
