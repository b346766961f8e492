#!/usr/bin/env python
"""Pin the bundled model's labels on the demo scan and five phantoms (Testing/data/pinned_labels.npz).

    PYTHONPATH=FossilSegment python scripts/pin_labels.py [--out Testing/data/pinned_labels.npz] [--force]

Testing/test_predictor_pinned_labels.py reruns the same predictions and asserts identical labels, so a
refactor of the inference code that changes a single voxel fails. The inputs (demo crop, phantom seeds and
families) and the settings (CPU, fp32, eager, raw argmax) are stored in the file next to the labels; fp32 and
eager are what ``fossilsegment segment`` runs by default on a CPU without native bf16, fixed here so the pin
does not depend on the machine. Rerun this only when a change of labels is intended, and say why in the commit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "FossilSegment"))

from fossilsegment_engine.atomic import atomic_path  # noqa: E402

MODEL = "fossil-bone-v2.1"
SETTINGS = {"model": MODEL, "device": "cpu", "precision": "fp32", "backend": "eager"}
#: the demo scan's slices [k0, k1) that are pinned (the whole scan costs more than the test's budget)
DEMO_SLICES = (24, 72)
#: (seed, family) of the pinned small phantoms, one per family
PHANTOMS = ((1, "skull"), (2, "long_bone"), (3, "vertebra"), (4, "plates"), (5, "trabecular"))


def cases(spec: dict) -> list[tuple[str, np.ndarray]]:
    """``(name, volume array)`` for every pinned input described by ``spec`` (see :func:`default_spec`)."""
    from fossilsegment_engine.io.volume_io import read_volume
    from fossilsegment_engine.phantom import generate
    from fossilsegment_engine.resources import DEMO_SCAN, resource_path

    k0, k1 = spec["demo_slices"]
    out = [("demo", read_volume(resource_path(DEMO_SCAN)).array[k0:k1])]
    for seed, family in spec["phantoms"]:
        out.append((f"phantom_{seed}_{family}", generate(seed, "small", family)[0].array))
    return out


def default_spec() -> dict:
    """What this script pins: settings, demo slice range and phantoms."""
    from fossilsegment_engine.phantom import GENERATOR_VERSION

    return {**SETTINGS, "demo_slices": list(DEMO_SLICES), "phantoms": [list(p) for p in PHANTOMS],
            "generator": GENERATOR_VERSION}


def main() -> int:
    from fossilsegment_engine.inference.predictor import Predictor
    from fossilsegment_engine.volume import Volume

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "Testing" / "data" / "pinned_labels.npz")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    args = parser.parse_args()
    spec = default_spec()
    predictor = Predictor.load(MODEL, device=spec["device"], precision=spec["precision"], backend=spec["backend"])
    arrays = {"spec": np.array(json.dumps(spec))}
    for name, array in cases(spec):
        labels = predictor.predict_labels(Volume(array), postprocess=None).array
        arrays[name] = labels.astype(np.uint8)
        print(f"{name}: shape {array.shape}, {int((labels > 0).sum())} labelled voxels")
    with atomic_path(args.out, force=args.force) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
