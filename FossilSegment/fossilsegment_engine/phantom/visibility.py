"""Local visibility of bone against the matrix next to it: the d' the phantom generator guarantees.

For a bone voxel, over a cubic window: d' = |mean(bone) − mean(matrix)| / s.d.(matrix), using the window's
bone and matrix voxels only. Windows holding less than 5 % of either are not scored (deep inside bone or
far out in the rock, where visibility is not a boundary question).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

WINDOW = 9          # voxels: a neighbourhood an expert looks at to decide "bone or rock here"
MIN_SHARE = 0.05    # a window needs this share of bone and of matrix to be scored


def windowed_mean(values: np.ndarray, mask: np.ndarray, size: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """(mean of ``values`` over ``mask`` in each window, share of the window in ``mask``), float32."""
    share = ndimage.uniform_filter(mask.astype(np.float32), size)
    total = ndimage.uniform_filter(np.where(mask, values, 0).astype(np.float32), size)
    return total / np.maximum(share, 1e-6), share


def local_contrast(image: np.ndarray, bone: np.ndarray, matrix: np.ndarray, size: int = WINDOW
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per voxel: (bone mean − matrix mean, matrix s.d., scored) over the window around it."""
    v = image.astype(np.float32, copy=False)
    mean_b, share_b = windowed_mean(v, bone, size)
    mean_m, share_m = windowed_mean(v, matrix, size)
    sq_m, _ = windowed_mean(v * v, matrix, size)
    sd_m = np.sqrt(np.maximum(sq_m - mean_m**2, 1e-12))
    return mean_b - mean_m, sd_m, (share_b > MIN_SHARE) & (share_m > MIN_SHARE)


def bone_visibility(ct: np.ndarray, labels: np.ndarray, size: int = WINDOW) -> np.ndarray:
    """d' of every scored bone voxel (label 1) of a CT volume.

    Matrix is label 0 except air (where the 1st percentile lies far below the rock: voxels darker than halfway
    from it to the median) and the two
    voxels of partial volume next to air, its values clipped to its 2–98th percentiles: air edges, calcite
    veins and pyrite would otherwise count as very variable rock.
    """
    v = ct.astype(np.float32)
    bone = labels == 1
    lo, quarter, mid = np.percentile(v, [1, 25, 50])
    matrix = labels == 0
    if mid - lo > 6 * (mid - quarter) / 0.674:  # the darkest voxels are far outside the rock's spread: air
        matrix &= ndimage.binary_erosion(v > lo + 0.5 * (mid - lo), iterations=2, border_value=1)
    if matrix.any():  # rare very bright/dark inclusions (calcite veins, pyrite) must not inflate the s.d.
        np.clip(v, *np.percentile(v[matrix], [2, 98]), out=v, where=matrix)
    diff, sd, scored = local_contrast(v, bone, matrix, size)
    ok = bone & scored
    return np.abs(diff[ok]) / np.maximum(sd[ok], 1e-6)
