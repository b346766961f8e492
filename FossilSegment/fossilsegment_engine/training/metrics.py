"""Segmentation metrics, per class.

- The paper's figures (Yu et al. 2022): ``mean_dice`` / ``mean_iou`` = mean over axial slices of the
  per-slice Dice/IoU, counting only slices where the truth *or* the prediction has the class (slices
  empty in both are excluded: they carry no information and would inflate the mean with 1.0).
- Volumetric ``volume_dice`` / ``volume_iou`` over all voxels.
Scores for several volumes are pooled with :class:`ClassScores` (slices pooled, voxel counts summed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np


def slice_scores(truth: np.ndarray, pred: np.ndarray, value: int) -> tuple[np.ndarray, np.ndarray]:
    """(dice, iou) per axial slice ``[k]`` where truth or prediction contains ``value``."""
    if truth.shape != pred.shape:
        raise ValueError(f"truth shape {truth.shape} differs from prediction shape {pred.shape}")
    t = (truth == value).reshape(truth.shape[0], -1)
    p = (pred == value).reshape(pred.shape[0], -1)
    inter = np.count_nonzero(t & p, axis=1).astype(np.float64)
    st, sp = np.count_nonzero(t, axis=1), np.count_nonzero(p, axis=1)
    keep = (st + sp) > 0
    inter, st, sp = inter[keep], st[keep], sp[keep]
    dice = 2 * inter / (st + sp)
    iou = inter / (st + sp - inter)
    return dice, iou


def volume_counts(truth: np.ndarray, pred: np.ndarray, value: int) -> tuple[int, int, int]:
    """(intersection, truth voxels, predicted voxels) of ``value``."""
    t, p = truth == value, pred == value
    return int(np.count_nonzero(t & p)), int(np.count_nonzero(t)), int(np.count_nonzero(p))


@dataclass
class ClassScores:
    """Accumulates one class's slice scores and voxel counts over one or more volumes."""

    dice: list[np.ndarray] = field(default_factory=list)
    iou: list[np.ndarray] = field(default_factory=list)
    inter: int = 0
    truth: int = 0
    pred: int = 0

    def add(self, truth: np.ndarray, pred: np.ndarray, value: int) -> "ClassScores":
        d, i = slice_scores(truth, pred, value)
        self.dice.append(d)
        self.iou.append(i)
        c = volume_counts(truth, pred, value)
        self.inter, self.truth, self.pred = self.inter + c[0], self.truth + c[1], self.pred + c[2]
        return self

    def merge(self, other: "ClassScores") -> "ClassScores":
        out = ClassScores(self.dice + other.dice, self.iou + other.iou)
        out.inter, out.truth, out.pred = self.inter + other.inter, self.truth + other.truth, self.pred + other.pred
        return out

    def summary(self) -> dict[str, Any]:
        """``mean_dice, mean_iou, volume_dice, volume_iou, slices, truth_voxels, predicted_voxels`` (None when undefined)."""
        d = np.concatenate(self.dice) if self.dice else np.zeros(0)
        i = np.concatenate(self.iou) if self.iou else np.zeros(0)
        union = self.truth + self.pred - self.inter
        return {
            "mean_dice": float(d.mean()) if d.size else None,
            "mean_iou": float(i.mean()) if i.size else None,
            "volume_dice": 2 * self.inter / (self.truth + self.pred) if self.truth + self.pred else None,
            "volume_iou": self.inter / union if union else None,
            "slices": int(d.size),
            "truth_voxels": self.truth,
            "predicted_voxels": self.pred,
        }


def class_scores(truth: np.ndarray, pred: np.ndarray, classes: Sequence[Mapping[str, Any]]) -> dict[str, ClassScores]:
    """``{class name: ClassScores}`` for every non-background class, plus ``"Fossil"`` (any non-background)."""
    out = {c["name"]: ClassScores().add(truth, pred, int(c["value"])) for c in classes if int(c["value"]) != 0}
    if len(out) > 1:
        out["Fossil"] = ClassScores().add((truth > 0).astype(np.uint8), (pred > 0).astype(np.uint8), 1)
    return out


def segmentation_metrics(truth: np.ndarray, pred: np.ndarray, classes: Sequence[Mapping[str, Any]]) -> dict[str, dict]:
    """``{class name: summary dict}`` for one volume (see :meth:`ClassScores.summary`)."""
    return {name: s.summary() for name, s in class_scores(truth, pred, classes).items()}
