#!/usr/bin/env python
"""Peer (d) of scripts/bench_fewshot.py: Biomedisa smart interpolation, run with a separate venv's python.

    /work/biomedisa-venv/bin/python scripts/biomedisa_interpolate.py WORK_DIR K1,K2,... [NBRW SORW]

Reads WORK_DIR/image.npy and WORK_DIR/sparse.npy (bone > 0 on the annotated slices K1,K2,...), writes the
binary result to WORK_DIR/pred.npy and prints {"seconds": ...} (the interpolation's wall time) as its last line.
Biomedisa reads label 0 as "not annotated", so an annotated slice's background is given label 1 and bone label 2.
NBRW (random walks per annotated voxel) and SORW (steps per walk) are Biomedisa's own options (its defaults: 10
and 4000); its run time is proportional to annotated voxels × NBRW × SORW.
Only numpy and biomedisa are imported: this file never runs in the product's environment.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

BIOMEDISA_DEFAULTS = (10, 4000)  # nbrw, sorw of biomedisa.interpolation.smart_interpolation


def biomedisa_inputs(image: np.ndarray, sparse: np.ndarray, ks: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 image scaled on its 0.5–99.5 percentiles, labels: 0 not annotated, 1 background, 2 bone)."""
    lo, hi = np.percentile(image, [0.5, 99.5])
    data = (np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1) * 255).round().astype(np.uint8)
    labels = np.zeros(sparse.shape, np.uint8)
    labels[ks] = np.where(sparse[ks] > 0, 2, 1)
    return data, labels


def main() -> None:
    work, ks = Path(sys.argv[1]), [int(k) for k in sys.argv[2].split(",")]
    nbrw, sorw = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else BIOMEDISA_DEFAULTS
    data, labels = biomedisa_inputs(np.load(work / "image.npy"), np.load(work / "sparse.npy"), ks)
    from biomedisa.interpolation import smart_interpolation

    t0 = time.monotonic()
    result = smart_interpolation(data, labels, nbrw=nbrw, sorw=sorw, platform="opencl_Portable_CPU")
    seconds = time.monotonic() - t0
    if result is None or "regular" not in result:
        raise SystemExit("biomedisa returned no result (see its messages above)")
    np.save(work / "pred.npy", (np.asarray(result["regular"]) == 2).astype(np.uint8))
    print(json.dumps({"seconds": seconds}))


if __name__ == "__main__":
    main()
