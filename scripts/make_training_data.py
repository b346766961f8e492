#!/usr/bin/env python
"""Generate the synthetic training / test data of the default model (fossil-bone-v2.1).

    python scripts/make_training_data.py --out DATA [--size medium] [--train-seeds 6] [--test-seeds 2]
        [--heldout vertebra] [--heldout-seeds 6] [--train-only girdle digits carapace]

Writes phantom specimen folders (volume.nrrd, labels.nrrd, phantom.json; labels 0/1 bone/2 tooth):
- DATA/train/<family>_s<seed>/        every family except the held-out one, seeds 1000 + 10·f + i (i < 10),
                                      then 10000 + 1000·f + i
- DATA/test_seen/<family>_s<seed>/    the same families, unseen seeds 5000 + 10·f + i
- DATA/test_heldout/<family>_s<seed>/ the held-out family only, seeds 9000 + i
Families are the generator's first six (``phantom.DRAWN_FAMILIES``); ``--train-only`` adds later ones to
DATA/train only, so the test splits stay those of every published figure. f is the index in ``phantom.FAMILIES``.
Deterministic: the same arguments give the same files. ``train`` is split into train/validation by
specimen inside ``fossilsegment train`` (``--val-fraction``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from fossilsegment_engine import phantom


def train_seed(f_idx: int, i: int) -> int:
    """Seed of the ``i``-th training specimen of family number ``f_idx``: 1000 + 10·f + i for the first 10
    (the original recipe), then 10000 + 1000·f + i, so that families never share a seed."""
    return 1000 + 10 * f_idx + i if i < 10 else 10000 + 1000 * f_idx + i


def plan(train_seeds: int, test_seeds: int, heldout: str, heldout_seeds: int,
         train_only: tuple[str, ...] = ()) -> list[tuple[str, str, int]]:
    """(split, family, seed) for every specimen; ``train_only`` families get training specimens only."""
    jobs = []
    for family in (*phantom.DRAWN_FAMILIES, *train_only):
        f_idx = phantom.FAMILIES.index(family)
        if family == heldout:
            continue
        jobs += [("train", family, train_seed(f_idx, i)) for i in range(train_seeds)]
        if family not in train_only:
            jobs += [("test_seen", family, 5000 + 10 * f_idx + i) for i in range(test_seeds)]
    jobs += [("test_heldout", heldout, 9000 + i) for i in range(heldout_seeds)]
    return jobs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", default="medium", choices=list(phantom.SIZES))
    p.add_argument("--train-seeds", type=int, default=6, help="specimens per training family")
    p.add_argument("--test-seeds", type=int, default=2, help="unseen specimens per training family")
    p.add_argument("--heldout", default="vertebra", choices=list(phantom.DRAWN_FAMILIES))
    later = [f for f in phantom.FAMILIES if f not in phantom.DRAWN_FAMILIES]
    p.add_argument("--train-only", nargs="+", default=[], choices=later, metavar="FAMILY",
                   help=f"add these later families to the training split only: {', '.join(later)}")
    p.add_argument("--heldout-seeds", type=int, default=6)
    p.add_argument("--no-teeth", action="store_true", help="phantoms without teeth (labels 0/1 only)")
    args = p.parse_args(argv)
    train_only = tuple(dict.fromkeys(args.train_only))  # a family named twice is made once
    jobs = plan(args.train_seeds, args.test_seeds, args.heldout, args.heldout_seeds, train_only)
    for split, family, seed in tqdm(jobs, desc="phantoms", unit="specimen"):
        folder = args.out / split / f"{family}_s{seed}"
        if (folder / "phantom.json").is_file():
            continue  # already there (same arguments → same content)
        phantom.write(folder, seed, size=args.size, family=family, teeth=not args.no_teeth)
    recipe = {"command": " ".join(["python", "scripts/make_training_data.py", *(argv or sys.argv[1:])]),
              "size": args.size, "heldout_family": args.heldout, "teeth": not args.no_teeth,
              "generator": phantom.GENERATOR_VERSION,
              "specimens": [{"split": s, "family": f, "seed": n} for s, f, n in jobs]}
    (args.out / "recipe.json").write_text(json.dumps(recipe, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
