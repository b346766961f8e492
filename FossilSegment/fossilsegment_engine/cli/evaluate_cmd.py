"""``fossilsegment evaluate``: score a model (and optionally Otsu / region growing) on labelled specimens."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._progress import progress_bar


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score a model on labelled scans",
        description="Segment every specimen folder (volume.* + labels.*) and report per-class slice-wise mean "
                    "Dice/IoU (the paper's figures) and volumetric Dice/IoU, pooled overall, per data folder and "
                    "per phantom family.")
    p.add_argument("--model", default=None, metavar="NAME|DIR", help="bundled model name or folder (default model)")
    p.add_argument("--data", type=Path, nargs="+", required=True, metavar="DIR",
                   help="specimen folders or folders of them (each DIR is also reported on its own)")
    p.add_argument("--baselines", action="store_true",
                   help="also run global Otsu and region growing seeded from the ground truth")
    p.add_argument("--out", type=Path, default=None, metavar="REPORT_DIR",
                   help="write report.json, report.md and figure.png into this new folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--figure-rows", type=int, default=6)
    p.add_argument("--force", action="store_true", help="replace an existing REPORT_DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training.evaluate import evaluate, markdown_table

    with progress_bar("evaluating", unit="specimen") as progress:
        report = evaluate(args.model, args.data, baselines=args.baselines, out_dir=args.out, device=args.device,
                          force=args.force, figure_rows=args.figure_rows, progress=progress)
    print(markdown_table(report["overall"]), end="")
    if args.out is not None:
        print(f"report written to {args.out}")
    return 0
