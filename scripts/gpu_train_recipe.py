#!/usr/bin/env python
"""One-shot training run for a lent GPU (issue 14): phantom-3 data, training for a wall budget, held-out scores.

    PYTHONUNBUFFERED=1 PYTHONPATH=FossilSegment python3 scripts/gpu_train_recipe.py --out OUT \
        [--arch v2.1|unet32|deeplab] [--minutes 8.5]
    ... --smoke    the same path, tiny: 2 small training specimens, 64² crops, a few steps, CPU (< 1 min)

1. Generates the phantoms of ``scripts/make_training_data.py --train-seeds 40 --no-teeth`` (same seeds, medium
   size; test_seen and test_heldout too) in parallel, one process per core, as ``volume.npy`` + ``labels.npy``
   + ``phantom.json`` (with the geometry) in a scratch folder: no SimpleITK needed (its wheel is too big to
   travel to the device machine).
2. Times a short calibration run, then trains (``training.train_model``, bf16 on CUDA) for as many epochs as
   fit before the deadline (``--minutes`` from the start, less the evaluation's share); a run still going at
   the deadline stops cleanly and keeps its best validation epoch.
3. Scores the best epoch on test_seen and test_heldout with ``fossilsegment evaluate``'s metric (the
   Predictor with its clean-up, ``training.metrics.class_scores``), pooled per split and per family.
4. Writes to OUT: ``model.safetensors`` (split into ``model.safetensors.partN`` of 15 MiB when larger; join
   with ``cat``, the report gives the SHA-256), ``config.json``, ``train_log.jsonl``, ``report.json`` and
   ``recipe.log``.

Architectures: ``v2.1`` continues fossil-bone-v2.1 (U-Net, tu-resnet18, 16-channel decoder); ``unet32`` the same
U-Net with a 32-channel decoder, encoder weights from fossil-bone-v2.1; ``deeplab`` the paper's DeepLab v3+ /
tu-mobilenetv1_100, from scratch. All take 3 context slices and the Bone class only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_training_data import plan  # noqa: E402  (the seeds of the phantom-3 data set)

from fossilsegment_engine import phantom  # noqa: E402
from fossilsegment_engine.errors import Cancelled, FossilSegmentError, InputError  # noqa: E402
from fossilsegment_engine.training.data import SpecimenPaths, check_labels, find_specimens  # noqa: E402
from fossilsegment_engine.volume import Volume  # noqa: E402

log = logging.getLogger("gpu_train_recipe")

V21 = "fossil-bone-v2.1"
#: architecture presets: how the model starts, and its learning rate
ARCHS: dict[str, dict[str, Any]] = {
    "v2.1": {"init_from": V21, "lr": 3e-4},
    "unet32": {"arch": "unet", "arch_options": {"encoder": "tu-resnet18", "encoder_depth": 4, "decoder_channels": 32},
               "encoder_from": V21, "lr": 1e-3},
    "deeplab": {"arch": "deeplabv3plus", "arch_options": {}, "lr": 1e-3},
}
#: run sizes: phantom counts (as make_training_data.py), training shape, and seconds kept for evaluation
MODES: dict[str, dict[str, Any]] = {
    "full": {"size": "medium", "train_seeds": 40, "test_seeds": 2, "heldout_seeds": 6, "device": "auto",
             "batch": 32, "crop": 192, "steps_per_epoch": 100, "calibration_steps": 20, "eval_seconds": 100,
             "minutes": 8.5, "max_epochs": None},
    "smoke": {"size": "small", "train_seeds": 1, "test_seeds": 1, "heldout_seeds": 1, "device": "cpu",
              "batch": 2, "crop": 64, "steps_per_epoch": 2, "calibration_steps": 1, "eval_seconds": 15,
              "minutes": 3.0, "max_epochs": 2, "max_train": 2, "max_test_seen": 1},
}
PART_BYTES = 15 * 2**20  # files come back from the device machine only up to 16 MiB each
MODEL_FILES = ("config.json", "train_log.jsonl")


class Deadline:
    """A cancel token (``is_set()``) that turns true at a monotonic time."""

    def __init__(self, at: float) -> None:
        self.at = at

    def is_set(self) -> bool:
        return time.monotonic() >= self.at


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and arrays in a phantom's info."""
    return value.item() if isinstance(value, np.generic) else np.asarray(value).tolist()


def make_specimen(job: tuple[str, str, int, str, Path]) -> str:
    """Generate one phantom (no teeth) into ``root/split/family_sSEED/`` as .npy + phantom.json (with geometry)."""
    split, family, seed, size, root = job
    volume, labels, info = phantom.generate(seed, size=size, family=family, teeth=False)
    folder = root / split / f"{family}_s{seed}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp.", dir=root))
    np.save(tmp / "volume.npy", volume.array)
    np.save(tmp / "labels.npy", labels.array)
    info = {**info, "spacing": volume.spacing, "origin": volume.origin, "direction": volume.direction}
    (tmp / "phantom.json").write_text(json.dumps(info, default=_plain) + "\n", encoding="utf-8")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(folder)
    return folder.name


def read_npy_pair(paths: SpecimenPaths, n_classes: int) -> tuple[Volume, Volume]:
    """(scan, labels) of a specimen folder written by :func:`make_specimen`; labels checked as ``read_pair`` does."""
    info = json.loads((paths.folder / "phantom.json").read_text(encoding="utf-8"))
    volume = Volume(np.load(paths.volume, mmap_mode="r"), info["spacing"], info["origin"], info["direction"])
    labels = volume.with_array(np.load(paths.labels, mmap_mode="r"))
    check_labels(labels.array, n_classes, f"specimen {paths.folder}")
    return volume, labels


def generate_data(root: Path, mode: dict[str, Any], workers: int) -> dict[str, list[Path]]:
    """All phantoms of the plan, generated in ``workers`` processes; ``{split: [specimen folders]}``."""
    jobs = plan(mode["train_seeds"], mode["test_seeds"], "vertebra", mode["heldout_seeds"])
    for split in ("train", "test_seen"):  # smoke: fewer specimens
        limit = mode.get(f"max_{split}")
        if limit is not None:
            jobs = [j for j in jobs if j[0] != split] + [j for j in jobs if j[0] == split][:limit]
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
        for n, name in enumerate(pool.imap_unordered(make_specimen, [(*j, mode["size"], root) for j in jobs]), 1):
            if n % 20 == 0 or n == len(jobs):
                log.info("phantoms: %d/%d (%s) %.0f s", n, len(jobs), name, time.monotonic() - t0)
    return {split: sorted((root / split).iterdir()) for split in ("train", "test_seen", "test_heldout")}


def starter_model(arch: str, work: Path) -> dict[str, Any]:
    """``TrainOptions`` fields that start the preset ``arch``; ``unet32`` gets fossil-bone-v2.1's encoder weights."""
    from fossilsegment_engine.models import ModelConfig, build_model, default_classes, load_model, save_model

    preset = ARCHS[arch]
    if "init_from" in preset:
        load_model(preset["init_from"])  # fails now, not after the data
        return {"init_from": preset["init_from"]}
    fields = {"arch": preset["arch"], "arch_options": dict(preset["arch_options"]), "context_slices": 3, "teeth": False}
    config = ModelConfig(name=f"{arch}-start", arch=preset["arch"], arch_options=dict(preset["arch_options"]),
                         context_slices=3, classes=default_classes(False))
    model = build_model(config)
    if "encoder_from" not in preset:
        return fields  # from scratch (the model was built only to fail early)
    source = load_model(preset["encoder_from"])[0].state_dict()
    encoder = {k: v for k, v in source.items() if k.startswith("encoder.")}
    missing = model.load_state_dict(encoder, strict=False).missing_keys
    if any(k.startswith("encoder.") for k in missing):
        raise InputError(f"{preset['encoder_from']}'s encoder does not fit {arch}: missing {missing[:3]}")
    folder = work / f"start-{arch}"
    save_model(model, config, folder)
    log.info("%s: encoder (%d tensors) from %s, decoder fresh", arch, len(encoder), preset["encoder_from"])
    return {"init_from": str(folder)}


def train_until(deadline: float, data: dict[str, list[Path]], work: Path, start: dict[str, Any],
                args: argparse.Namespace, mode: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Calibrate the step time, then train for as many epochs as fit before ``deadline``; (model folder, facts)."""
    from fossilsegment_engine.training.data import load_specimen
    from fossilsegment_engine.training.train import TrainOptions, train_model

    common = dict(batch_size=mode["batch"], crop=mode["crop"], lr=args.lr or ARCHS[args.arch]["lr"],
                  device=mode["device"], precision="auto", seed=0, val_fraction=0.1, val_max_slices=16,
                  select_class="Bone", name=f"phantom3-{args.arch}", **start)
    cal_data = data["train"][:4]
    t0 = time.monotonic()
    load_specimen(find_specimens(cal_data[:1])[0], 2, None, np.random.default_rng(0), read_npy_pair)
    load_s = (time.monotonic() - t0) * len(data["train"])  # the main run reads and normalises every specimen
    # two short epochs: the second one's time is free of CUDA start-up and cuDNN's first-call tuning
    cal = train_model(TrainOptions(data_dirs=cal_data, out_dir=work / "calibration", epochs=2,
                                   steps_per_epoch=mode["calibration_steps"], **common), reader=read_npy_pair)
    rec = cal.history[-1]
    step_s = rec["train_seconds"] / mode["calibration_steps"]
    n_val_cal = max(1, round(0.1 * len(cal_data)))
    n_val = max(1, round(0.1 * len(data["train"])))
    epoch_s = mode["steps_per_epoch"] * step_s + rec["val_seconds"] / n_val_cal * n_val + 1.0
    epochs = max(1, math.floor(0.95 * (deadline - time.monotonic() - load_s) / epoch_s))
    epochs = min(epochs, mode["max_epochs"] or epochs)
    log.info("calibration: reading a specimen %.2f s; %.3f s/step (batch %d, %d² crops), about %.1f s/epoch with "
             "validation; %d epochs of %d steps planned", load_s / len(data["train"]), step_s, mode["batch"],
             mode["crop"], epoch_s, epochs, mode["steps_per_epoch"])
    opts = TrainOptions(data_dirs=[data["train"][0].parent], out_dir=work / "model", epochs=epochs,
                        steps_per_epoch=mode["steps_per_epoch"], **common)
    opts.provenance["training_command"] = args.command
    t1 = time.monotonic()
    stopped = False
    try:
        result = train_model(opts, progress=None, cancel=Deadline(deadline), reader=read_npy_pair)
        history = result.history
    except Cancelled:
        stopped = True
        log.warning("wall budget reached during training: keeping the best finished epoch")
        history = [json.loads(line) for line in (opts.out_dir / "train_log.jsonl").read_text().splitlines()] \
            if (opts.out_dir / "train_log.jsonl").is_file() else []
    if not (opts.out_dir / "model.safetensors").is_file():
        raise InputError("training finished no epoch before the deadline: raise --minutes")
    best = max(history, key=lambda r: r["val_score"])
    facts = {"calibration_seconds_per_step": round(step_s, 4), "estimated_load_seconds": round(load_s, 1),
             "planned_epochs": epochs, "finished_epochs": len(history), "stopped_at_deadline": stopped,
             "steps": len(history) * mode["steps_per_epoch"], "train_wall_seconds": round(time.monotonic() - t1, 1),
             "best_epoch": best["epoch"], "best_val_bone_mean_dice": best["val_score"],
             "options": {k: v for k, v in opts.to_json().items() if k != "provenance"}}
    for line in history:
        log.info("epoch %d: loss %.4f val Bone %.4f (%.1f s train, %.1f s val)", line["epoch"], line["loss"],
                 line["val_score"], line["train_seconds"], line["val_seconds"])
    return opts.out_dir, facts


def evaluate_split(model_dir: Path, data: dict[str, list[Path]], device: str, thorough: bool = False) -> dict[str, Any]:
    """``fossilsegment evaluate``'s scores (model only) pooled per split, per family, and over all test specimens
    (``thorough``: segmented as ``--thorough`` does, the mean of five passes)."""
    from fossilsegment_engine.inference.predictor import Predictor
    from fossilsegment_engine.training.metrics import class_scores

    seg = Predictor.load(model_dir, device=device, thorough=thorough)
    pools: dict[str, dict[str, Any]] = {}
    per_specimen = []
    for split in ("test_seen", "test_heldout"):
        for paths in find_specimens(data[split]):
            volume, labels = read_npy_pair(paths, len(seg.classes))
            t0 = time.monotonic()
            pred = seg.predict_labels(volume).array
            scores = class_scores(np.asarray(labels.array), pred, seg.classes)
            family = json.loads((paths.folder / "phantom.json").read_text(encoding="utf-8"))["family"]
            for group in ("all", split, f"family:{family}"):
                slot = pools.setdefault(group, {})
                for name, s in scores.items():
                    slot[name] = slot[name].merge(s) if name in slot else s
            per_specimen.append({"name": paths.name, "split": split, "family": family,
                                 "bone_mean_dice": scores["Bone"].summary()["mean_dice"],
                                 "seconds": round(time.monotonic() - t0, 2)})
            log.info("evaluate %s/%s: Bone mean Dice %.4f", split, paths.name, per_specimen[-1]["bone_mean_dice"])
    return {"pooled": {g: {c: s.summary() for c, s in p.items()} for g, p in pools.items()},
            "specimens": per_specimen, "device": str(seg.device)}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export(model_dir: Path, out: Path) -> dict[str, Any]:
    """Copy the model to ``out``, split into 15 MiB parts when it is larger; returns its files and SHA-256."""
    weights = model_dir / "model.safetensors"
    for name in MODEL_FILES:
        shutil.copy2(model_dir / name, out / name)
    size = weights.stat().st_size
    if size <= PART_BYTES:
        shutil.copy2(weights, out / weights.name)
        parts = [weights.name]
    else:
        parts = []
        with open(weights, "rb") as src:
            while chunk := src.read(PART_BYTES):
                parts.append(f"{weights.name}.part{len(parts)}")
                (out / parts[-1]).write_bytes(chunk)
    return {"weights_bytes": size, "weights_sha256": sha256(weights), "weights_files": parts,
            "join": None if len(parts) == 1 else f"cat {' '.join(parts)} > model.safetensors"}


def write_report(out: Path, report: dict[str, Any], t_start: float) -> None:
    """``out/report.json`` (replaced atomically), with the wall time so far."""
    from fossilsegment_engine.atomic import atomic_path

    report["wall_seconds"] = round(time.monotonic() - t_start, 1)
    with atomic_path(out / "report.json", force=True) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


def _environment() -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__, "gpu": gpu, "cpus": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="empty or new folder for the results")
    p.add_argument("--arch", default="v2.1", choices=list(ARCHS))
    p.add_argument("--minutes", type=float, default=None,
                   help="wall budget of the whole run, from its start (default 8.5; --smoke: 3)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    p.add_argument("--batch-size", type=int, default=None, help="crops per step (default 32; --smoke: 2)")
    p.add_argument("--crop", type=int, default=None, help="crop side, a multiple of 32 (default 192; --smoke: 64)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="phantom generation processes")
    p.add_argument("--smoke", action="store_true", help="tiny CPU run of the same path")
    args = p.parse_args(argv)
    t_start = time.monotonic()
    mode = dict(MODES["smoke" if args.smoke else "full"])
    mode.update({k: v for k, v in (("batch", args.batch_size), ("crop", args.crop)) if v is not None})
    out: Path = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"error: output {out} exists and is not an empty folder", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout), logging.FileHandler(out / "recipe.log")])
    deadline = t_start + 60 * (args.minutes or mode["minutes"]) - mode["eval_seconds"]
    args.command = "scripts/gpu_train_recipe.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report: dict[str, Any] = {"command": args.command, "arch": args.arch, "mode": "smoke" if args.smoke else "full",
                              "generator": phantom.GENERATOR_VERSION, "environment": _environment()}
    log.info("start: %s", json.dumps(report))
    if not args.smoke and report["environment"]["gpu"] is None:
        log.error("error: no CUDA device; the full run is for a GPU (use --smoke on a CPU)")
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="fossil_gpu_recipe.") as tmp:
            work = Path(tmp)
            start = starter_model(args.arch, work)
            t0 = time.monotonic()
            data = generate_data(work / "data", mode, args.workers)
            report["data"] = {s: len(v) for s, v in data.items()} | {"seconds": round(time.monotonic() - t0, 1),
                                                                      "size": mode["size"]}
            model_dir, report["training"] = train_until(deadline, data, work, start, args, mode)
            report["model"] = export(model_dir, out)  # before evaluating: a late failure still returns the model
            write_report(out, report, t_start)
            t0 = time.monotonic()
            report["evaluation"] = evaluate_split(model_dir, data, mode["device"])
            report["evaluation"]["seconds"] = round(time.monotonic() - t0, 1)
            write_report(out, report, t_start)  # the one-pass figures are kept if the thorough pass runs out of time
            t0 = time.monotonic()
            report["evaluation_thorough"] = evaluate_split(model_dir, data, mode["device"], thorough=True)
            report["evaluation_thorough"]["seconds"] = round(time.monotonic() - t0, 1)
    except FossilSegmentError as exc:
        log.error("error: %s", exc)
        return 2
    write_report(out, report, t_start)
    dice = [report[k]["pooled"][split]["Bone"]["mean_dice"]
            for k in ("evaluation", "evaluation_thorough") for split in ("test_seen", "test_heldout")]
    log.info("done in %.0f s: Bone mean Dice test_seen %.4f, test_heldout %.4f (thorough %.4f, %.4f); %s",
             report["wall_seconds"], *dice, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
