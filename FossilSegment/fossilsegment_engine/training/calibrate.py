"""Calibrate how readily a model calls a voxel fossil: one logit offset for the foreground classes.

A network trained with Dice + cross-entropy on crops can end up too cautious (or too eager) on whole
scans. Adding ``b`` to every foreground logit moves its decision boundary: a voxel becomes fossil when
``e^b · max(p_fossil classes) > p_background`` (which fossil class is unchanged). ``calibrate`` predicts
the labelled specimens once, scores a grid of offsets on the saved probabilities (argmax, then the usual
clean-up, then the paper's slice-wise mean Dice of "Fossil" = any foreground class) and returns the best.
``with_foreground_bias`` folds the offset into the segmentation head's bias, so the calibrated model is a
normal model folder: nothing changes at inference time. Use specimens the model was not trained on (its
validation split), never the test split.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import InputError, ModelError
from ..inference.postprocess import PostprocessOptions, postprocess
from ..progress import CancelToken, ProgressCallback, check_cancelled
from .data import find_specimens, read_pair
from .metrics import ClassScores

#: offsets tried by default (natural-log odds; ±2 is a factor of ~7.4)
DEFAULT_OFFSETS: tuple[float, ...] = tuple(round(float(b), 2) for b in np.arange(-2.0, 2.01, 0.25))


@dataclass
class Calibration:
    """The chosen offset, the score of every offset tried, and the specimens used."""

    offset: float
    scores: dict[float, float]
    specimens: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"foreground_logit_offset": self.offset, "specimens": self.specimens,
                "fossil_mean_dice_by_offset": {f"{b:+.2f}": round(s, 5) for b, s in self.scores.items()},
                "metric": "slice-wise mean Dice of any foreground class, after the default clean-up"}


def labels_with_offset(probs: np.ndarray, offset: float) -> np.ndarray:
    """uint8 labels from class probabilities ``(C, …)`` with ``offset`` added to the foreground logits."""
    fg = probs[1:].argmax(axis=0) + 1
    fossil = probs[1:].max(axis=0) * np.float32(np.exp(offset)) > probs[0]
    return np.where(fossil, fg, 0).astype(np.uint8)


def calibrate(segmenter: Any, data_dirs: Sequence[Path | str], names: Sequence[str] | None = None,
              offsets: Sequence[float] = DEFAULT_OFFSETS, cleanup: PostprocessOptions | None = None,
              progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> Calibration:
    """Best foreground logit offset for ``segmenter`` on the specimens of ``data_dirs`` (only ``names``, if given).

    Ties go to the offset nearest 0. Probabilities are predicted once per specimen (no clean-up), each offset
    is then scored on them.
    """
    if not offsets:
        raise InputError("no offsets to try")
    found = find_specimens(data_dirs)
    if names is not None:
        wanted = set(names)
        found = [p for p in found if p.name in wanted]
        missing = wanted - {p.name for p in found}
        if missing:
            raise InputError(f"specimen(s) not found in {', '.join(map(str, data_dirs))}: {', '.join(sorted(missing))}")
    if not found:
        raise InputError("no specimen to calibrate on")
    cleanup = cleanup or PostprocessOptions()
    classes = segmenter.classes
    scores = {float(b): ClassScores() for b in offsets}
    for n, paths in enumerate(found):
        check_cancelled(cancel)
        volume, labels = read_pair(paths, len(classes))
        probs = segmenter.predict_probabilities(volume, cancel=cancel, postprocess=None).probabilities
        stack = np.stack([p.array for p in probs])
        truth = labels.array > 0
        for b, acc in scores.items():
            pred = postprocess(labels_with_offset(stack, b), classes, cleanup, inplace=True, cancel=cancel)
            acc.add(truth, pred > 0, 1)
        if progress is not None:
            progress(n + 1, len(found))
    table = {b: float(acc.summary()["mean_dice"] or 0.0) for b, acc in scores.items()}
    best = max(table, key=lambda b: (round(table[b], 6), -abs(b)))
    return Calibration(best, table, [p.name for p in found])


def with_foreground_bias(module: nn.Module, offset: float) -> nn.Module:
    """A copy of ``module`` whose segmentation head adds ``offset`` to every foreground logit."""
    head = getattr(module, "segmentation_head", None)
    conv = head[0] if isinstance(head, nn.Sequential) and len(head) else None
    if not isinstance(conv, nn.Conv2d) or conv.bias is None:
        raise ModelError("this network has no segmentation head convolution with a bias to calibrate")
    out = copy.deepcopy(module)
    with torch.no_grad():
        out.segmentation_head[0].bias[1:] += float(offset)
    return out
