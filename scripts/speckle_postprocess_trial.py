#!/usr/bin/env python
"""Speckle clean-ups tried against phantom bone Dice (issue 14): can the real scans' specks be removed afterwards?

Variants of the default model's output: hysteresis on the bone probability (low 0.5, high 0.8 / 0.9 / 0.95: a
piece is kept only if it holds a voxel ≥ high; 3D and per slice) and per-slice removal of pieces < 30 px.
Prints the speckle count on the real scans and volumetric bone Dice on the phantom specimen folders given.

    python scripts/speckle_postprocess_trial.py --phantoms PHANTOM_DIR [--real ../shared/data/real]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from skimage.filters import apply_hysteresis_threshold

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_scans import REAL, shared_scans  # noqa: E402
from speckle_report import small_pieces, speckle_figure  # noqa: E402

from fossilsegment_engine.inference.predictor import Predictor  # noqa: E402
from fossilsegment_engine.io.volume_io import read_labelmap, read_volume  # noqa: E402
from fossilsegment_engine.volume import Volume  # noqa: E402


def variants(seg: Predictor, volume: Volume, slices: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """{variant name: boolean bone mask} for the default output and each clean-up."""
    prediction = seg.predict_probabilities(volume, slice_range=slices)
    labels, probs = prediction.labels, prediction.probabilities
    fg = labels.array > 0
    p = probs[1].array.astype(np.float32) / 255
    out = {"default": fg}
    for high in (0.8, 0.9, 0.95):
        out[f"hysteresis_3d_{high}"] = apply_hysteresis_threshold(p, 0.5, high) & fg
        out[f"hysteresis_2d_{high}"] = np.stack([apply_hysteresis_threshold(s, 0.5, high) for s in p]) & fg
    out["drop_2d_below_30px"] = fg & ~small_pieces(fg.astype(np.uint8), 30)[1]
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean arrays."""
    return 2 * float((a & b).sum()) / max(int(a.sum()) + int(b.sum()), 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantoms", type=Path, required=True, help="folder of phantom specimen folders")
    ap.add_argument("--real", type=Path, default=REAL)
    args = ap.parse_args()
    seg = Predictor.load(None, device="cpu")
    for scan in shared_scans(args.real):
        k0, k1 = scan.slices or (0, scan.volume.shape[0])
        for variant, mask in variants(seg, scan.volume, scan.slices).items():
            fig = speckle_figure(mask[k0:k1].astype(np.uint8))
            print(f"{scan.name} {variant}: {fig['pieces']} pieces < 30 px, foreground {fig['foreground_fraction']:.4f}")
    scores: dict[str, list[float]] = {}
    for folder in sorted(d for d in args.phantoms.iterdir() if d.is_dir()):
        volume = read_volume(folder / "volume.nrrd")
        truth = read_labelmap(folder / "labels.nrrd", like=volume).array == 1
        for variant, mask in variants(seg, volume).items():
            scores.setdefault(variant, []).append(dice(mask, truth))
    for variant, values in scores.items():
        print(f"phantoms {variant}: bone Dice {' '.join(f'{v:.3f}' for v in values)}; mean {np.mean(values):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
