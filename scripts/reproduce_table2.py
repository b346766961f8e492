#!/usr/bin/env python
"""Reproduce the protocol of Yu et al. 2022, Table 2, on our phantom data: train each variant, evaluate it.

    python scripts/reproduce_table2.py --data-root DATA --out RUNS [--steps 4000] [--device auto]
        [--variants unet,dlv3p_mnv1_1skip,...] [--md docs/benchmarks/table2.md]

DATA comes from scripts/make_training_data.py. Every variant gets the same data, seed, crop, batch size and
number of steps; the table gives bone mean Dice / mean IoU (paper's slice-wise figures) and volumetric Dice on
DATA/test_seen and on the held-out family DATA/test_heldout. Made for a GPU (minutes per variant); on 2 CPU
cores scale ``--steps`` down and say so next to the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

#: name → (title, train arguments); the paper's rows
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "unet": ("U-Net", ["--arch", "unet", "--encoder", "tu-resnet18", "--encoder-depth", "4", "--decoder-channels", "16"]),
    "dlv3p_mnv1_1skip": ("DeepLabV3+ MobileNetV1, 1 skip",
                         ["--arch", "deeplabv3plus", "--encoder", "tu-mobilenetv1_100", "--skips", "1"]),
    "dlv3p_mnv1_2skips": ("DeepLabV3+ MobileNetV1, 2 skips (paper's best)",
                          ["--arch", "deeplabv3plus", "--encoder", "tu-mobilenetv1_100", "--skips", "2"]),
    "dlv3p_mnv1_aspp_concat": ("DeepLabV3+ MobileNetV1, 2 skips, ASPP concatenated",
                               ["--arch", "deeplabv3plus", "--encoder", "tu-mobilenetv1_100", "--skips", "2",
                                "--aspp-concat"]),
    "dlv3p_resnet50": ("DeepLabV3+ ResNet-50, 2 skips",
                       ["--arch", "deeplabv3plus", "--encoder", "resnet50", "--skips", "2"]),
}


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def cell(report: dict, group: str, key: str) -> str:
    bone = report["by_data_dir"].get(group, {}).get("model", {}).get("Bone") or {}
    value = bone.get(key)
    return "–" if value is None else f"{value:.3f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="folder for the trained variants and reports")
    p.add_argument("--steps", type=int, default=4000, help="training steps per variant")
    p.add_argument("--steps-per-epoch", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=None, help="CPU threads for training (default: torch's choice)")
    p.add_argument("--val-max-slices", type=int, default=64, help="validation slices per specimen")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--md", type=Path, default=Path("docs/benchmarks/table2.md"))
    args = p.parse_args()
    from fossilsegment_engine.models import load_model

    exe = [sys.executable, "-m", "fossilsegment_engine"]
    seen, heldout = args.data_root / "test_seen", args.data_root / "test_heldout"
    rows = []
    for name in args.variants.split(","):
        title, arch = VARIANTS[name]
        model_dir, report_dir = args.out / name, args.out / f"{name}_report"
        if not (model_dir / "config.json").is_file():
            run(exe + ["train", "--data", str(args.data_root / "train"), *arch, "--context", "3", "--teeth",
                       "--epochs", str(max(1, args.steps // args.steps_per_epoch)),
                       "--steps-per-epoch", str(args.steps_per_epoch), "--batch-size", str(args.batch_size),
                       "--crop", str(args.crop), "--lr", str(args.lr), "--device", args.device,
                       "--precision", args.precision, "--val-max-slices", str(args.val_max_slices),
                       *(["--threads", str(args.threads)] if args.threads else []), "--select-class", "Bone",
                       "--seed", "0", "-o", str(model_dir), "--name", name])
        run(exe + ["evaluate", "--model", str(model_dir), "--data", str(seen), str(heldout), "--device", args.device,
                   "-o", str(report_dir), "--force"])
        report = json.loads((report_dir / "report.json").read_text())
        training = json.loads((model_dir / "config.json").read_text())["provenance"]["training"]
        params_m = sum(p.numel() for p in load_model(model_dir, device="cpu")[0].parameters()) / 1e6
        rows.append(f"| {title} | " + " | ".join(
            f"{cell(report, str(g), 'mean_dice')} / {cell(report, str(g), 'mean_iou')} / {cell(report, str(g), 'volume_dice')}"
            for g in (seen, heldout)) + f" | {params_m:.1f} | {training['wall_seconds'] / 60:.0f} |")
    text = "\n".join([
        f"# Table 2 protocol on phantoms ({datetime.now(timezone.utc):%Y-%m-%d})", "",
        f"Command: `python scripts/reproduce_table2.py {' '.join(sys.argv[1:])}`", "",
        f"Scale: every variant trained from scratch for {args.steps} steps × {args.batch_size} crops of {args.crop}² "
        f"(device {args.device}, precision {args.precision}), same data and seed; the paper trained each to "
        "convergence on a GPU, so compare the rows with each other, not with the paper's figures.", "",
        "Bone: mean Dice / mean IoU (over axial slices with bone in truth or prediction) / volumetric Dice.", "",
        "| Variant | unseen seeds, seen families | held-out family | parameters (M) | training (min) |",
        "|---|---|---|---|---|", *rows, ""])
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
