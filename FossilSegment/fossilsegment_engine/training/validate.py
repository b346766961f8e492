"""In-loop validation: whole axial slices of the validation specimens, the paper's slice-wise mean Dice."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..inference.context import context_slices
from ..inference.device import autocast
from ..inference.tiling import predict_tiled
from .data import Specimen
from .metrics import ClassScores


def validation_slices(n_slices: int, max_slices: int | None) -> np.ndarray:
    """All slices, or ``max_slices`` evenly spaced ones."""
    if not max_slices or n_slices <= max_slices:
        return np.arange(n_slices)
    return np.unique(np.linspace(0, n_slices - 1, max_slices).round().astype(np.int64))


@torch.inference_mode()
def predict_slices(
    model: nn.Module, image: np.ndarray, ks: np.ndarray, n_context: int, multiple: int,
    device: torch.device, dtype: torch.dtype | None, batch_size: int = 4,
) -> np.ndarray:
    """Argmax labels ``(len(ks), H, W)`` uint8 of whole slices ``ks`` of a normalised volume."""
    out = []
    for start in range(0, len(ks), batch_size):
        x = torch.from_numpy(context_slices(image, ks[start:start + batch_size], n_context).astype(np.float32))

        def forward(t: torch.Tensor) -> torch.Tensor:
            with autocast(device, dtype):
                return model(t)

        logits = predict_tiled(forward, x.to(device), tile_size=None, multiple=multiple, output_device="cpu")
        out.append(logits.argmax(1).to(torch.uint8).numpy())
    return np.concatenate(out) if out else np.zeros((0, *image.shape[1:]), dtype=np.uint8)


def validate(
    model: nn.Module, specs: Sequence[Specimen], classes: Sequence[dict[str, Any]], n_context: int, multiple: int,
    device: torch.device, dtype: torch.dtype | None, max_slices: int | None = 64,
) -> dict[str, Any]:
    """``{"score": mean of the foreground classes' slice-wise mean Dice, "classes": {name: summary}}``."""
    was_training = model.training
    model.eval()
    pooled: dict[str, ClassScores] = {}
    try:
        for spec in specs:
            ks = validation_slices(spec.image.shape[0], max_slices)
            pred = predict_slices(model, spec.image, ks, n_context, multiple, device, dtype)
            truth = spec.labels.array[ks]
            for c in classes:
                if int(c["value"]) == 0:
                    continue
                pooled.setdefault(c["name"], ClassScores()).add(truth, pred, int(c["value"]))
    finally:
        model.train(was_training)
    summaries = {name: s.summary() for name, s in pooled.items()}
    dices = [s["mean_dice"] for s in summaries.values() if s["mean_dice"] is not None]
    return {"score": float(np.mean(dices)) if dices else 0.0, "classes": summaries}
