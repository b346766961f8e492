"""Train a 2D/2.5D segmentation network on specimen folders (single process, or DDP under ``torchrun``).

One call: find and check the data (before writing anything), split by specimen, build the model from a
``ModelConfig``, then for each epoch run ``steps_per_epoch`` AdamW steps on random augmented crops
(warm-up + cosine learning rate, optional bf16 autocast, channels_last) and validate on whole slices of the
validation specimens. The best epoch by validation Dice is the model in ``OUTDIR`` (``model.safetensors``
+ ``config.json``); ``OUTDIR/train_log.jsonl`` has one line per epoch; ``OUTDIR/.train_state/`` the last
state for ``resume``. Under ``torchrun`` each rank draws its own crops (seed, rank, epoch) — the sharded
equivalent of a DistributedSampler for random sampling — gradients are averaged, and only rank 0 writes.
Resuming restarts at the last finished epoch and reproduces the uninterrupted run's draws.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ..errors import InputError, OutputError
from ..inference.device import autocast, choose_device, resolve_precision
from ..models import (DEFAULT_ARCH, ModelConfig, build_model, default_classes, load_config, load_model, model_hash,
                      required_multiple, resolve_model_dir, save_model, unused_parameters)
from ..progress import CancelToken, ProgressCallback, check_cancelled
from . import distributed
from .augment import augment_batch, augment_preset
from .checkpoint import STATE_DIR, install_best, load_state, save_state
from .data import PairReader, find_specimens, load_specimen, read_pair, split_by_specimen
from .losses import DiceCELoss
from .sampling import sample_batch, specimen_weights
from .validate import validate

log = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"
_OWN_FILES = ("model.safetensors", "config.json", LOG_FILE, "MODEL_CARD.md")


@dataclass
class TrainOptions:
    """Everything a training run needs. ``precision``: auto = bf16 on CUDA and on CPUs with native bf16, else
    fp32 (:func:`..inference.device.resolve_precision`); "bf16" forces it.

    The model: ``arch`` (None: the registry's default) with the ``arch_options`` given (the rest: its defaults,
    see :mod:`..models.archs`), ``context_slices`` (None: 1) and a Tooth class if ``teeth``. With ``init_from``
    all of these are the starting model's, and any given must agree with it.
    """

    data_dirs: list[Path]
    out_dir: Path
    arch: Optional[str] = None
    arch_options: dict[str, Any] = field(default_factory=dict)
    context_slices: Optional[int] = None
    teeth: Optional[bool] = None
    name: Optional[str] = None
    epochs: int = 20
    steps_per_epoch: int = 50
    batch_size: int = 8
    crop: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: Optional[int] = None
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    resume: bool = False
    force: bool = False
    val_fraction: float = 0.2
    val_max_slices: Optional[int] = 64
    foreground_crop_prob: float = 0.67
    augment: str = "full"
    threads: Optional[int] = None
    init_from: Optional[str] = None
    select_class: Optional[str] = None  # keep the epoch best on this class's validation Dice (default: all classes)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dirs = [Path(d) for d in self.data_dirs]
        self.out_dir = Path(self.out_dir)
        for name in ("epochs", "steps_per_epoch", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.crop < 32 or self.crop % 32:
            raise InputError(f"crop must be a positive multiple of 32, got {self.crop}")
        if self.augment not in ("full", "light", "none"):
            raise InputError(f"augmentation must be full, light or none, got {self.augment!r}")
        if not self.lr > 0:
            raise InputError(f"learning rate must be positive, got {self.lr}")

    def model_config(self) -> ModelConfig:
        """The ``ModelConfig`` these options describe (bad combinations → ``ModelError``).

        With ``init_from`` the architecture, classes and preprocessing are the starting model's; an
        architecture option that differs from it → ``InputError``.
        """
        name = self.name or self.out_dir.name
        if self.init_from is None:
            return ModelConfig(name=name, arch=self.arch or DEFAULT_ARCH, arch_options=dict(self.arch_options),
                               context_slices=self.context_slices or 1, classes=default_classes(bool(self.teeth)))
        parent = load_config(self.init_from)
        given = {"arch": self.arch, **self.arch_options, "context_slices": self.context_slices, "teeth": self.teeth}
        has = {"arch": parent.arch, **parent.arch_options, "context_slices": parent.context_slices,
               "teeth": "Tooth" in parent.class_names}
        for key, value in given.items():
            if value is not None and (key not in has or value != has[key]):
                raise InputError(f"{key} {value} conflicts with init_from {self.init_from} ({parent.name} has "
                                 f"{has.get(key, f'no {key}')}); leave architecture options out when starting "
                                 "from a model")
        keep = ("arch", "arch_options", "context_slices", "classes", "normalization", "tile_size", "tile_overlap")
        return ModelConfig(name=name, **{k: getattr(parent, k) for k in keep})

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["data_dirs"] = [str(p) for p in self.data_dirs]
        d["out_dir"] = str(self.out_dir)
        return d


@dataclass
class TrainResult:
    out_dir: Path
    model: nn.Module
    best_score: float
    best_epoch: int
    history: list[dict[str, Any]]


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up from 10 % to ``base`` over ``warmup`` steps, then cosine down to 1 % of ``base``."""
    if warmup and step < warmup:
        return base * (0.1 + 0.9 * step / warmup)
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _prepare_out_dir(opts: TrainOptions) -> None:
    out = opts.out_dir
    if opts.resume:
        if not (out / STATE_DIR / "state.json").is_file():
            raise InputError(f"nothing to resume in {out}: no {STATE_DIR}/state.json")
        return
    if out.exists():
        if not opts.force:
            raise OutputError(f"output exists: {out} (use --force to overwrite or --resume to continue)")
        if not out.is_dir():
            raise OutputError(f"output {out} is a file, not a model folder")


def _clear_own_files(out: Path) -> None:
    for name in _OWN_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)


def train(options: TrainOptions, progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
          reader: PairReader = read_pair) -> Path:
    """Train as ``options`` says; returns the model folder (``options.out_dir``).

    ``reader`` reads a specimen folder's (scan, labels); the default reads any format ``read_volume`` reads.
    """
    return train_model(options, progress, cancel, reader).out_dir


def train_model(
    options: TrainOptions, progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
    reader: PairReader = read_pair,
) -> TrainResult:
    """:func:`train`, also returning the final in-memory model, best score and history (used by tests)."""
    opts = options
    device = choose_device(opts.device)
    info = distributed.setup(device.type)
    try:
        return _run(opts, device, info, progress, cancel, reader)
    finally:
        distributed.teardown(info)


def _run(opts: TrainOptions, device: torch.device, info: distributed.DistInfo,
         progress: ProgressCallback | None, cancel: CancelToken | None, reader: PairReader) -> TrainResult:
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    elif info.enabled and device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // info.local_world_size))
    dtype = resolve_precision(opts.precision, device)
    config = opts.model_config()
    if opts.select_class is not None and opts.select_class not in config.class_names[1:]:
        raise InputError(f"--select-class {opts.select_class!r} is not a foreground class of this model "
                         f"({', '.join(config.class_names[1:])})")
    _prepare_out_dir(opts)

    # ---- data: everything is checked before anything is written
    paths = find_specimens(opts.data_dirs)
    train_paths, val_paths = split_by_specimen(paths, opts.val_fraction, opts.seed)
    rng = np.random.default_rng(opts.seed)
    train_specs = [load_specimen(p, config.n_classes, config.normalization, rng, reader) for p in train_paths]
    val_specs = [load_specimen(p, config.n_classes, config.normalization, rng, reader) for p in val_paths]
    val_on = "validation"
    if not val_specs:
        val_specs, val_on = train_specs, "train (only one specimen)"
    weights = specimen_weights(train_specs)

    # ---- model and optimiser (same initial weights on every rank; DDP also broadcasts rank 0's)
    torch.manual_seed(opts.seed)
    model = build_model(config)
    if opts.init_from is not None and not opts.resume:
        model.load_state_dict(load_model(opts.init_from)[0].state_dict(), strict=True)
    model = model.to(device=device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    out, state_dir = opts.out_dir, opts.out_dir / STATE_DIR
    start_epoch, best_score, best_epoch, history = 0, -1.0, 0, []
    commands = [opts.provenance["training_command"]] if "training_command" in opts.provenance else []
    if opts.resume:
        saved = load_state(state_dir, model, optimizer, device)
        before = ModelConfig.from_dict(saved["config"]) if "config" in saved else config
        if (before.arch, before.arch_options) != (config.arch, config.arch_options):
            raise InputError(f"{out} was trained as {before.describe_architecture()}; "
                             "resume with the same architecture options")
        start_epoch, best_score, best_epoch = saved["epoch"], saved["best_score"], saved["best_epoch"]
        history = saved.get("history", [])
        commands = saved.get("commands", []) + commands
    elif info.is_main and out.exists():
        _clear_own_files(out)
    distributed.barrier(info)
    net: nn.Module = model
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=unused_parameters(config))

    loss_fn = DiceCELoss()
    aug = augment_preset(opts.augment)
    total = opts.epochs * opts.steps_per_epoch
    warmup = opts.warmup_steps if opts.warmup_steps is not None else min(100, total // 20)
    multiple = required_multiple(config)
    provenance_base = {
        **opts.provenance,
        **_init_provenance(opts.init_from),
        "training": {
            "options": {k: v for k, v in opts.to_json().items() if k not in ("provenance", "force", "resume")},
            "commands": commands,  # every command of this run, the first one and each --resume
            "world_size": info.world_size,
            "device": str(device),
            "precision": str(dtype) if dtype else "fp32",
            "train_specimens": [s.name for s in train_specs],
            "validation_specimens": [s.name for s in val_specs] if val_on == "validation" else [],
            "validated_on": val_on,
            "train_slices": int(sum(len(s.slices) for s in train_specs)),
        },
    }
    model.train()
    t_start = time.monotonic()
    for epoch in range(start_epoch, opts.epochs):
        rng = np.random.default_rng([opts.seed, info.rank, epoch])
        gen = torch.Generator().manual_seed(opts.seed * 1_000_003 + info.rank * 7919 + epoch)
        losses = []
        t0 = time.monotonic()
        for step in range(opts.steps_per_epoch):
            check_cancelled(cancel)
            global_step = epoch * opts.steps_per_epoch + step
            for group in optimizer.param_groups:
                group["lr"] = lr_at(global_step, total, opts.lr, warmup)
            x_np, y_np = sample_batch(train_specs, weights, opts.batch_size, opts.crop, config.context_slices, rng,
                                      opts.foreground_crop_prob)
            x, y = augment_batch(torch.from_numpy(x_np), torch.from_numpy(y_np), gen, aug)
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            y = y.to(device)
            with autocast(device, dtype):
                logits = net(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if progress is not None and info.is_main:
                progress(global_step + 1, total)
        train_time = time.monotonic() - t0
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": optimizer.param_groups[0]["lr"],
                                  "train_seconds": round(train_time, 2)}
        if info.is_main:
            t1 = time.monotonic()
            val = validate(model, val_specs, config.classes, config.context_slices, multiple, device, dtype,
                           opts.val_max_slices)
            score = val["score"]
            if opts.select_class is not None:
                score = float(val["classes"].get(opts.select_class, {}).get("mean_dice") or 0.0)
            record.update(val_score=score, val=val["classes"], val_seconds=round(time.monotonic() - t1, 2))
            improved = score > best_score
            if improved:
                best_score, best_epoch = score, epoch + 1
            record["best_epoch"] = best_epoch
            history.append(record)
            log.info("epoch %d/%d loss %.4f val Dice %.4f%s", epoch + 1, opts.epochs, record["loss"], score,
                     " (best)" if improved else "")
            if improved:
                cfg = ModelConfig.from_dict({**config.to_dict(), "provenance": _provenance(
                    provenance_base, record, time.monotonic() - t_start)})
                save_model(model, cfg, state_dir / "best", force=True)
                install_best(state_dir / "best", out)
            save_state(state_dir, model, optimizer, {
                "epoch": epoch + 1, "best_score": best_score, "best_epoch": best_epoch, "history": history,
                "config": config.to_dict(), "options": opts.to_json(), "commands": commands,
            })
            with open(out / LOG_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        distributed.barrier(info)
    distributed.broadcast_buffers(model, info)  # BatchNorm statistics: rank 0's everywhere
    best_score = distributed.broadcast_float(best_score, info, torch.device("cpu") if device.type == "cpu" else device)
    return TrainResult(out, model, best_score, best_epoch, history)


def _init_provenance(init_from: Optional[str]) -> dict[str, Any]:
    """``{"initialised_from": {name, weights_sha256, folder}}`` for a run started from a model's weights."""
    if init_from is None:
        return {}
    folder = resolve_model_dir(init_from)
    cfg = load_config(folder)
    return {"initialised_from": {"name": cfg.name, "weights_sha256": cfg.weights_sha256 or model_hash(folder),
                                 "folder": str(folder)}}


def _provenance(base: dict[str, Any], record: dict[str, Any], seconds: float) -> dict[str, Any]:
    p = json.loads(json.dumps(base))
    p["training"].update(
        best_epoch=record["epoch"], validation_mean_dice=record["val_score"],
        validation=record["val"], train_loss=record["loss"], wall_seconds=round(seconds, 1),
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    return p
