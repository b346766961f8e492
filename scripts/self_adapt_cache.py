#!/usr/bin/env python
"""Throw-away experiment (issue 14): cache fossil-bone-v2.1's bone probability (uint8, softmax x 255) and its
cleaned labels (exactly what ``evaluate`` scores) for every specimen, one .npz each.

    python scripts/self_adapt_cache.py CACHE_DIR DATA_DIR [DATA_DIR ...]
"""
import sys, time
from pathlib import Path
import numpy as np
from fossilsegment_engine.inference.predictor import Predictor
from fossilsegment_engine.training.data import find_specimens, read_pair

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
seg = Predictor.load("fossil-bone-v2.1", device="cpu")
for d in sys.argv[2:]:
    for p in find_specimens([d]):
        f = out / f"{p.name}.npz"
        if f.exists():
            continue
        vol, lab = read_pair(p, len(seg.classes), extra_as_background=True)
        t0 = time.monotonic()
        pred = seg.predict_probabilities(vol)
        dt = time.monotonic() - t0
        np.savez_compressed(f, prob=pred.probabilities[1].array, shipped=pred.labels.array, folder=str(p.folder),
                            seconds=dt)
        print(p.name, vol.shape, f"{dt:.1f}s", flush=True)
