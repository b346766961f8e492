"""Per-voxel features of axial slabs for the few-shot classifier: image texture and the network's probabilities.

- image: scikit-image's multiscale intensity, edge and texture features of each normalised axial slice
  (Gaussian scales 1–8 pixels), the features ilastik-style pixel classifiers use;
- network: the (fine-tuned) network's class probabilities, from the same tiled 2.5D inference as ``segment``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from skimage.feature import multiscale_basic_features
from torch import nn

from ..inference.predictor import CPU_BATCH, Predictor
from ..models import ModelConfig

SIGMA_MIN, SIGMA_MAX, NUM_SIGMA = 1.0, 8.0, 3


def image_features(normalised: np.ndarray) -> np.ndarray:
    """(n, J, I, F) float32 multiscale features of each slice of a normalised (n, J, I) slab."""
    return np.stack([multiscale_basic_features(s, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, num_sigma=NUM_SIGMA)
                     for s in normalised]).astype(np.float32, copy=False)


class NetworkProbabilities:
    """Class probabilities (n, J, I, n_classes) of a network for slabs of one volume (normalised once), computed
    as ``segment`` computes them: the :class:`~..inference.predictor.Predictor`'s slice inferer and network
    (inference precision, channels_last), so a slice costs what it costs ``segment``."""

    def __init__(self, net: nn.Module, config: ModelConfig, device: torch.device, precision: str,
                 intensity_range: tuple[float, float]) -> None:
        predictor = Predictor.from_module(net, config, device, precision=precision, backend="eager")
        self.config, self.device = config, predictor.device
        self.inferer, self.network = predictor.inferer, predictor.network
        self.lo, self.hi = intensity_range

    @torch.inference_mode()
    def __call__(self, array: Any, k0: int, k1: int) -> np.ndarray:
        # as segment reads them: whole slices where one fits in a batch of tiles, so many slices a call
        inferer, per_call = self.inferer.fit_to_slices(array.shape[1], array.shape[2], max(k1 - k0, CPU_BATCH))
        out = np.empty((k1 - k0, array.shape[1], array.shape[2], self.config.n_classes), np.float32)
        for start in range(k0, k1, per_call):
            stop = min(start + per_call, k1)
            logits = inferer(array, range(start, stop), self.lo, self.hi, self.network, self.device)
            out[start - k0:stop - k0] = torch.softmax(logits.float(), dim=1).permute(0, 2, 3, 1).cpu().numpy()
        return out
