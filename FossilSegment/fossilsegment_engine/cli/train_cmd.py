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
    # architecture options default to None so that --init-from can tell which ones were given
    p.add_argument("--arch", default=None, choices=["unet", "deeplabv3plus"], help="default deeplabv3plus")
    p.add_argument("--encoder", default=None,
                   help="smp encoder, e.g. tu-mobilenetv1_100 (the paper's, default), mobilenet_v2, resnet18, resnet50")
    p.add_argument("--encoder-depth", type=int, default=None, choices=[3, 4, 5], help="default 5")
    p.add_argument("--skips", type=int, default=None, choices=[1, 2],
                   help="DeepLab v3+ decoder skip connections (default 2)")
    p.add_argument("--aspp-concat", action="store_true", default=None,
                   help="DeepLab v3+ 'ASPP concatenated' variant")
    p.add_argument("--decoder-channels", type=int, default=None,
                   help="decoder width (DeepLab: ASPP/decoder channels; U-Net: finest width c → [16c … c])")
    p.add_argument("--context", type=int, default=None, choices=[1, 3, 5],
                   help="axial slices per input (2.5D; default 1)")
    p.add_argument("--teeth", action="store_true", default=None,
                   help="add the Tooth class (label 2); else labels must be 0/1")
    p.add_argument("--epochs", type=int, default=20, help="training epochs")
    p.add_argument("--steps-per-epoch", type=int, default=50, help="optimizer steps per epoch")
    p.add_argument("--batch-size", type=int, default=8, help="crops per step (per process under torchrun)")
    p.add_argument("--crop", type=int, default=256, help="square training crop in pixels (multiple of 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (warm-up, then cosine)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of specimens held out for validation")
    p.add_argument("--val-max-slices", type=int, default=64, help="validation slices per specimen (evenly spaced)")
    add_device_option(p)
    add_precision_option(p, "training")
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


#: CLI option → (ModelConfig field, default without --init-from)
_ARCH_OPTIONS = {"arch": ("arch", "deeplabv3plus"), "encoder": ("encoder", "tu-mobilenetv1_100"),
                 "encoder_depth": ("encoder_depth", 5), "skips": ("decoder_skips", 2),
                 "aspp_concat": ("aspp_concat", False), "decoder_channels": ("decoder_channels", None),
                 "context": ("context_slices", 1)}


def _architecture(args: argparse.Namespace) -> dict:
    """Architecture options: the given ones or defaults; with ``--init-from`` the model's (conflicts → error)."""
    from ..errors import InputError
    from ..models import load_config

    if args.init_from is None:
        arch = {opt: default if getattr(args, opt) is None else getattr(args, opt)
                for opt, (_, default) in _ARCH_OPTIONS.items()}
        arch["teeth"] = bool(args.teeth)
        if arch["arch"] != "deeplabv3plus":
            arch["skips"] = 2
        return arch
    parent = load_config(args.init_from)
    arch = {opt: getattr(parent, field) for opt, (field, _) in _ARCH_OPTIONS.items()}
    arch["teeth"] = "Tooth" in parent.class_names
    for opt, value in arch.items():
        given = getattr(args, opt)
        if given is not None and given != value:
            flag = "--" + opt.replace("_", "-")
            raise InputError(f"{flag} {given} conflicts with --init-from {args.init_from} ({parent.name} has "
                             f"{value}); leave architecture options out when starting from a model")
    return arch


def run(args: argparse.Namespace) -> int:
    from ..training.train import TrainOptions, train

    command = "fossilsegment " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    arch = _architecture(args)
    options = TrainOptions(
        data_dirs=args.data, out_dir=args.output, name=args.name, arch=arch["arch"], encoder=arch["encoder"],
        encoder_depth=arch["encoder_depth"], decoder_skips=arch["skips"], aspp_concat=arch["aspp_concat"],
        decoder_channels=arch["decoder_channels"], context_slices=arch["context"], init_from=args.init_from,
        select_class=args.select_class,
        teeth=arch["teeth"], epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
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
