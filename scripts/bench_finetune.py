#!/usr/bin/env python
"""Benchmark issue 5: few-shot fine-tuning vs the unchanged model vs contour interpolation, and uncertainty.

On phantoms of the shape family the default model never trained on (``vertebra``, see docs/TRAINING.md),
for 1, 3, 5 and 10 evenly spaced annotated axial slices (spread over the slices that hold bone):

(a) the model unchanged, (b) the model fine-tuned on those slices (wall time per fine-tune), (c) ITK's
morphological contour interpolation between the same slices — each scored by Dice over the *unannotated* slices.

Then, for the unchanged model, each uncertainty method (tta, views, softmax): AUROC of the per-voxel uncertainty
for the voxels the model gets wrong, and Spearman correlation between a slice's mean uncertainty and its number
of wrong voxels. Prints markdown tables; no assertions.

    python scripts/bench_finetune.py --model Resources/Models/fossil-bone-v2.1 --size small --seeds 1
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def dice_unannotated(truth: np.ndarray, pred: np.ndarray, annotated: list[int]) -> float:
    """Volumetric Dice of 'any foreground' over the axial slices not in ``annotated``."""
    keep = np.ones(truth.shape[0], bool)
    keep[annotated] = False
    t, p = truth[keep] > 0, pred[keep] > 0
    denom = int(t.sum() + p.sum())
    return 2.0 * int(np.count_nonzero(t & p)) / denom if denom else 1.0


def annotated_slices(truth: np.ndarray, n: int) -> list[int]:
    """``n`` evenly spaced slices between the first and last slice holding foreground."""
    ks = np.flatnonzero(truth.reshape(truth.shape[0], -1).any(axis=1))
    lo, hi = int(ks[0]), int(ks[-1])
    if n == 1:
        return [(lo + hi) // 2]
    return sorted({int(round(v)) for v in np.linspace(lo, hi, n)})


def every_other_slice(truth: np.ndarray) -> list[int]:
    """Every other slice from the first to the last slice holding foreground (the ceiling run)."""
    ks = np.flatnonzero(truth.reshape(truth.shape[0], -1).any(axis=1))
    return list(range(int(ks[0]), int(ks[-1]) + 1, 2))


def interpolate(truth: np.ndarray, ks: list[int]) -> np.ndarray:
    """ITK MorphologicalContourInterpolator along k from the annotated slices only."""
    import itk

    sparse = np.zeros_like(truth, dtype=np.uint8)
    sparse[ks] = truth[ks]
    image = itk.image_from_array(sparse)
    filt = itk.MorphologicalContourInterpolator.New(image)
    filt.SetAxis(2)  # ITK index order (i, j, k): interpolate between axial slices
    filt.Update()
    return np.asarray(itk.array_from_image(filt.GetOutput()), dtype=np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model name or folder (default: the bundled default model)")
    ap.add_argument("--family", default="vertebra")
    ap.add_argument("--size", default="small", choices=["small", "medium", "large"])
    ap.add_argument("--seeds", type=int, default=1, help="number of phantoms (seeds 9000, 9001, …)")
    ap.add_argument("--counts", default="1,3,5,10")
    ap.add_argument("--max-minutes", type=float, default=3.0)
    ap.add_argument("--methods", default="tta,views,softmax")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=None, help="default: FinetuneOptions' default")
    ap.add_argument("--every-other", action="store_true",
                    help="ceiling run: annotate every other slice with bone (ignores --counts)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from fossilsegment_engine.finetune import FinetuneOptions, finetune_in_memory
    from fossilsegment_engine.inference.predictor import Predictor
    from fossilsegment_engine.inference.uncertainty import (auroc, mean_probabilities, normalized_entropy,
                                                               spearman)
    from fossilsegment_engine.models import load_model
    from fossilsegment_engine.phantom import generate

    counts = [0] if args.every_other else [int(c) for c in args.counts.split(",")]
    extra = {} if args.max_steps is None else {"max_steps": args.max_steps}
    module, config = load_model(args.model)
    base = Predictor.from_module(module, config, device=args.device)
    print(f"model {config.name}; family {args.family}; size {args.size}; {args.seeds} phantom(s); "
          f"budget {args.max_minutes} min; torch threads {args.threads}; load average {os.getloadavg()}")
    rows: dict[int, list[tuple[float, float, float, float]]] = {n: [] for n in counts}
    unc_rows: dict[str, list[tuple[float, float, float]]] = {m: [] for m in args.methods.split(",")}
    for s in range(args.seeds):
        volume, labels, _ = generate(9000 + s, args.size, family=args.family)
        truth = labels.array
        # a 2-class model sees tooth as bone
        truth = np.where(truth >= config.n_classes, 1, truth).astype(np.uint8)
        labels = labels.with_array(truth)
        t0 = time.monotonic()
        plain = base.predict_labels(volume).array
        predict_s = time.monotonic() - t0
        print(f"phantom {9000 + s}: shape {volume.shape}, prediction {predict_s:.1f} s")
        for n in counts:
            ks = every_other_slice(truth) if args.every_other else annotated_slices(truth, n)
            t0 = time.monotonic()
            res = finetune_in_memory(volume, labels, ks, (module, config),
                                     FinetuneOptions(max_minutes=args.max_minutes, device=args.device, **extra))
            tune_s = time.monotonic() - t0
            tuned = Predictor.from_module(res.module, res.config, device=args.device).predict_labels(volume).array
            rows[n].append((dice_unannotated(truth, plain, ks), dice_unannotated(truth, tuned, ks),
                            dice_unannotated(truth, interpolate(truth, ks), ks), tune_s))
            fit = dice_unannotated(truth, tuned, sorted(set(range(len(truth))) - set(ks)))  # on the slices it learnt
            print(f"  {len(ks)} slice(s) {ks}: {rows[n][-1]} (Dice on the annotated slices {fit:.3f}) steps {res.report['steps']} ({res.report['stopped_by']})",
                  flush=True)
        errors = plain != truth
        per_slice_errors = errors.reshape(errors.shape[0], -1).sum(axis=1)
        for method in unc_rows:
            t0 = time.monotonic()
            unc = normalized_entropy(mean_probabilities(base, volume, method))
            seconds = time.monotonic() - t0
            per_slice = unc.reshape(unc.shape[0], -1).mean(axis=1)
            unc_rows[method].append((auroc(unc, errors), spearman(per_slice, per_slice_errors), seconds))
            print(f"  uncertainty {method}: {unc_rows[method][-1]}", flush=True)

    print("\n| annotated slices | (a) model unchanged | (b) fine-tuned | (c) contour interpolation | "
          "(b) − (c) | fine-tune wall time (s) |")
    print("|---|---|---|---|---|---|")
    for n in counts:
        a, b, c, t = np.mean(np.array(rows[n]), axis=0)
        print(f"| {'every other' if args.every_other else n} | {a:.3f} | {b:.3f} | {c:.3f} | {b - c:+.3f} | {t:.0f} |")
    print("\nDice = volumetric Dice of foreground over the unannotated slices, mean over phantoms.")
    print("\n| uncertainty | AUROC (error voxels) | Spearman (slice mean vs slice errors) | seconds |")
    print("|---|---|---|---|")
    for method, vals in unc_rows.items():
        au, rho, sec = np.nanmean(np.array(vals), axis=0)
        print(f"| {method} | {au:.3f} | {rho:.3f} | {sec:.0f} |")
    print(f"\nload average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    import sys

    main()
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: itk + torch can crash in their atexit handlers (seen here)
