"""``fossilsegment learn``: segment a whole scan from a few corrected slices along any axis."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from types import SimpleNamespace

from ..errors import FossilSegmentError, InputError
from ..finetune.annotations import SLICE_REFS_HELP
from ._progress import progress_bar
from .options import (add_cleanup_options, add_device_option, add_force_option, add_labelmap_option, add_model_option,
                      add_output_option, add_precision_option, add_spacing_option, postprocess_options)

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "learn", help="segment a whole scan from a few corrected slices",
        description="Learn from the listed corrected slices of LABELS (the truth there; other slices are ignored) "
                    "and write the segmentation of the whole scan, the corrected slices copied unchanged (the clean-up "
                    "never changes them).")
    p.add_argument("volume", type=Path, metavar="VOLUME", help="the scan (any format `segment` reads)")
    p.add_argument("labels", type=Path, metavar="LABELS", help="labelmap on the scan's grid (0 = background)")
    p.add_argument("--slices", required=True, metavar="REFS", help=f"the corrected slices: {SLICE_REFS_HELP}")
    add_labelmap_option(p)
    add_output_option(p, metavar="OUT.seg.nrrd", help="Slicer segmentation file")
    add_model_option(p)
    p.add_argument("--max-minutes", type=float, default=3.0, metavar="N",
                   help="time budget of the whole job: the network is fine-tuned for what classifying the scan "
                        "leaves of it")
    add_device_option(p)
    add_precision_option(p)
    add_cleanup_options(p)
    p.add_argument("--save-model", type=Path, default=None, metavar="DIR",
                   help="also save a model fine-tuned on the corrected axial (k) slices, for `segment --model DIR` "
                        "on other scans of the specimen")
    add_spacing_option(p)
    add_force_option(p)
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.set_defaults(func=run)


def _check_outputs(args: argparse.Namespace):
    """The Outputs to write; refuse missing, existing (without --force) or colliding outputs before any work."""
    from ..atomic import check_can_write
    from ..pipeline import Outputs

    if args.labelmap is None and args.output is None:
        raise FossilSegmentError("no output requested: give --labelmap OUT.nrrd and/or -o OUT.seg.nrrd")
    outputs = Outputs(seg_nrrd=args.output, labelmap=args.labelmap, force=args.force)
    outputs.check()
    if args.save_model is not None:
        if args.save_model.resolve() in {p.resolve() for p in outputs.requested()}:
            raise FossilSegmentError(f"--save-model {args.save_model} is also another output's path")
        check_can_write(args.save_model, args.force)
    return outputs


def run(args: argparse.Namespace) -> int:
    from ..finetune import annotations_from_labelmap, check_annotation_set, check_annotations, parse_slice_refs
    from ..finetune.learn import LearnOptions, learn_and_segment
    from ..finetune.tune import model_card
    from ..io.volume_io import read_labelmap, read_volume
    from ..models import ModelConfig, load_config, save_model
    from ..pipeline import provenance, write_outputs

    # every check before the slow part: nothing is written on bad input
    outputs = _check_outputs(args)
    if not args.max_minutes > 0:
        raise InputError(f"--max-minutes {args.max_minutes:g}: a budget of 0 minutes (or less) leaves no time to "
                         "learn; give a positive number of minutes")
    refs = parse_slice_refs(args.slices)
    if args.save_model is not None and not any(axis == 0 for axis, _ in refs):
        raise InputError("--save-model fine-tunes on corrected axial slices, and none is listed: add k slices "
                         "(e.g. --slices k10,k80) or drop --save-model")
    volume = read_volume(args.volume, spacing=args.spacing)
    labels = read_labelmap(args.labels, like=volume)
    config = load_config(args.model)
    annotations = check_annotation_set(volume, annotations_from_labelmap(labels, refs, like=volume),
                                       config.n_classes, config.class_names)
    axial = [a.index for a in annotations if a.axis == 0]
    if args.save_model is not None:  # the fine-tuning recipe needs foreground on its (axial) slices
        check_annotations(volume, labels, axial, config.n_classes, config.class_names)
    del labels  # the corrected slices are copied out: a whole-volume label file is not held while learning
    names = [a.name for a in annotations]
    log.info("input %s: %s voxels (k, j, i); corrected slices %s; model %s", args.volume, volume.shape,
             ",".join(names), config.name)

    options = LearnOptions(max_minutes=args.max_minutes, device=args.device, precision=args.precision,
                           seed=args.seed, postprocess=postprocess_options(args),
                           always_finetune=args.save_model is not None)
    with progress_bar("learning", percent=True) as progress:
        result = learn_and_segment(volume, annotations, model=args.model, options=options, progress=progress,
                                   cancel=None)
    tuned = result.finetuned  # the network fine-tuned on the axial slices, saved as is with --save-model
    parameters = {"device": args.device, "precision": args.precision, "max_minutes": args.max_minutes,
                  "seed": args.seed, "annotated_slices": names, "learn": result.report}
    # provenance() reads only the segmenter's config (and optional run details) here: the model learn started from
    meta = provenance(SimpleNamespace(config=config), volume, parameters, corrected_slices=axial)
    written = write_outputs(volume, result.labels, config.classes, outputs, meta)
    if args.save_model is not None and tuned is not None:
        tuned.config = ModelConfig.from_dict({**tuned.config.to_dict(), "name": args.save_model.name})
        written.append(save_model(tuned.module, tuned.config, args.save_model, force=args.force,
                                  extra_files={"MODEL_CARD.md": model_card(tuned)}))

    from ..io.segmentation_io import count_labels

    voxel_mm3 = volume.spacing[0] * volume.spacing[1] * volume.spacing[2]
    class_names = {c["value"]: c["name"] for c in config.classes}
    counts = {v: n for v, n in count_labels(result.labels.array).items() if v != 0}
    print(f"learned from {len(names)} corrected slice(s): {','.join(names)}")
    for value, n in counts.items():
        print(f"{class_names.get(value, value)}: {n} voxels, {n * voxel_mm3:.4g} mm³")
    if not counts:
        print("no bone found")
    for path in written:
        print(f"wrote {path}")
    return 0
