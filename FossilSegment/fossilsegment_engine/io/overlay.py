"""A quick-look PNG: evenly spaced axial slices (and a coronal + sagittal row) with segments filled and outlined.

Each segment is a semi-transparent fill in a vivid display colour (:data:`PALETTE`, by label value: the
segments' own colours, e.g. bone's off-white, vanish on grey CT) with a dark outline of the same hue. With a
truth labelmap, its foreground is outlined in :data:`TRUTH_COLOR` (cyan) on top: orange fill = prediction,
cyan line = truth. Grey levels are windowed to the 1st–99th percentile of the volume; each panel is resampled to square
millimetre pixels and fitted into ``panel_size`` pixels. Written with SimpleITK (no matplotlib).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..atomic import atomic_path, check_can_write
from ..errors import InputError
from ..volume import Volume
from .segmentation_io import segment_specs

_GAP = 4  # pixels between panels
_ALPHA = 0.55  # opacity of the fill colour inside a segment
_OUTLINE_SHADE = 0.45  # outline = fill colour × this (dark, so it reads on the fill and on bright bone)
PALETTE = {1: (1.0, 0.45, 0.0), 2: (1.0, 0.0, 0.85), 3: (0.2, 0.9, 0.1), 4: (0.25, 0.45, 1.0), 5: (1.0, 0.9, 0.0)}
TRUTH_COLOR = (0.0, 1.0, 1.0)
_SAMPLE = 1_000_000  # voxels sampled for the grey window


def grey_window(array: np.ndarray) -> tuple[float, float]:
    """1st and 99th percentiles of (a strided sample of) the volume."""
    step = max(1, int(array.size // _SAMPLE))
    sample = array.reshape(-1)[::step]
    lo, hi = np.percentile(sample, [1, 99])
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _fit(panel: np.ndarray, pixel_mm: tuple[float, float], size: int, order: int) -> np.ndarray:
    """Resample a 2D panel (rows, cols) so pixels are square in mm and the longer side is ``size``."""
    height_mm, width_mm = panel.shape[0] * pixel_mm[0], panel.shape[1] * pixel_mm[1]
    scale = size / max(height_mm, width_mm)
    out_shape = (max(1, round(height_mm * scale)), max(1, round(width_mm * scale)))
    zoom = (out_shape[0] / panel.shape[0], out_shape[1] / panel.shape[1])
    return ndimage.zoom(panel, zoom, order=order, mode="nearest", grid_mode=True)


def display_color(value: int) -> np.ndarray:
    """The overlay colour of label ``value`` (:data:`PALETTE`, cycling for values beyond it)."""
    return np.asarray(PALETTE[(value - 1) % len(PALETTE) + 1], dtype=np.float32)


def _outline(mask: np.ndarray) -> np.ndarray:
    """The mask's inner boundary pixels."""
    return mask & ~ndimage.binary_erosion(mask, border_value=1)


def _render(grey: np.ndarray, labels: np.ndarray, values: Sequence[int], truth: np.ndarray | None) -> np.ndarray:
    """RGB uint8 of a windowed grey panel (0..1): each label filled and outlined, then the truth's outline."""
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for value in values:
        mask = labels == value
        if not mask.any():
            continue
        color = display_color(value)
        rgb[mask] = (1 - _ALPHA) * rgb[mask] + _ALPHA * color
        rgb[_outline(mask)] = _OUTLINE_SHADE * color
    if truth is not None:
        rgb[_outline(truth > 0)] = TRUTH_COLOR
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def _panels(a: np.ndarray, lab: np.ndarray, spacing: tuple[float, float, float], n_slices: int,
            views: bool) -> list[list[tuple[np.ndarray, np.ndarray, tuple[float, float]]]]:
    """Rows of (grey slice, label slice, (row mm, col mm)) panels, axial first."""
    si, sj, sk = spacing
    n_k = a.shape[0]
    ks = np.unique(np.linspace(0, n_k - 1, n_slices + 2)[1:-1].round().astype(int)) if n_slices > 0 else []
    rows = [[(a[k], lab[k], (sj, si)) for k in ks]]
    if views:
        j, i = a.shape[1] // 2, a.shape[2] // 2
        rows.append([
            (a[::-1, j, :], lab[::-1, j, :], (sk, si)),  # coronal, superior (high k) up
            (a[::-1, :, i], lab[::-1, :, i], (sk, sj)),  # sagittal
        ])
    return [r for r in rows if r]


def render_overlay(
    volume: Volume, labelmap: Volume, classes: Sequence[dict], n_slices: int = 6, views: bool = True,
    panel_size: int = 256, truth: Volume | None = None,
) -> np.ndarray:
    """The montage as an RGB uint8 array (rows, cols, 3); ``truth`` (a labelmap) adds its foreground outline."""
    for name, other in (("labelmap", labelmap), ("truth", truth)):
        if other is not None and volume.shape != other.shape:
            raise InputError(f"overlay: {name} shape {other.shape} differs from volume shape {volume.shape}")
    lo, hi = grey_window(volume.array)
    values = [s["value"] for s in segment_specs(labelmap, classes)]
    truth_rows = _panels(volume.array, truth.array, volume.spacing, n_slices, views) if truth is not None else None
    rows = []
    for r, row in enumerate(_panels(volume.array, labelmap.array, volume.spacing, n_slices, views)):
        tiles = []
        for p, (grey, labels, pixel_mm) in enumerate(row):
            g = _fit(((grey.astype(np.float32) - lo) / (hi - lo)).clip(0, 1), pixel_mm, panel_size, order=1)
            lab = _fit(labels, pixel_mm, panel_size, order=0)
            ref = _fit(truth_rows[r][p][1], pixel_mm, panel_size, order=0) if truth_rows is not None else None
            tiles.append(_render(g, lab, values, ref))
        rows.append(tiles)
    height = sum(max(t.shape[0] for t in r) for r in rows) + _GAP * (len(rows) + 1)
    width = max(sum(t.shape[1] for t in r) + _GAP * (len(r) + 1) for r in rows)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    y = _GAP
    for r in rows:
        x = _GAP
        for t in r:
            canvas[y : y + t.shape[0], x : x + t.shape[1]] = t
            x += t.shape[1] + _GAP
        y += max(t.shape[0] for t in r) + _GAP
    return canvas


def write_overlay_png(
    volume: Volume,
    labelmap: Volume,
    path: Path | str,
    classes: Sequence[dict],
    n_slices: int = 6,
    force: bool = False,
    views: bool = True,
    panel_size: int = 256,
    truth: Volume | None = None,
) -> Path:
    """Write the montage PNG atomically: ``n_slices`` axial slices, then (``views``) coronal and sagittal.

    ``truth``: a reference labelmap whose foreground is outlined in cyan over the prediction's fill.
    """
    path = Path(path)
    check_can_write(path, force)
    rgb = render_overlay(volume, labelmap, classes, n_slices, views, panel_size, truth=truth)
    image = sitk.GetImageFromArray(rgb, isVector=True)
    with atomic_path(path, force) as tmp:
        sitk.WriteImage(image, str(tmp))
    return path
