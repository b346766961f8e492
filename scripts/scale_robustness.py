#!/usr/bin/env python
"""Does a model still find bone when the same specimen is scanned finer? Bone Dice at several in-plane scales.

Real scans differ from the training phantoms in voxel size: a small fossil on a micro-CT puts 5–20× more
voxels across a bone than a skull on a medical scanner. Each labelled specimen is up-sampled in-plane by each
factor (image linear, labels nearest), segmented with the engine's defaults (clean-up on) and scored with the
paper's slice-wise mean Bone Dice, pooled per family and overall. For a factor above 1 only the middle
``--slices`` axial slices are segmented and scored (their cost grows with the factor squared).

    python scripts/scale_robustness.py --model fossil-bone-v3 --factors 1 3 --data SPECIMENS [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FossilSegment"))


def upsample(image: np.ndarray, labels: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (linear) and ``labels`` (nearest) up-sampled by ``factor`` along rows and columns."""
    if factor == 1:
        return image.astype(np.float32), labels
    zoom = (1, factor, factor)  # grid_mode: pixel edges stay aligned, so a label pixel becomes factor² pixels
    return (ndimage.zoom(image.astype(np.float32), zoom, order=1, grid_mode=True, mode="nearest"),
            ndimage.zoom(labels, zoom, order=0, grid_mode=True, mode="nearest"))


def scale_scores(predictor, specimens: list, factors: list[float], n_slices: int) -> dict[str, dict[str, float]]:
    """``{"x<factor>": {"all": dice, <family>: dice, ...}}``: slice-wise mean Bone Dice pooled over specimens."""
    from fossilsegment_engine.training.data import read_pair
    from fossilsegment_engine.training.metrics import slice_scores
    from fossilsegment_engine.volume import Volume

    pooled: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for spec in specimens:
        volume, labels = read_pair(spec, 2, extra_as_background=True)
        family = spec.folder.name.rsplit("_s", 1)[0]
        for factor in factors:
            image, truth = upsample(volume.array, labels.array, factor)
            k0, k1 = 0, image.shape[0]
            if factor != 1 and image.shape[0] > n_slices:
                k0 = (image.shape[0] - n_slices) // 2
                k1 = k0 + n_slices
            pred = predictor.predict_labels(Volume(image), slice_range=(k0, k1)).array
            dice, _ = slice_scores(truth[k0:k1], pred[k0:k1], 1)
            key = f"x{factor:g}"
            pooled[key]["all"].extend(dice.tolist())
            pooled[key][family].extend(dice.tolist())
    return {key: {group: float(np.mean(v)) if v else float("nan") for group, v in sorted(groups.items())}
            for key, groups in pooled.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="bundled model name or folder (default model)")
    p.add_argument("--data", nargs="+", type=Path, required=True, help="labelled specimen folders or their parents")
    p.add_argument("--factors", nargs="+", type=float, default=[1.0, 3.0], help="in-plane up-sampling factors (≥ 1)")
    p.add_argument("--slices", type=int, default=24, help="middle axial slices scored when the factor is above 1")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, default=None, help="write the figures here (refused if it exists)")
    args = p.parse_args(argv)
    if any(not f >= 1 for f in args.factors):
        p.error(f"--factors must be ≥ 1, got {args.factors}")
    if args.slices < 1:
        p.error("--slices must be at least 1")
    from fossilsegment_engine.atomic import atomic_path, check_can_write
    from fossilsegment_engine.errors import FossilSegmentError
    from fossilsegment_engine.inference.predictor import Predictor
    from fossilsegment_engine.training.data import find_specimens

    try:
        if args.json is not None:
            check_can_write(args.json, False)
        specimens = find_specimens(args.data)
        predictor = Predictor.load(args.model, device=args.device)
        scores = scale_scores(predictor, specimens, args.factors, args.slices)
    except FossilSegmentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for key, groups in scores.items():
        print(f"{key}: " + ", ".join(f"{g} {v:.3f}" for g, v in groups.items()))
    if args.json is not None:
        report = {"model": predictor.config.name, "weights_sha256": predictor.config.weights_sha256,
                  "data": [str(d) for d in args.data], "slices_above_1": args.slices, "bone_mean_dice": scores}
        with atomic_path(args.json, False) as tmp:
            tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
