"""``fossilsegment train``: train a segmentation model on labelled specimen folders (one CPU/GPU or torchrun)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from ._progress import progress_bar
from .options import add_device_option, add_force_option, add_output_option, add_precision_option, add_threads_option


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model on labelled scans",
        description="Train a 2D/2.5D segmentation network on specimen folders (volume.* + labels.*, e.g. from "
                    "`fossilsegment phantom`). The best epoch by validation Dice is saved as a model folder. "
                    "Launch with `torchrun --nproc_per_node N -m fossilsegment_engine train ...` for "
                    "DistributedDataParallel (gloo on CPU, nccl on CUDA).")
    p.add_argument("--data", type=Path, nargs="+", required=True, metavar="DIR",
                   help="specimen folders, or folders of specimen folders")
    add_output_option(p, required=True, metavar="MODELDIR", help="model folder to write")
    p.add_argument("--name", default=None, help="model name (default: the MODELDIR folder name)")
    p.add_argument("--init-from", default=None, metavar="MODEL",
                   help="start from this model's weights (bundled name or folder) with a fresh schedule; its "
                        "architecture, classes and preprocessing are used (architecture options must not differ)")
    _add_architecture_options(p)
    p.add_argument("--epochs", type=int, default=20, help="training epochs")
    p.add_argument("--steps-per-epoch", type=int, default=50, help="optimizer steps per epoch")
    p.add_argument("--batch-size", type=int, default=8, help="crops per step (per process under torchrun)")
    p.add_argument("--crop", type=int, default=256, help="square training crop in pixels (multiple of 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (warm-up, then cosine)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of specimens held out for validation")
    p.add_argument("--val-max-slices", type=int, default=64, help="validation slices per specimen (evenly spaced)")
    add_device_option(p)
    add_precision_option(p)
    add_threads_option(p)
    p.add_argument("--augment", default="full", choices=["full", "light", "none"],
                   help="full: geometry, intensity, blur, noise, rings, streaks; light: no blur/noise/rings/streaks")
    p.add_argument("--select-class", default=None, metavar="NAME",
                   help="keep the epoch with the best validation Dice of this class (e.g. Bone) instead of the "
                        "mean over all foreground classes (a rare class makes that mean noisy)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--resume", action="store_true", help="continue from MODELDIR/.train_state")
    add_force_option(p)
    p.set_defaults(func=run)


#: prefix of the argparse destinations of architecture options (kept apart from the other options)
_ARCH_DEST = "arch_option_"


def _add_architecture_options(p: argparse.ArgumentParser) -> None:
    """``--arch`` and one flag per option of the architecture registry; all default to None (not given), so
    that the architecture's own defaults, or those of ``--init-from``, apply."""
    from ..models import ARCHITECTURES, DEFAULT_ARCH

    g = p.add_argument_group("architecture (options of the models.archs registry; with --init-from: that model's)")
    g.add_argument("--arch", default=None, choices=list(ARCHITECTURES), help="network type: " + "; ".join(
        f"{a.name}: {a.summary}" for a in ARCHITECTURES.values()) + f" (default {DEFAULT_ARCH})")
    by_name: dict[str, list] = {}
    for arch in ARCHITECTURES.values():
        for option in arch.options:
            by_name.setdefault(option.name, []).append((arch.name, option))
    for name, declared in by_name.items():
        option = declared[0][1]
        helps = dict.fromkeys(o.help for _, o in declared)
        text = "; ".join(helps) if len(helps) == 1 else "; ".join(f"{a}: {o.help}" for a, o in declared)
        values = dict.fromkeys(str(o.default) for _, o in declared)
        defaults = next(iter(values)) if len(values) == 1 else ", ".join(f"{a} {o.default}" for a, o in declared)
        only = "" if len(declared) == len(ARCHITECTURES) else f"{'/'.join(a for a, _ in declared)} only; "
        kwargs = {"action": "store_true"} if option.cli_type is bool else {
            "type": option.cli_type, "choices": option.choices, "metavar": None if option.choices else name.upper()}
        g.add_argument(option.cli_flag, dest=_ARCH_DEST + name, default=None,
                       help=f"{text} ({only}default {defaults})", **kwargs)
    g.add_argument("--context", type=int, default=None, choices=[1, 3, 5],
                   help="axial slices per input (2.5D; default 1)")
    g.add_argument("--teeth", action="store_true", default=None,
                   help="add the Tooth class (label 2); else labels must be 0/1")


def _given_arch_options(args: argparse.Namespace) -> dict:
    """The architecture options given on the command line, by registry name."""
    return {k[len(_ARCH_DEST):]: v for k, v in vars(args).items() if k.startswith(_ARCH_DEST) and v is not None}


def run(args: argparse.Namespace) -> int:
    from ..training.train import TrainOptions, train

    command = "fossilsegment " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    options = TrainOptions(
        data_dirs=args.data, out_dir=args.output, name=args.name, arch=args.arch,
        arch_options=_given_arch_options(args), context_slices=args.context, teeth=args.teeth, init_from=args.init_from, select_class=args.select_class,
        epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
        crop=args.crop, lr=args.lr, weight_decay=args.weight_decay, val_fraction=args.val_fraction,
        val_max_slices=args.val_max_slices, device=args.device, precision=args.precision, threads=args.threads,
        augment=args.augment, seed=args.seed, resume=args.resume, force=args.force,
        provenance={"training_command": command},
    )
    if os.environ.get("RANK", "0") != "0":  # torchrun: only rank 0 shows progress and reports
        train(options)
        return 0
    with progress_bar("training", unit="step") as progress:
        out = train(options, progress=progress)
    print(f"model written to {out}")
    return 0
