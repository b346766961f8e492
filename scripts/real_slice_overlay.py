#!/usr/bin/env python
"""Segment the real fossil CT slice (paddlefish, no labels) as a one-slice volume and write an overlay PNG.

    python scripts/real_slice_overlay.py [--model fossil-bone-v2.1] [--input slice_u16.npy] --out overlay.png

Prints the fraction of pixels per class. The slice has no ground truth: judge the PNG by eye.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fossilsegment_engine.inference.predictor import Predictor
from fossilsegment_engine.io.overlay import write_overlay_png
from fossilsegment_engine.volume import Volume

DEFAULT_INPUT = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "paddlefish_ct_slice" / "slice_u16.npy"


def segment_slice(model: Any, input_path: Path, out: Path, device: str = "auto", panel_size: int = 768) -> dict[str, float]:
    """Segment one 2D ``.npy`` slice, write the overlay PNG to ``out``; returns {class name: pixel fraction}."""
    array = np.load(input_path, allow_pickle=False)
    if array.ndim != 2:
        raise SystemExit(f"expected one 2D slice, got shape {array.shape}")
    volume = Volume(array[None])
    seg = model if isinstance(model, Predictor) else Predictor.load(model, device=device)
    labels = seg.predict_labels(volume)
    write_overlay_png(volume, labels, out, seg.classes, n_slices=1, views=False, force=True, panel_size=panel_size)
    return {c["name"]: float(np.mean(labels.array == c["value"])) for c in seg.classes}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--panel-size", type=int, default=768)
    args = p.parse_args(argv)
    fractions = segment_slice(args.model, args.input, args.out, args.device, args.panel_size)
    for name, f in fractions.items():
        print(f"{name}: {f:.4f} of the slice")
    print(f"overlay written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
