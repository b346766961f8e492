#!/usr/bin/env python
"""Speckle on real, unlabelled CT: small predicted pieces per slice, and a QC montage with full-resolution crops.

For each real volume: segment with the model's defaults, label the foreground of every axial slice
(8-connected), and count the pieces smaller than ``--max-px`` pixels (raw count, and per 10⁶ voxels the
model calls matrix). A clean segmentation of real bone has few such pieces; specks scattered over the matrix
are what a user would delete by hand. The montage shows the whole middle slice and 1:1 crops of the
``--crops`` windows holding the most specks (orange fill = prediction).

    python scripts/speckle_report.py [--model fossil-bone-v2.1] [--real ../shared/data/real] \
        [--montage-dir docs/benchmarks] [--tag baseline]

Volumes: the paddlefish slice stacked into a 3-slice volume (issue 14) and slices 80–119 of the
trabecular TIFF stack (0.06 mm). Reads them in place; nothing is copied.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from fossilsegment_engine.inference.predictor import Predictor
from fossilsegment_engine.io.overlay import render_overlay
from fossilsegment_engine.io.volume_io import read_volume
from fossilsegment_engine.volume import Volume

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
_EIGHT = np.ones((3, 3), dtype=bool)


def real_volumes(root: Path) -> dict[str, tuple[Volume, tuple[int, int] | None]]:
    """{name: (volume, slice range to segment or None)} for the real scans under ``root`` that exist."""
    out: dict[str, tuple[Volume, tuple[int, int] | None]] = {}
    slice_file = root / "paddlefish_ct_slice" / "slice_u16.npy"
    if slice_file.is_file():
        out["paddlefish_3slice"] = (Volume(np.repeat(np.load(slice_file, allow_pickle=False)[None], 3, axis=0)), None)
    stack = root / "trabecular_bone_tiff_stack"
    if stack.is_dir():
        out["trabecular_stack"] = (read_volume(stack, spacing=(0.06, 0.06, 0.06)), (80, 120))
    return out


def small_pieces(labels: np.ndarray, max_px: int) -> tuple[int, np.ndarray]:
    """(number of 2D foreground pieces < ``max_px`` pixels over all slices, mask of those pieces)."""
    count, mask = 0, np.zeros(labels.shape, dtype=bool)
    for k in range(labels.shape[0]):
        comp, n = ndimage.label(labels[k] > 0, structure=_EIGHT)
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel())
        small = np.flatnonzero(sizes < max_px)
        small = small[small > 0]
        count += small.size
        mask[k] = np.isin(comp, small)
    return count, mask


def speckle_figure(labels: np.ndarray, max_px: int = 30) -> dict[str, float]:
    """Raw count of small pieces, per 10⁶ predicted-matrix voxels, and the foreground fraction."""
    count, _ = small_pieces(labels, max_px)
    matrix = int((labels == 0).sum())
    return {"pieces": count, "per_million_matrix": 1e6 * count / max(matrix, 1),
            "foreground_fraction": float((labels > 0).mean())}


def montage(volume: Volume, labels: Volume, classes: list, k: int, max_px: int, crops: int, crop: int) -> np.ndarray:
    """RGB: slice ``k`` fitted into 512 px, then ``crops`` 1:1 crops where the small pieces are densest."""
    one = lambda a: Volume(a[None])  # noqa: E731 - a 1-slice volume of a 2D array
    whole = render_overlay(one(volume.array[k]), one(labels.array[k]), classes, 1, views=False, panel_size=512)
    _, specks = small_pieces(labels.array[k:k + 1], max_px)
    density = ndimage.uniform_filter(specks[0].astype(np.float32), crop)
    tiles = []
    if max(density.shape) <= crop:  # the whole slice is already shown at 1:1 or larger
        crops = 0
    for _ in range(crops):
        y, x = np.unravel_index(int(np.argmax(density)), density.shape)
        y0 = int(np.clip(y - crop // 2, 0, max(0, density.shape[0] - crop)))
        x0 = int(np.clip(x - crop // 2, 0, max(0, density.shape[1] - crop)))
        window = (slice(y0, y0 + crop), slice(x0, x0 + crop))
        tiles.append(render_overlay(one(volume.array[k][window]), one(labels.array[k][window]), classes, 1,
                                    views=False, panel_size=crop))
        density[max(0, y0 - crop // 2):y0 + crop + crop // 2, max(0, x0 - crop // 2):x0 + crop + crop // 2] = -1
    height = max([whole.shape[0], *(t.shape[0] for t in tiles)])
    pad = lambda t: np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)))  # noqa: E731
    return np.concatenate([pad(whole), *(pad(t) for t in tiles)], axis=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="bundled model name or folder (default model)")
    p.add_argument("--real", type=Path, default=REAL, help="folder holding the real scans")
    p.add_argument("--max-px", type=int, default=30, help="a piece smaller than this (pixels) is a speck")
    p.add_argument("--montage-dir", type=Path, default=None, help="write speckle_<volume>_<tag>.png here")
    p.add_argument("--tag", default="baseline")
    p.add_argument("--crops", type=int, default=3)
    p.add_argument("--crop", type=int, default=256, help="crop side in pixels, shown 1:1")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    volumes = real_volumes(args.real)
    if not volumes:
        raise SystemExit(f"no real scans under {args.real}")
    seg = Predictor.load(args.model, device=args.device)
    print(f"model {seg.config.name}; pieces < {args.max_px} px per slice (8-connected)")
    for name, (volume, slices) in volumes.items():
        labels = seg.predict_labels(volume, slice_range=slices)
        k0, k1 = slices if slices is not None else (0, volume.shape[0])
        fig = speckle_figure(labels.array[k0:k1], args.max_px)
        print(f"{name}: {k1 - k0} slices of {volume.shape[1]}x{volume.shape[2]}: {fig['pieces']} small pieces, "
              f"{fig['per_million_matrix']:.1f} per 10^6 matrix voxels; foreground {fig['foreground_fraction']:.4f}")
        if args.montage_dir is not None:
            out = args.montage_dir / f"speckle_{name}_{args.tag}.png"
            rgb = montage(volume, labels, seg.classes, (k0 + k1) // 2, args.max_px, args.crops, args.crop)
            sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(out))
            print(f"  montage {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
