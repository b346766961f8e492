"""Slab-wise connected components and post-processing: identical to labelling the whole volume at once."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
from scipy import ndimage

from fossilsegment_engine.inference.components import BYTES_PER_VOXEL, ComponentStats, select_components, slab_length
from fossilsegment_engine.inference.postprocess import PostprocessOptions, postprocess

FULL = ndimage.generate_binary_structure(3, 3)
FACES = ndimage.generate_binary_structure(3, 1)
CLASSES = [{"value": 0, "name": "Background"}, {"value": 1, "name": "Bone"}, {"value": 2, "name": "Tooth"}]


# ---------------------------------------------------------------- whole-volume reference (the former implementation)
def reference_postprocess(labels: np.ndarray, values: list[int], options: PostprocessOptions) -> np.ndarray:
    """Whole-volume clean-up: 26-connected islands by size, then ``binary_fill_holes`` per class, in order."""
    out = labels.copy()
    if options.min_island_voxels > 1:
        for v in values:
            lab, n = ndimage.label(out == v, structure=FULL)
            small = np.bincount(lab.ravel(), minlength=n + 1) < options.min_island_voxels
            small[0] = False
            out[small[lab]] = 0
    if options.fill_holes:
        for v in values:
            filled = ndimage.binary_fill_holes(out == v, structure=FULL)
            out[filled & (out == 0)] = v
    return out


def _select(mask: np.ndarray, slab: int, choose, structure: np.ndarray = FULL) -> tuple[np.ndarray, ComponentStats]:
    """The voxels of the components ``choose`` picks, found slab-wise, and the stats it was given."""
    chosen = np.zeros(mask.shape, bool)
    seen: list[ComponentStats] = []

    def pick(stats: ComponentStats) -> np.ndarray:
        seen.append(stats)
        return choose(stats)

    def apply(k0: int, k1: int, part: np.ndarray) -> None:
        assert not chosen[k0:k1].any()  # each slab is handed over at most once
        chosen[k0:k1] = part

    select_components(lambda k0, k1: mask[k0:k1].copy(), mask.shape[0], pick, apply, slab, structure)
    return chosen, (seen[0] if seen else ComponentStats(np.zeros(0, np.int64), np.zeros(0, bool)))


def _reference_stats(mask: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lab, n = ndimage.label(mask, structure=structure)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    border = np.zeros(n + 1, bool)
    for axis in range(3):
        for end in (0, -1):
            border[np.take(lab, end, axis=axis)] = True
    return lab, sizes, border[1:]


def _blobs(shape: tuple[int, int, int], seed: int, fraction: float = 0.5, sigma: float = 1.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), sigma)
    return field > np.quantile(field, 1 - fraction)


def _labelmap(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Blobby bone and tooth, hollow boxes (some cut open by the volume border), speckle islands and pits."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint8)
    lab[_blobs(shape, seed, 0.45, 1.5)] = 1
    lab[_blobs(shape, seed + 100, 0.1, 1.0)] = 2
    idx = tuple(rng.integers(0, s, 80) for s in shape)
    lab[idx] = rng.integers(0, 3, 80).astype(np.uint8)
    band = shape[2] // 3
    for n, value in enumerate((1, 1, 2)):  # side by side along i; along k some are cut open by the border
        k0, j0 = int(rng.integers(-2, shape[0] - 4)), int(rng.integers(0, shape[1] - 6))
        lo = [k0, j0, n * band]
        hi = [k0 + int(rng.integers(6, 10)), j0 + int(rng.integers(5, 7)), (n + 1) * band]
        lab[tuple(slice(max(a, 0), b) for a, b in zip(lo, hi))] = value
        lab[tuple(slice(max(a + 1, 0), b - 1) for a, b in zip(lo, hi))] = 0  # past the border: open
    return lab


# ---------------------------------------------------------------- select_components
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("slab", [1, 2, 3, 7, 100])
@pytest.mark.parametrize("structure", [FULL, FACES], ids=["26", "6"])
def test_components_match_whole_volume_labelling(seed: int, slab: int, structure: np.ndarray) -> None:
    mask = _blobs((13, 17, 19), seed, 0.35, 0.8)
    lab, sizes, border = _reference_stats(mask, structure)
    threshold = int(np.median(sizes))
    chosen, stats = _select(mask, slab, lambda s: s.sizes >= threshold, structure)
    assert sorted(stats.sizes.tolist()) == sorted(sizes.tolist())
    assert int(stats.touches_border.sum()) == int(border.sum())
    keep = np.r_[False, sizes >= threshold]
    assert np.array_equal(chosen, keep[lab])
    chosen, _ = _select(mask, slab, lambda s: ~s.touches_border, structure)
    assert np.array_equal(chosen, np.r_[False, ~border][lab])


def test_u_shape_and_comb_join_only_in_later_slabs() -> None:
    mask = np.zeros((9, 6, 20), bool)
    mask[0:8, 2, 1] = mask[0:8, 2, 5] = True  # U: two arms from the top ...
    mask[8, 2, 1:6] = True  # ... joined by a bar in the last slice only
    for i in range(8, 19, 2):  # comb: teeth down to slice 7, the spine is slice 8; teeth only meet via it
        mask[1:8, 3, i] = True
    mask[8, 3, 8:19] = True
    mask[1, 0, 10] = mask[2, 1, 11] = True  # a 2-voxel piece joined only diagonally across a seam
    lab, sizes, _ = _reference_stats(mask, FULL)
    assert len(sizes) == 3
    for slab in (1, 2, 3):
        chosen, stats = _select(mask, slab, lambda s: s.sizes >= 3)
        assert sorted(stats.sizes.tolist()) == sorted(sizes.tolist())
        assert np.array_equal(chosen, mask & ~((lab == lab[1, 0, 10]) & (lab > 0)))
        _, faces = _select(mask, slab, lambda s: s.sizes > 0, FACES)
        assert len(faces.sizes) == 4  # with 6-connectivity the diagonal pair is two pieces


def test_nothing_chosen_or_empty_mask_touches_nothing() -> None:
    mask = _blobs((8, 9, 10), 5)
    calls: list[int] = []
    n = select_components(lambda k0, k1: mask[k0:k1], 8, lambda s: np.zeros(s.sizes.shape, bool),
                          lambda k0, k1, c: calls.append(k0), 3)
    assert n == 0 and calls == []
    assert select_components(lambda k0, k1: np.zeros((k1 - k0, 4, 4), bool), 8,
                             lambda s: np.ones(s.sizes.shape, bool), lambda k0, k1, c: calls.append(k0), 3) == 0
    assert calls == []


def test_slab_length_respects_the_budget() -> None:
    assert slab_length(100, 10, 100 * 10 * BYTES_PER_VOXEL) == 10  # fits: one slab
    assert slab_length(100, 11, 100 * 10 * BYTES_PER_VOXEL) == 10
    assert slab_length(10**9, 5, 1) == 1
    assert slab_length(512 * 512, 400, 1 << 30) * 512 * 512 * BYTES_PER_VOXEL <= 1 << 30


# ---------------------------------------------------------------- postprocess: slab-wise == whole volume
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("slices", [2, 3, 0])
def test_postprocess_equals_whole_volume_reference(seed: int, slices: int) -> None:
    lab = _labelmap((14, 24, 22), seed)
    max_bytes = slices * 24 * 22 * BYTES_PER_VOXEL if slices else 1 << 28  # 0: one slab
    for options in (PostprocessOptions(), PostprocessOptions(min_island_voxels=20),
                    PostprocessOptions(min_island_voxels=0), PostprocessOptions(fill_holes=False)):
        expected = reference_postprocess(lab, [1, 2], options)
        assert not np.array_equal(expected, lab)
        out = postprocess(lab, CLASSES, options, max_bytes=max_bytes)
        assert np.array_equal(out, expected), (seed, slices, options)
        inplace = lab.copy()
        assert postprocess(inplace, [2, 1, 2], options, inplace=True, max_bytes=max_bytes) is inplace
        assert np.array_equal(inplace, reference_postprocess(lab, [2, 1], options))


def test_holes_across_slabs_fill_unless_open_at_the_last_slice() -> None:
    lab = np.zeros((10, 12, 30), np.uint8)
    lab[1:9, 1:11, 1:11] = 1  # closed box, cavity spanning slices 3..6
    lab[3:7, 3:9, 3:9] = 0
    lab[3:10, 1:11, 14:24] = 1  # box whose cavity reaches the last slice: open
    lab[5:10, 3:9, 16:22] = 0
    lab[6, 5, 5] = 2  # a tooth voxel inside the closed cavity stays a tooth
    expected = reference_postprocess(lab, [1, 2], PostprocessOptions(min_island_voxels=0))
    assert (expected[3:7, 3:9, 3:9] > 0).all() and not expected[5:10, 3:9, 16:22].any()
    for slices in (1, 2, 3):
        out = postprocess(lab, CLASSES, PostprocessOptions(min_island_voxels=0),
                          max_bytes=slices * 12 * 30 * BYTES_PER_VOXEL)
        assert np.array_equal(out, expected)


# ---------------------------------------------------------------- memory on a moderately large labelmap
@pytest.mark.slow
def test_memory_stays_bounded_on_a_large_labelmap() -> None:
    shape = (400, 512, 512)  # 100 MiB of uint8
    coarse = _labelmap((50, 64, 64), 7)
    lab = np.repeat(np.repeat(np.repeat(coarse, 8, 0), 8, 1), 8, 2)
    rng = np.random.default_rng(7)
    idx = tuple(rng.integers(0, s, 20_000) for s in shape)
    lab[idx] = rng.integers(0, 3, 20_000).astype(np.uint8)
    budget = 64 << 20
    tracemalloc.start()
    start = time.perf_counter()
    postprocess(lab, [1], PostprocessOptions(), inplace=True, max_bytes=budget)  # bone; tooth is "other"
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"postprocess {shape} uint8 in place: {seconds:.1f} s, peak extra {peak / 2**20:.0f} MiB "
          f"(budget {budget >> 20} MiB, labelmap {lab.nbytes >> 20} MiB)")
    assert peak <= budget + (8 << 20)  # well below the labelmap itself, let alone 4× it
    assert (lab == 1).any() and (lab == 2).any()
