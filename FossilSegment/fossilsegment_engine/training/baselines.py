"""Classical baselines the paper found wanting: global Otsu thresholding and seeded region growing.

Both return a labelmap with 1 (Bone) where they call fossil and 0 elsewhere; they cannot tell bone
from tooth. Region growing gets an advantage no real user has: its seeds are drawn from the *ground
truth* bone, and its intensity window comes from the voxels around those seeds.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage


def otsu_baseline(array: np.ndarray) -> np.ndarray:
    """Global Otsu threshold of the whole volume (SimpleITK ``OtsuThreshold``): brighter part → 1."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array).astype(np.float32))
    return sitk.GetArrayFromImage(sitk.OtsuThreshold(image, 0, 1, 256)).astype(np.uint8)


def truth_seeds(truth: np.ndarray, n_seeds: int = 20, seed: int = 0, value: int = 1) -> list[tuple[int, int, int]]:
    """Up to ``n_seeds`` random (i, j, k) voxels of ``value`` in ``truth``, preferring interior voxels."""
    mask = truth == value
    interior = ndimage.binary_erosion(mask, iterations=2)
    pool = np.argwhere(interior if interior.any() else mask)
    if pool.size == 0:
        return []
    rng = np.random.default_rng(seed)
    pick = pool[rng.choice(len(pool), size=min(n_seeds, len(pool)), replace=False)]
    return [(int(i), int(j), int(k)) for k, j, i in pick]


def region_growing_baseline(
    array: np.ndarray, truth: np.ndarray, n_seeds: int = 20, seed: int = 0, n_std: float = 2.0
) -> np.ndarray:
    """Seeded region growing (SimpleITK ``ConnectedThreshold``) from truth-bone seeds.

    Window = mean ± ``n_std`` · std of the intensities in the 3×3×3 neighbourhoods of the seeds.
    No seed (no bone in the truth) → an empty labelmap.
    """
    seeds = truth_seeds(truth, n_seeds, seed)
    if not seeds:
        return np.zeros(array.shape, dtype=np.uint8)
    values = []
    for i, j, k in seeds:
        values.append(array[max(k - 1, 0):k + 2, max(j - 1, 0):j + 2, max(i - 1, 0):i + 2].ravel())
    v = np.concatenate(values).astype(np.float64)
    lower, upper = v.mean() - n_std * v.std(), v.mean() + n_std * v.std()
    image = sitk.GetImageFromArray(np.ascontiguousarray(array).astype(np.float32))
    grown = sitk.ConnectedThreshold(image, seedList=seeds, lower=float(lower), upper=float(upper), replaceValue=1)
    return sitk.GetArrayFromImage(grown).astype(np.uint8)
