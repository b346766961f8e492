#!/usr/bin/env python
"""How much labelled bone a phantom shows: local contrast of bone against the matrix next to it.

For every bone voxel, in a cubic window (default 9 voxels): d' = |mean(bone) − mean(matrix)| / s.d.(matrix),
over the window's bone and matrix voxels (air excluded). Prints, per specimen and on average, the share of bone
voxels with d' < 0.5 (as good as invisible by intensity) and < 1, and the median d'. Texture (pores, cortex)
can still tell some of them apart, so this is a rough guide to how learnable the labels are, not a bound.

    python scripts/phantom_visibility.py --data /work/fossil_data_v3/test_seen /work/fossil_data_v3/test_heldout
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage


def windowed_mean(values: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean of ``values`` over ``mask`` in each window, share of the window in ``mask``)."""
    share = ndimage.uniform_filter(mask.astype(np.float32), size)
    total = ndimage.uniform_filter(np.where(mask, values, 0).astype(np.float32), size)
    return total / np.maximum(share, 1e-6), share


def bone_visibility(ct: np.ndarray, labels: np.ndarray, size: int = 9) -> np.ndarray:
    """d' of every bone voxel (label 1) whose window holds enough bone and matrix (≥ 5 % each)."""
    v = ct.astype(np.float32)
    bone = labels == 1
    matrix = (labels == 0) & (v > np.percentile(v, 1) + 1)  # not the air around a block
    mean_b, share_b = windowed_mean(v, bone, size)
    mean_m, share_m = windowed_mean(v, matrix, size)
    sq_m, _ = windowed_mean(v * v, matrix, size)
    sd_m = np.sqrt(np.maximum(sq_m - mean_m**2, 1e-6))
    ok = bone & (share_b > 0.05) & (share_m > 0.05)
    return np.abs(mean_b - mean_m)[ok] / sd_m[ok]


def main() -> int:
    from fossilsegment_engine.io import read_volume

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, nargs="+", required=True, help="folders of specimen folders")
    p.add_argument("--window", type=int, default=9)
    args = p.parse_args()
    rows = []
    print("| specimen | d' < 0.5 | d' < 1 | median d' |\n|---|---|---|---|")
    for folder in args.data:
        for spec in sorted(d for d in folder.iterdir() if (d / "labels.nrrd").is_file()):
            d = bone_visibility(read_volume(spec / "volume.nrrd").array, read_volume(spec / "labels.nrrd").array,
                                args.window)
            if d.size:
                rows.append(((d < 0.5).mean(), (d < 1).mean(), np.median(d)))
                print(f"| {spec.name} | {rows[-1][0]:.3f} | {rows[-1][1]:.3f} | {rows[-1][2]:.2f} |", flush=True)
    if rows:
        a = np.mean(np.array(rows), axis=0)
        print(f"| **mean** | {a[0]:.3f} | {a[1]:.3f} | {a[2]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
