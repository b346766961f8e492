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

from ..inference.context import context_slices
from ..inference.device import autocast
from ..inference.normalize import apply_intensity_range
from ..inference.tiling import predict_tiled
from ..models import ModelConfig, required_multiple

SIGMA_MIN, SIGMA_MAX, NUM_SIGMA = 1.0, 8.0, 3


def image_features(normalised: np.ndarray) -> np.ndarray:
    """(n, J, I, F) float32 multiscale features of each slice of a normalised (n, J, I) slab."""
    return np.stack([multiscale_basic_features(s, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, num_sigma=NUM_SIGMA)
                     for s in normalised]).astype(np.float32, copy=False)


class NetworkProbabilities:
    """Class probabilities (n, J, I, n_classes) of a network for slabs of one volume (normalised once)."""

    def __init__(self, net: nn.Module, config: ModelConfig, device: torch.device, dtype: torch.dtype | None,
                 intensity_range: tuple[float, float]) -> None:
        self.net, self.config, self.device, self.dtype = net.eval(), config, device, dtype
        self.lo, self.hi = intensity_range
        self.multiple = required_multiple(config)

    @torch.inference_mode()
    def __call__(self, array: Any, k0: int, k1: int) -> np.ndarray:
        x = apply_intensity_range(context_slices(array, range(k0, k1), self.config.context_slices), self.lo, self.hi)

        def forward(t: torch.Tensor) -> torch.Tensor:
            with autocast(self.device, self.dtype):
                return self.net(t.contiguous(memory_format=torch.channels_last))

        logits = predict_tiled(forward, torch.from_numpy(x).to(self.device), self.config.tile_size,
                               self.config.tile_overlap, self.multiple, output_device="cpu")
        return torch.softmax(logits.float(), dim=1).permute(0, 2, 3, 1).numpy()
