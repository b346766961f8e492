"""``fossilsegment evaluate``: score a model (and optionally Otsu / region growing) on labelled specimens."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._progress import progress_bar
from .options import add_force_option, add_inference_options, add_output_option, load_segmenter


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score a model on labelled scans",
        description="Segment every specimen folder (volume.* + labels.*) and report per-class slice-wise mean "
                    "Dice/IoU (the paper's figures) and volumetric Dice/IoU, pooled overall, per data folder and "
                    "per phantom family.")
    p.add_argument("--data", type=Path, nargs="+", required=True, metavar="DIR",
                   help="specimen folders or folders of them (each DIR is also reported on its own)")
    p.add_argument("--baselines", action="store_true",
                   help="also run global Otsu and region growing seeded from the ground truth")
    add_output_option(p, metavar="REPORT_DIR",
                      help="write report.json, report.md and figure.png into this new folder (default: print only)")
    p.add_argument("--figure-rows", type=int, default=6, metavar="N", help="rows in figure.png")
    add_force_option(p)
    add_inference_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..atomic import check_can_write
    from ..training.evaluate import evaluate, markdown_table

    if args.output is not None:
        check_can_write(args.output, args.force)  # before loading the model
    segmenter = load_segmenter(args)
    with progress_bar("evaluating", unit="specimen") as progress:
        report = evaluate(segmenter, args.data, baselines=args.baselines, out_dir=args.output, force=args.force,
                          figure_rows=args.figure_rows, progress=progress)
    print(markdown_table(report["overall"]), end="")
    if args.output is not None:
        print(f"report written to {args.output}")
    return 0
