"""``fossilsegment demo``: segment the bundled demo scan with the bundled default model."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..atomic import check_can_write
from ..resources import DEMO_LABELS, DEMO_SCAN, resource_path
from ._progress import progress_bar
from .options import (add_cleanup_options, add_force_option, add_inference_options, add_output_option, load_segmenter,
                      postprocess_options)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="segment the bundled demo scan with the bundled model",
                       description="Segments the bundled demo scan (a synthetic fossil CT phantom with known truth) "
                                   "and writes a .seg.nrrd, a labelmap, STL meshes and a PNG montage into OUTDIR.")
    add_output_option(p, default=Path("demo_output"), metavar="OUTDIR", help="output folder")
    add_force_option(p)
    add_inference_options(p)
    add_cleanup_options(p)
    p.set_defaults(func=run)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean arrays (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def run(args: argparse.Namespace) -> int:
    from ..io.overlay import write_overlay_png
    from ..io.volume_io import read_labelmap, read_volume
    from ..pipeline import Outputs, segment_and_write

    out: Path = args.output
    overlay = out / "demo_overlay.png"
    outputs = Outputs(seg_nrrd=out / "demo.seg.nrrd", labelmap=out / "demo_labelmap.nrrd", stl_dir=out / "stl",
                      force=args.force)
    outputs.check()
    check_can_write(overlay, args.force)
    volume = read_volume(resource_path(DEMO_SCAN))
    segmenter = load_segmenter(args)
    print(f"demo scan {resource_path(DEMO_SCAN)}: {volume.shape} voxels; model {segmenter.config.name} "
          f"on {segmenter.device}")
    with progress_bar("segmenting") as progress, progress_bar("cleaning up", percent=True) as cleanup:
        record = segment_and_write(volume, segmenter, outputs, {"demo": True}, progress=progress,
                                   cleanup_progress=cleanup, postprocess=postprocess_options(args))
    truth = read_labelmap(resource_path(DEMO_LABELS), like=volume)
    for cls in segmenter.classes:
        if cls["value"] == 0:
            continue
        d = dice(record.labelmap.array == cls["value"], truth.array == cls["value"])
        print(f"{cls['name']}: Dice {d:.3f} against the phantom's ground truth")
    # The overlay shows what the model predicts against the truth of the classes it has.
    predicted = [c["value"] for c in segmenter.classes if c["value"] != 0]
    truth_shown = truth.with_array(np.isin(truth.array, predicted).astype(np.uint8))
    write_overlay_png(volume, record.labelmap, overlay, segmenter.classes, force=args.force, truth=truth_shown)
    for path in [*record.written, overlay]:
        print(f"wrote {path}")
    print(f"{overlay.name}: prediction filled orange, ground truth outlined cyan")
    return 0
