#!/usr/bin/env python
"""What the phantom data allows, per shape family: a network trained on one specimen's own slices.

For one labelled specimen per family (the first by name in ``--data``): the model fine-tuned on every other
axial slice between the first and last slice holding bone, then scored on the slices in between (**ceiling**:
the same specimen, same scanner, neighbouring slices — more than any zero-shot model can expect) and on the
slices it trained on (**fit**: what the architecture can represent at all). Printed next to the same model
unchanged (zero-shot) and a global Otsu threshold (best of both sides), all as the paper's slice-wise mean
Bone Dice. Writes a JSON with every figure when ``--json`` is given.

    python scripts/measure_ceiling.py --data DATA/test_seen DATA/test_heldout --steps 1000 --json ceiling.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FossilSegment"))


def mean_dice(truth: np.ndarray, pred: np.ndarray, ks: list[int]) -> float:
    """The paper's slice-wise mean Dice of bone (label 1) over slices ``ks`` (slices empty in both skipped)."""
    from fossilsegment_engine.training.metrics import slice_scores

    dice, _ = slice_scores(truth[ks], pred[ks], 1)
    return float(np.mean(dice)) if len(dice) else float("nan")


def one_per_family(data: list[Path]) -> list:
    """The first specimen (by folder name) of each family, from folders named ``<family>_s<seed>``."""
    from fossilsegment_engine.training.data import find_specimens

    chosen: dict[str, object] = {}
    for spec in sorted(find_specimens(data), key=lambda s: s.folder.name):
        chosen.setdefault(spec.folder.name.rsplit("_s", 1)[0], spec)
    return list(chosen.values())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, nargs="+", required=True)
    p.add_argument("--model", default=None, help="start from this model (default: the bundled default)")
    p.add_argument("--steps", type=int, default=1000, help="fine-tuning steps per specimen (a ceiling needs enough)")
    p.add_argument("--minutes", type=float, default=60.0, help="time cap per specimen (the steps should end it)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    import torch

    from fossilsegment_engine.finetune import FinetuneOptions, finetune_in_memory
    from fossilsegment_engine.inference.predictor import Predictor
    from fossilsegment_engine.io import read_volume
    from fossilsegment_engine.models import load_model
    from fossilsegment_engine.training.baselines import otsu_baseline

    torch.set_num_threads(2)
    module, config = load_model(args.model)
    base = Predictor.from_module(module, config, device=args.device)
    rows = []
    print("| family | specimen | zero-shot | Otsu | ceiling (held-out slices) | fit (trained slices) | steps | s |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in one_per_family(args.data):
        folder = spec.folder
        volume, truth = read_volume(spec.volume), read_volume(spec.labels)
        t = (truth.array == 1).astype(np.uint8)
        ks = np.flatnonzero(t.reshape(t.shape[0], -1).any(axis=1))
        train = list(range(int(ks[0]), int(ks[-1]) + 1, 2))
        test = [k for k in range(int(ks[0]), int(ks[-1]) + 1) if k not in set(train)]
        labels = truth.with_array(t)
        zero = base.predict_labels(volume).array
        otsu = otsu_baseline(volume.array)
        t0 = time.monotonic()
        res = finetune_in_memory(volume, labels, train, (module, config),
                                 FinetuneOptions(max_minutes=args.minutes, max_steps=args.steps,
                                                 device=args.device))
        tuned = Predictor.from_module(res.module, res.config, device=args.device).predict_labels(volume).array
        if res.report.get("steps", 0) < args.steps:
            print(f"warning: {folder.name} stopped by the time cap after {res.report.get('steps')} steps: "
                  "not a ceiling", file=sys.stderr)
        row = {"family": folder.name.rsplit("_s", 1)[0], "specimen": folder.name,
               "zero_shot": mean_dice(t, zero, test),
               "otsu": max(mean_dice(t, (otsu > 0).astype(np.uint8), test),
                           mean_dice(t, (otsu == 0).astype(np.uint8), test)),
               "ceiling": mean_dice(t, tuned, test), "fit": mean_dice(t, tuned, train),
               "steps": int(res.report.get("steps", 0)), "seconds": round(time.monotonic() - t0, 1)}
        rows.append(row)
        print(f"| {row['family']} | {row['specimen']} | {row['zero_shot']:.3f} | {row['otsu']:.3f} | "
              f"{row['ceiling']:.3f} | {row['fit']:.3f} | {row['steps']} | {row['seconds']:.0f} |", flush=True)
    if rows:
        mean = {k: float(np.mean([r[k] for r in rows])) for k in ("zero_shot", "otsu", "ceiling", "fit")}
        print(f"| **mean** | | {mean['zero_shot']:.3f} | {mean['otsu']:.3f} | {mean['ceiling']:.3f} | "
              f"{mean['fit']:.3f} | | |")
        if args.json:
            args.json.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows, "mean": mean},
                                            indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
