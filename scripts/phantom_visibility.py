#!/usr/bin/env python
"""How much labelled bone a phantom shows: local contrast of bone against the matrix next to it.

For every bone voxel, in a cubic window (default 9 voxels): d' = |mean(bone) − mean(matrix)| / s.d.(matrix),
over the window's bone and matrix voxels (air excluded). Prints, per specimen and on average, the share of bone
voxels with d' < 0.5 (as good as invisible by intensity) and < 1, and the median d'. Texture (pores, cortex)
can still tell some of them apart, so this is a rough guide to how learnable the labels are, not a bound.

    python scripts/phantom_visibility.py --data DATA/test_seen DATA/test_heldout
    python scripts/phantom_visibility.py --seeds 0 1 2 3 4 5 --size small   # generated with today's generator
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FossilSegment"))
from fossilsegment_engine.phantom.visibility import bone_visibility  # noqa: E402



def _specimens(args: argparse.Namespace):
    """(name, ct array, labels array) from specimen folders and/or generated phantoms."""
    from fossilsegment_engine import phantom
    from fossilsegment_engine.io import read_volume

    for folder in args.data:
        for spec in sorted(d for d in folder.iterdir() if (d / "labels.nrrd").is_file()):
            yield spec.name, read_volume(spec / "volume.nrrd").array, read_volume(spec / "labels.nrrd").array
    for seed in args.seeds:
        ct, labels, info = phantom.generate(seed, args.size)
        yield f"{info['family']}_s{seed}", ct.array, labels.array


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, nargs="*", default=[], help="folders of specimen folders")
    p.add_argument("--seeds", type=int, nargs="*", default=[], help="phantom seeds to generate (today's generator)")
    p.add_argument("--size", default="small", help="size of the generated phantoms")
    p.add_argument("--window", type=int, default=9)
    args = p.parse_args()
    rows = []
    print("| specimen | d' < 0.5 | d' < 1 | median d' |\n|---|---|---|---|")
    for name, ct, labels in _specimens(args):
        d = bone_visibility(ct, labels, args.window)
        if d.size:
            rows.append(((d < 0.5).mean(), (d < 1).mean(), np.median(d)))
            print(f"| {name} | {rows[-1][0]:.3f} | {rows[-1][1]:.3f} | {rows[-1][2]:.2f} |", flush=True)
    if rows:
        a = np.mean(np.array(rows), axis=0)
        print(f"| **mean** | {a[0]:.3f} | {a[1]:.3f} | {a[2]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
