"""Fine-tune a segmentation model on a few annotated axial slices of one volume, within a time budget.

The parent model (default, bundled name, folder or in-memory module) is copied; its BatchNorm statistics are
first measured on this scan (uniform crops of evenly spaced slices of the whole volume, as inference sees it), then
frozen (a handful of annotated slices gives poor batch statistics), and every weight is trained with AdamW on
random augmented crops (:mod:`..training.augment`, crops centred on foreground 2 times in 3) under Dice +
cross-entropy, on every annotated slice, for ``max_steps`` steps or until ``max_minutes`` (whichever comes
first). Why no held-back slice and early stopping: docs/benchmarks/finetune.md.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..atomic import check_can_write
from ..errors import InputError
from ..inference.context import context_slices
from ..inference.device import autocast, choose_device, resolve_precision
from ..inference.normalize import apply_intensity_range, volume_intensity_range
from ..models import ModelConfig, load_model, model_hash, resolve_model_dir, save_model
from ..models.batchnorm import recompute_batchnorm
from ..progress import CancelToken, ProgressCallback, check_cancelled
from ..training.augment import AugmentOptions, augment_batch
from ..training.losses import DiceCELoss
from ..volume import Volume
from .annotations import check_annotations

log = logging.getLogger(__name__)

#: progress is reported as ``(done, PROGRESS_TOTAL)``: the larger of the step and the time fraction used
PROGRESS_TOTAL = 1000
#: crops of the scan (one per evenly spaced slice) and crops per batch that the BatchNorm statistics are measured on
SCAN_CROPS, SCAN_BATCH = 64, 8

ModelSpec = Any  # None | bundled name | folder | (module, ModelConfig)


@dataclass
class FinetuneOptions:
    """Knobs of a fine-tuning run (defaults: ≤ 3 minutes on 2 CPU cores for 5 slices of ~350×350).

    ``max_steps``, and why every annotated slice trains (no held-back slice): docs/benchmarks/finetune.md.
    """

    max_minutes: float = 3.0
    max_steps: int = 400
    batch_size: int = 4
    crop: int = 192
    lr: float = 3e-4
    weight_decay: float = 1e-4
    foreground_crop_prob: float = 0.67
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        if not self.max_minutes > 0:
            raise InputError(f"max_minutes must be positive, got {self.max_minutes}")
        for name in ("max_steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.crop < 32 or self.crop % 32:
            raise InputError(f"crop must be a positive multiple of 32, got {self.crop}")


@dataclass
class FinetuneResult:
    """The fine-tuned network (eval mode, CPU), its config (provenance filled in) and a run report."""

    module: nn.Module
    config: ModelConfig
    report: dict[str, Any] = field(default_factory=dict)


def _load_parent(model: ModelSpec) -> tuple[nn.Module, ModelConfig, dict[str, Any]]:
    """A private copy of the parent network, its config and what provenance says about it."""
    if isinstance(model, tuple):
        module, config = model
        module = copy.deepcopy(module).to("cpu")
        return module, config, {"name": config.name, "weights_sha256": config.weights_sha256}
    folder = resolve_model_dir(model)
    module, config = load_model(folder, device="cpu")
    sha = config.weights_sha256 or model_hash(folder)
    return module, config, {"name": config.name, "weights_sha256": sha, "folder": str(folder)}


def _freeze_batchnorm(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _scan_batches(array: np.ndarray, lo: float, hi: float, n_context: int, crop: int, device: torch.device,
                  seed: int, cancel: CancelToken | None) -> Iterator[torch.Tensor]:
    """Normalised network inputs ``(≤ SCAN_BATCH, n_context, crop, crop)``: one uniformly placed crop from each of
    up to ``SCAN_CROPS`` evenly spaced axial slices of ``array`` (smaller slices are padded like the annotations).
    Read one slice stack at a time, so a large (memory-mapped) scan costs a few MB here."""
    rng = np.random.default_rng(seed)
    ks = np.unique(np.linspace(0, array.shape[0] - 1, min(SCAN_CROPS, array.shape[0])).round().astype(int))
    h, w = array.shape[1:]
    ch, cw = min(crop, h), min(crop, w)
    for b0 in range(0, len(ks), SCAN_BATCH):
        check_cancelled(cancel)
        crops = []
        for k in ks[b0:b0 + SCAN_BATCH]:
            top, left = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
            stack = context_slices(array, [k], n_context)[0, :, top:top + ch, left:left + cw]
            crops.append(_pad_to(apply_intensity_range(stack, lo, hi), crop))
        yield torch.from_numpy(np.stack(crops)).to(device).contiguous(memory_format=torch.channels_last)


def _pad_to(a: np.ndarray, size: int) -> np.ndarray:
    """Pad the last two axes up to at least ``size`` (reflect images / zero labels via ``mode``)."""
    ph, pw = max(0, size - a.shape[-2]), max(0, size - a.shape[-1])
    if not ph and not pw:
        return a
    pad = [(0, 0)] * (a.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(a, pad, mode="edge" if np.issubdtype(a.dtype, np.floating) else "constant")


def _sample(x: np.ndarray, y: np.ndarray, n: int, crop: int, fg_prob: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random crops (N, C, crop, crop) / (N, crop, crop) from slices ``x`` (S, C, H, W), ``y`` (S, H, W)."""
    xs, ys = [], []
    h, w = y.shape[-2:]
    for _ in range(n):
        s = int(rng.integers(len(y)))
        fg = np.argwhere(y[s] > 0)
        if len(fg) and rng.random() < fg_prob:
            cy, cx = fg[int(rng.integers(len(fg)))]
            top = int(np.clip(cy - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, h - crop))
            left = int(np.clip(cx - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, w - crop))
        else:
            top, left = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        xs.append(x[s, :, top:top + crop, left:left + crop])
        ys.append(y[s, top:top + crop, left:left + crop])
    return np.stack(xs), np.stack(ys)


class _Loop:
    """AdamW steps on random augmented crops of annotated slices, with the time budget and progress."""

    def __init__(self, module: nn.Module, opts: FinetuneOptions, device: torch.device, dtype: torch.dtype | None,
                 t_start: float, budget: float, progress: ProgressCallback | None, cancel: CancelToken | None) -> None:
        self.module, self.opts, self.device, self.dtype = module, opts, device, dtype
        self.t_start, self.budget, self.progress, self.cancel = t_start, budget, progress, cancel
        self.loss_fn, self.aug = DiceCELoss(), AugmentOptions()
        self.step_seconds, self.n = 0.0, 0
        torch.manual_seed(opts.seed)
        self.rng = np.random.default_rng(opts.seed)
        self.gen = torch.Generator().manual_seed(opts.seed)
        self.optimizer = torch.optim.AdamW(module.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)

    def out_of_time(self) -> bool:
        """Whether one more step would overrun the budget."""
        return time.monotonic() - self.t_start + self.step_seconds > self.budget

    def step(self, x: np.ndarray, y: np.ndarray, crop: int) -> dict[str, Any]:
        check_cancelled(self.cancel)
        t0 = time.monotonic()
        module, opts = self.module, self.opts
        module.train()
        _freeze_batchnorm(module)
        xb, yb = _sample(x, y, opts.batch_size, crop, opts.foreground_crop_prob, self.rng)
        xb_t, yb_t = augment_batch(torch.from_numpy(xb), torch.from_numpy(yb), self.gen, self.aug)
        xb_t = xb_t.to(self.device).contiguous(memory_format=torch.channels_last)
        for group in self.optimizer.param_groups:  # short linear warm-up
            group["lr"] = opts.lr * min(1.0, (self.n + 1) / 10)
        with autocast(self.device, self.dtype):
            logits = module(xb_t)
        loss = self.loss_fn(logits, yb_t.to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.n += 1
        took = time.monotonic() - t0
        self.step_seconds = took if self.n == 1 else 0.7 * self.step_seconds + 0.3 * took
        if self.progress is not None:
            done = max(self.n / opts.max_steps, (time.monotonic() - self.t_start) / self.budget)
            self.progress(min(PROGRESS_TOTAL, int(done * PROGRESS_TOTAL)), PROGRESS_TOTAL)
        return {"step": self.n, "loss": round(float(loss.detach()), 5)}


def finetune_in_memory(
    volume: Volume, labels: Volume, slices: Sequence[int], model: ModelSpec = None,
    options: FinetuneOptions | None = None, progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None, name: Optional[str] = None,
) -> FinetuneResult:
    """Fine-tune ``model`` on ``labels[slices]`` of ``volume``; returns the new network, config and report.

    ``model``: None (the default model), a bundled name, a model folder, or ``(module, config)`` (copied,
    never changed). Bad input → :class:`InputError`; cancel → :class:`Cancelled`.
    """
    opts = options or FinetuneOptions()
    t_start = time.monotonic()
    module, parent_cfg, parent = _load_parent(model)
    ks = check_annotations(volume, labels, slices, parent_cfg.n_classes, parent_cfg.class_names)
    device = choose_device(opts.device)
    dtype = resolve_precision(opts.precision, device)

    lo, hi = volume_intensity_range(volume.array, parent_cfg.normalization)
    x = apply_intensity_range(context_slices(volume.array, ks, parent_cfg.context_slices), lo, hi)
    y = labels.array[ks].astype(np.int64)
    crop = min(opts.crop, max(32, (min(y.shape[-2:]) // 32) * 32)) if min(y.shape[-2:]) >= 32 else 32
    x, y = _pad_to(x, crop), _pad_to(y, crop)

    module = module.to(device=device, memory_format=torch.channels_last)
    recompute_batchnorm(module, _scan_batches(volume.array, lo, hi, parent_cfg.context_slices, crop, device,
                                              opts.seed, cancel))
    history: list[dict[str, Any]] = []
    loop = _Loop(module, opts, device, dtype, t_start, opts.max_minutes * 60.0, progress, cancel)
    stop_reason = "max_steps"
    while loop.n < opts.max_steps:
        if loop.n and loop.out_of_time():  # at least one step: a "fine-tuned" network is never the parent
            stop_reason = "time budget"
            break
        history.append(loop.step(x, y, crop))
    check_cancelled(cancel)
    module = module.to("cpu", memory_format=torch.contiguous_format).eval()
    seconds = time.monotonic() - t_start
    report = {"slices": ks, "steps": loop.n, "stopped_by": stop_reason, "seconds": round(seconds, 1),
              "device": str(device), "options": asdict(opts)}
    log.info("fine-tuned %s on slices %s: %d steps in %.0f s (%s)", parent["name"], ks, loop.n, seconds, stop_reason)
    provenance = {
        "finetuned_from": parent,
        "finetune": {**{k: v for k, v in report.items() if k != "options"}, "options": report["options"],
                     "input": str(volume.meta.get("source_path", volume.meta.get("name", ""))),
                     "input_notes": list(volume.meta.get("notes", []))},
        "history": history[-50:],
    }
    config = ModelConfig.from_dict({**parent_cfg.to_dict(), "name": name or f"{parent_cfg.name}-finetuned",
                                    "provenance": provenance, "weights_sha256": None})
    return FinetuneResult(module, config, report)


def model_card(result: FinetuneResult) -> str:
    """A short MODEL_CARD.md for a fine-tuned model folder."""
    r, parent = result.report, result.config.provenance["finetuned_from"]
    lines = [
        f"# {result.config.name}", "",
        f"Fine-tuned by FossilSegment from **{parent['name']}** (weights SHA-256 `{parent['weights_sha256']}`) "
        f"on axial slices {r['slices']} of `{result.config.provenance['finetune']['input'] or 'one volume'}`.", "",
        f"- {r['steps']} steps, {r['seconds']} s on {r['device']}, stopped by {r['stopped_by']}",
    ]
    lines += ["", "Meant for this specimen (and scans very like it); check its results before trusting it elsewhere.", ""]
    return "\n".join(lines)


def finetune(
    volume: Volume, labels: Volume, slices: Sequence[int], out_dir: Path | str, model: ModelSpec = None,
    max_minutes: float = 3.0, progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
    seed: int = 0, device: str = "auto", force: bool = False, name: Optional[str] = None,
    options: FinetuneOptions | None = None,
) -> Path:
    """Fine-tune (see :func:`finetune_in_memory`) and save the result as a model folder ``out_dir``.

    ``config.provenance`` names the parent model (name + weights SHA-256) and the slices used. An existing
    ``out_dir`` is refused before training unless ``force``. Returns ``out_dir``.
    """
    out_dir = check_can_write(out_dir, force)
    opts = options or FinetuneOptions(max_minutes=max_minutes, seed=seed, device=device)
    result = finetune_in_memory(volume, labels, slices, model, opts, progress, cancel,
                                name=name or Path(out_dir).name)
    check_cancelled(cancel)
    return save_model(result.module, result.config, out_dir, force=force,
                      extra_files={"MODEL_CARD.md": model_card(result)})
