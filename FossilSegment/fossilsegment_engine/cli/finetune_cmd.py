"""``fossilsegment finetune``: adapt a model to one specimen from a few corrected axial slices."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ._progress import progress_bar
from .options import (add_device_option, add_force_option, add_model_option, add_output_option, add_precision_option,
                      add_spacing_option)

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune a model on a few annotated slices of one scan",
        description="Fine-tune a model on the listed axial slices of LABELS (the truth there; other slices are "
                    "ignored) and write a new model folder whose provenance names the parent model and the slices.")
    p.add_argument("volume", type=Path, metavar="VOLUME", help="the scan (any format `segment` reads)")
    p.add_argument("labels", type=Path, metavar="LABELS", help="labelmap on the scan's grid (0 = background)")
    p.add_argument("--slices", required=True, metavar="K1,K2,...",
                   help="annotated axial slice indices (0-based), e.g. 10,80,150 (ranges like 10-12 allowed)")
    add_output_option(p, required=True, metavar="MODELDIR", help="new model folder")
    add_model_option(p)
    p.add_argument("--max-minutes", type=float, default=3.0, metavar="N", help="time budget")
    p.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="training steps (default: 400; the time budget may end it first)")
    p.add_argument("--name", default=None, help="model name (default: the output folder's name)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    add_device_option(p)
    add_precision_option(p)
    add_spacing_option(p)
    add_force_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..atomic import check_can_write
    from ..finetune import FinetuneOptions, check_annotations, finetune, parse_slice_list
    from ..io.volume_io import read_labelmap, read_volume
    from ..models import load_config

    check_can_write(args.output, args.force)  # before the slow part
    slices = parse_slice_list(args.slices)
    steps = {} if args.max_steps is None else {"max_steps": args.max_steps}
    options = FinetuneOptions(max_minutes=args.max_minutes, seed=args.seed, device=args.device,
                              precision=args.precision, **steps)
    volume = read_volume(args.volume, spacing=args.spacing)
    labels = read_labelmap(args.labels, like=volume)
    config = load_config(args.model)
    check_annotations(volume, labels, slices, config.n_classes, config.class_names)  # fail fast, nothing written
    with progress_bar("fine-tuning", unit="‰") as progress:
        out = finetune(volume, labels, slices, args.output, model=args.model, progress=progress,
                       force=args.force, name=args.name, options=options)
    report = load_config(out).provenance["finetune"]
    print(f"fine-tuned {config.name} on slices {report['slices']} "
          f"in {report['seconds']} s, {report['steps']} steps, stopped by {report['stopped_by']}")
    print(f"wrote {out}")
    return 0
