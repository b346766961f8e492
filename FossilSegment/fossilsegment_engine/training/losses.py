"""Loss: soft Dice over the foreground classes (batch-pooled) + cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 − mean soft Dice of the non-background classes, pooled over the batch (fp32)."""
    n_classes = logits.shape[1]
    prob = logits.float().softmax(dim=1)[:, 1:]
    onehot = F.one_hot(target, n_classes).permute(0, 3, 1, 2).float()[:, 1:]
    dims = (0, 2, 3)
    inter = (prob * onehot).sum(dims)
    denom = prob.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2 * inter + smooth) / (denom + smooth)).mean()


class DiceCELoss(nn.Module):
    """``dice_weight · soft Dice loss + ce_weight · cross-entropy`` on logits (N, C, H, W), targets (N, H, W)."""

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        self.dice_weight, self.ce_weight = dice_weight, ce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), target)
        return self.dice_weight * soft_dice_loss(logits, target) + self.ce_weight * ce
