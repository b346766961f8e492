"""Sliding-window prediction of 2D slices of any size with overlapping tiles and Gaussian blending.

Along each axis a slice no longer than the tile is padded (reflect, or replicate where reflect cannot
reach) to the model's required multiple and predicted in one piece; a longer axis is covered by tiles
of ``tile_size`` overlapping by at least ``tile_overlap``. Tile logits are weighted by a Gaussian
(sigma = tile/8, as nnU-Net; separable) so tile borders count little, summed and divided by the summed weights.
The model runs on the batch's device; the blended logits are accumulated on ``output_device``.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

Forward = Callable[[torch.Tensor], torch.Tensor]


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is ≥ ``n``."""
    return -(-int(n) // int(multiple)) * int(multiple)


def overlap_pixels(tile: int, tile_overlap: float) -> int:
    """Overlap in pixels: ``tile_overlap`` ≥ 1 is pixels, 0 ≤ ``tile_overlap`` < 1 a fraction of the tile."""
    if tile_overlap < 0:
        raise ValueError(f"tile_overlap must be ≥ 0, got {tile_overlap}")
    px = int(round(tile_overlap * tile)) if tile_overlap < 1 else int(tile_overlap)
    return min(px, tile - 1)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread start offsets of tiles of ``tile`` covering ``length`` with at least ``overlap`` overlap."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    n = math.ceil((length - tile) / stride) + 1
    return sorted({int(round(s)) for s in np.linspace(0, length - tile, n)})


def gaussian_window(
    height: int, width: int, device: torch.device | str = "cpu", sigma_scale: float = 1 / 8
) -> torch.Tensor:
    """``(height, width)`` float32 Gaussian weights, 1 at the centre, > 0 everywhere.

    Separable; each axis factor is kept ≥ 1e-4 (never the product, which would equalise the weights of
    overlapping tiles near the slice corners and let a tile's badly padded border win).
    """

    def axis(n: int) -> torch.Tensor:
        x = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2
        return torch.exp(-0.5 * (x / max(n * sigma_scale, 1e-6)) ** 2).clamp_(min=1e-4)

    return torch.outer(axis(height), axis(width))


def _axis_plan(length: int, tile_size: int | None, multiple: int) -> tuple[int, int, int]:
    """(window length, pad before, pad after) along one axis."""
    tile = round_up(tile_size, multiple) if tile_size else None
    if tile is None or length <= tile:
        window = round_up(length, multiple)
        pad = window - length
        return window, pad // 2, pad - pad // 2
    return tile, 0, 0


def _pad_axis(x: torch.Tensor, before: int, after: int, dim: int, mode: str) -> torch.Tensor:
    if before == 0 and after == 0:
        return x
    if mode == "reflect" and max(before, after) >= x.shape[dim]:
        mode = "replicate"  # reflect cannot pad more than the length - 1
    pad = (before, after, 0, 0) if dim == -1 else (0, 0, before, after)
    return F.pad(x, pad, mode=mode)


def predict_tiled(
    forward: Forward,
    batch: torch.Tensor,
    tile_size: int | None,
    tile_overlap: float = 0,
    multiple: int = 1,
    output_device: torch.device | str | None = None,
    pad_mode: str = "reflect",
) -> torch.Tensor:
    """Blended logits ``(N, n_classes, H, W)`` (float32, on ``output_device``) of ``forward`` over ``batch``.

    ``batch`` is ``(N, C, H, W)`` on the device ``forward`` runs on; ``tile_size`` None/0 → whole slices.
    ``forward`` receives ``(N, C, h, w)`` windows with h, w multiples of ``multiple``.
    """
    if batch.ndim != 4:
        raise ValueError(f"batch must be (N, C, H, W), got shape {tuple(batch.shape)}")
    if pad_mode not in ("reflect", "replicate"):
        raise ValueError(f"pad_mode must be reflect or replicate, got {pad_mode!r}")
    n, _, h, w = batch.shape
    out_dev = torch.device(output_device) if output_device is not None else batch.device
    th, top, bottom = _axis_plan(h, tile_size, multiple)
    tw, left, right = _axis_plan(w, tile_size, multiple)
    x = _pad_axis(_pad_axis(batch, top, bottom, -2, pad_mode), left, right, -1, pad_mode)
    ph, pw = x.shape[-2:]
    ys = tile_starts(ph, th, overlap_pixels(th, tile_overlap))
    xs = tile_starts(pw, tw, overlap_pixels(tw, tile_overlap))
    if len(ys) == 1 and len(xs) == 1:
        logits = forward(x.contiguous(memory_format=torch.channels_last)).float()
        return logits[..., top : top + h, left : left + w].to(out_dev)

    weight = gaussian_window(th, tw, x.device)
    weight_out = weight.to(out_dev)
    weight_sum = torch.zeros((ph, pw), dtype=torch.float32, device=out_dev)
    acc: torch.Tensor | None = None
    for y in ys:
        for x0 in xs:
            tile = x[..., y : y + th, x0 : x0 + tw].contiguous(memory_format=torch.channels_last)
            logits = forward(tile).float().mul_(weight)
            if acc is None:
                acc = torch.zeros((n, logits.shape[1], ph, pw), dtype=torch.float32, device=out_dev)
            acc[..., y : y + th, x0 : x0 + tw] += logits.to(out_dev)
            weight_sum[y : y + th, x0 : x0 + tw] += weight_out
    assert acc is not None
    acc /= weight_sum
    return acc[..., top : top + h, left : left + w]
