"""The stateless slice inferer: normalise → 2.5D context → tiles → logits, for any network callable."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch

from .context import context_slices
from .normalize import apply_intensity_range
from .tiling import predict_tiled, round_up

#: ``x (N, C, h, w) → logits (N, classes, h, w)``
Network = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SliceInferer:
    """How a model reads slices: ``context`` slices per 2.5D stack, tiles of ``tile_size`` (None: whole
    slices) overlapping by ``tile_overlap``, window sides a multiple of ``multiple``."""

    context: int
    tile_size: int | None
    tile_overlap: float
    multiple: int

    @classmethod
    def from_config(cls, config: Any) -> "SliceInferer":
        """The inferer a :class:`~fossilsegment_engine.models.config.ModelConfig` asks for."""
        from ..models.build import required_multiple

        return cls(config.context_slices, config.tile_size, config.tile_overlap, required_multiple(config))

    def fit_to_slices(self, height: int, width: int, batch: int) -> tuple["SliceInferer", int]:
        """How to read slices of ``height`` × ``width`` when a network call may hold ``batch`` slices of tiles:
        a slice larger than a tile is read whole when one fits in ``batch`` tiles' pixels (with as many slices
        a call as fit, at most ``batch``), else tiled as configured; returns the inferer and the slices per call.

        Overlapping tiles compute a 1000² slice about 2.4 times over (9 tiles of 512²) and blend them; one
        whole slice per call costs a third of that on a CPU, with no more pixels in a call than ``batch`` tiles.
        """
        if not self.tile_size:
            return self, batch
        tile = round_up(self.tile_size, self.multiple)
        pixels = round_up(height, self.multiple) * round_up(width, self.multiple)
        if (height <= tile and width <= tile) or pixels > batch * tile * tile:
            return self, batch
        return replace(self, tile_size=None), max(1, min(batch, batch * tile * tile // pixels))

    def stacks(self, source: np.ndarray, ks: range, lo: float, hi: float) -> np.ndarray:
        """Float32 2.5D stacks ``(len(ks), context, H, W)`` of slices ``ks`` of ``source``, normalised to lo..hi."""
        return apply_intensity_range(context_slices(source, ks, self.context), lo, hi)

    def logits(self, x: torch.Tensor, network: Network) -> torch.Tensor:
        """Blended float32 logits ``(N, classes, H, W)`` of stacks ``x`` (on the network's device), tile by tile."""
        return predict_tiled(network, x, self.tile_size, self.tile_overlap, self.multiple, output_device=x.device)

    def __call__(self, source: np.ndarray, ks: range, lo: float, hi: float, network: Network,
                 device: torch.device) -> torch.Tensor:
        """Logits of slices ``ks`` of ``source`` (K, H, W), on ``device``."""
        return self.logits(torch.from_numpy(self.stacks(source, ks, lo, hi)).to(device), network)


def labels_and_probabilities(logits: torch.Tensor, want_probabilities: bool
                             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 argmax labels ``(N, H, W)`` and, if asked, uint8 softmax × 255 ``(N, classes, H, W)``."""
    labels = logits.argmax(dim=1).to(torch.uint8)
    if not want_probabilities:
        return labels, None
    return labels, torch.softmax(logits, dim=1).mul_(255).round_().to(torch.uint8)
