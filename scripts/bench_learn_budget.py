#!/usr/bin/env python
"""Issue 13's budget check: ``learn_and_segment`` from 5 corrected slices of a 300×350×350 volume, wall time and Dice.

The volume is the held-out-family phantom 9002 at size "large" (192×384×384), reflected along K to 300 slices and
cropped to 350×350; 5 evenly spaced annotated slices; Dice over the unannotated slices. Prints one line.

    python scripts/bench_learn_budget.py [--max-minutes 3]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fewshot import scores_unannotated  # noqa: E402
from bench_finetune import annotated_slices  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-minutes", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from fossilsegment_engine.finetune import annotations_from_labelmap
    from fossilsegment_engine.finetune.learn import LearnOptions, learn_and_segment
    from fossilsegment_engine.phantom import generate
    from fossilsegment_engine.volume import Volume

    vol, lab, _ = generate(9002, "large", family="vertebra")
    crop = (slice(None), slice(17, 367), slice(17, 367))
    image = np.pad(vol.array, ((54, 54), (0, 0), (0, 0)), mode="reflect")[crop]
    truth = np.pad((lab.array > 0).astype(np.uint8), ((54, 54), (0, 0), (0, 0)), mode="reflect")[crop]
    volume = Volume(np.ascontiguousarray(image), spacing=vol.spacing)
    labels = volume.with_array(np.ascontiguousarray(truth))
    ks = annotated_slices(truth, 5)
    t0 = time.monotonic()
    res = learn_and_segment(volume, annotations_from_labelmap(labels, [(0, k) for k in ks]),
                            options=LearnOptions(max_minutes=args.max_minutes))
    wall = time.monotonic() - t0
    dice, iou = scores_unannotated(truth, res.labels.array, ks)
    tune = res.report["finetune"] or {}
    print(f"{volume.shape} 5 slices {ks}: {wall:.0f} s (budget {args.max_minutes * 60:.0f} s; fine-tune "
          f"{tune.get('seconds')} s, {tune.get('steps')} steps; classify {res.report['classify_seconds']} s), "
          f"Dice {dice:.3f} IoU {iou:.3f}, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
