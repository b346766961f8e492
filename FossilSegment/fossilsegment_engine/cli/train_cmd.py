"""``fossilsegment train``: train a segmentation model on labelled specimen folders (one CPU/GPU or torchrun)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from ._progress import progress_bar


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model on labelled scans",
        description="Train a 2D/2.5D segmentation network on specimen folders (volume.* + labels.*, e.g. from "
                    "`fossilsegment phantom`). The best epoch by validation Dice is saved as a model folder. "
                    "Launch with `torchrun --nproc_per_node N -m fossilsegment_engine train ...` for "
                    "DistributedDataParallel (gloo on CPU, nccl on CUDA).")
    p.add_argument("--data", type=Path, nargs="+", required=True, metavar="DIR",
                   help="specimen folders, or folders of specimen folders")
    p.add_argument("--out", type=Path, required=True, metavar="MODELDIR", help="model folder to write")
    p.add_argument("--name", default=None, help="model name (default: the MODELDIR folder name)")
    p.add_argument("--arch", default="deeplabv3plus", choices=["unet", "deeplabv3plus"])
    p.add_argument("--encoder", default="tu-mobilenetv1_100",
                   help="smp encoder, e.g. tu-mobilenetv1_100 (the paper's), mobilenet_v2, resnet18, resnet50")
    p.add_argument("--encoder-depth", type=int, default=5, choices=[3, 4, 5])
    p.add_argument("--skips", type=int, default=2, choices=[1, 2], help="DeepLab v3+ decoder skip connections")
    p.add_argument("--aspp-concat", action="store_true", help="DeepLab v3+ 'ASPP concatenated' variant")
    p.add_argument("--decoder-channels", type=int, default=None,
                   help="decoder width (DeepLab: ASPP/decoder channels; U-Net: finest width c → [16c … c])")
    p.add_argument("--context", type=int, default=1, choices=[1, 3, 5], help="axial slices per input (2.5D)")
    p.add_argument("--teeth", action="store_true", help="add the Tooth class (label 2); else labels must be 0/1")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps-per-epoch", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=8, help="crops per step (per process under torchrun)")
    p.add_argument("--crop", type=int, default=256, help="square training crop in pixels (multiple of 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (warm-up, then cosine)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of specimens held out for validation")
    p.add_argument("--val-max-slices", type=int, default=64, help="validation slices per specimen (evenly spaced)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast: auto = bf16 on GPU, fp32 on CPU (bf16 is 1.5–3x faster on recent CPUs)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    p.add_argument("--augment", default="full", choices=["full", "light", "none"],
                   help="full: geometry, intensity, blur, noise, rings, streaks; light: no blur/noise/rings/streaks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from MODELDIR/.train_state")
    p.add_argument("--force", action="store_true", help="replace an existing MODELDIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training.train import TrainOptions, train

    command = "fossilsegment " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    options = TrainOptions(
        data_dirs=args.data, out_dir=args.out, name=args.name, arch=args.arch, encoder=args.encoder,
        encoder_depth=args.encoder_depth, decoder_skips=args.skips if args.arch == "deeplabv3plus" else 2,
        aspp_concat=args.aspp_concat, decoder_channels=args.decoder_channels, context_slices=args.context,
        teeth=args.teeth, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
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
