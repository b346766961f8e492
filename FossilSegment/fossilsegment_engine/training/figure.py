"""A comparison figure like Yu et al. 2022 fig. 2: one row per slice, columns scan / truth / methods."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..io.overlay import grey_window

_TINT = 0.4
_GAP = 4
_BAR = 6  # a coloured bar on top of each column tells the methods apart without text rendering
#: high-contrast fills (the classes' own colours, bone-white, vanish on bright CT): Bone orange, Tooth cyan
_PALETTE = {1: np.array([1.0, 0.5, 0.0], dtype=np.float32), 2: np.array([0.0, 0.9, 1.0], dtype=np.float32)}


def _tile(grey: np.ndarray, labels: np.ndarray | None, colors: dict[int, np.ndarray], size: int) -> np.ndarray:
    zoom = size / max(grey.shape)
    g = ndimage.zoom(grey, zoom, order=1, mode="nearest")
    rgb = np.repeat(g[..., None], 3, axis=2)
    if labels is not None:
        lab = ndimage.zoom(labels, zoom, order=0, mode="nearest")
        for value, color in colors.items():
            mask = lab == value
            if mask.any():
                rgb[mask] = (1 - _TINT) * rgb[mask] + _TINT * color
                rgb[mask & ~ndimage.binary_erosion(mask, border_value=1)] = color
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def comparison_figure(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], classes: Sequence[dict[str, Any]], tile_size: int = 192
) -> np.ndarray:
    """RGB canvas. Each row: ``{"image": 2D array, "labels": {column: 2D labels}}``; the first column is the bare scan."""
    colors = {int(c["value"]): _PALETTE.get(int(c["value"]), np.asarray(c["color"], dtype=np.float32))
              for c in classes if int(c["value"]) != 0}
    bar_colors = [np.array(c) for c in ([0.5, 0.5, 0.5], [0.1, 0.8, 0.1], [0.2, 0.4, 1.0], [0.9, 0.2, 0.2],
                                        [0.9, 0.8, 0.1], [0.7, 0.2, 0.8])]
    tiles = []
    for row in rows:
        lo, hi = grey_window(row["image"])
        grey = ((row["image"].astype(np.float32) - lo) / (hi - lo)).clip(0, 1)
        tiles.append([_tile(grey, None if i == 0 else row["labels"][col], colors, tile_size)
                      for i, col in enumerate(columns)])
    th = max(t.shape[0] for r in tiles for t in r)
    tw = max(t.shape[1] for r in tiles for t in r)
    height = _BAR + _GAP + len(tiles) * (th + _GAP) + _GAP
    width = len(columns) * (tw + _GAP) + _GAP
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    for c in range(len(columns)):
        x = _GAP + c * (tw + _GAP)
        canvas[_GAP:_GAP + _BAR, x:x + tw] = (bar_colors[c % len(bar_colors)] * 255).astype(np.uint8)
    for r, row_tiles in enumerate(tiles):
        y = 2 * _GAP + _BAR + r * (th + _GAP)
        for c, t in enumerate(row_tiles):
            x = _GAP + c * (tw + _GAP)
            canvas[y:y + t.shape[0], x:x + t.shape[1]] = t
    return canvas


def write_png(rgb: np.ndarray, path: Path) -> None:
    """Write an RGB uint8 array as PNG (SimpleITK, no matplotlib)."""
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(rgb), isVector=True), str(path))
