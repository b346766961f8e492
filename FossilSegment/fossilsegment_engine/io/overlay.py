"""A quick-look PNG: evenly spaced axial slices (and a coronal + sagittal row) with segments tinted and outlined.

Grey levels are windowed to the 1st–99th percentile of the volume; each panel is resampled to square
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
_TINT = 0.35  # opacity of the fill colour inside a segment
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


def _render(grey: np.ndarray, labels: np.ndarray, colors: dict[int, np.ndarray]) -> np.ndarray:
    """RGB uint8 of a windowed grey panel (0..1) with each label tinted and its outline drawn."""
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for value, color in colors.items():
        mask = labels == value
        if not mask.any():
            continue
        rgb[mask] = (1 - _TINT) * rgb[mask] + _TINT * color
        edge = mask & ~ndimage.binary_erosion(mask, border_value=1)
        rgb[edge] = color
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def _panels(volume: Volume, labelmap: Volume, n_slices: int, views: bool) -> list[list[tuple[np.ndarray, np.ndarray, tuple[float, float]]]]:
    """Rows of (grey slice, label slice, (row mm, col mm)) panels, axial first."""
    a, lab = volume.array, labelmap.array
    si, sj, sk = volume.spacing
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
    volume: Volume, labelmap: Volume, classes: Sequence[dict], n_slices: int = 6, views: bool = True, panel_size: int = 256
) -> np.ndarray:
    """The montage as an RGB uint8 array (rows, cols, 3)."""
    if volume.shape != labelmap.shape:
        raise InputError(f"overlay: labelmap shape {labelmap.shape} differs from volume shape {volume.shape}")
    lo, hi = grey_window(volume.array)
    colors = {s["value"]: np.asarray(s["color"]) for s in segment_specs(labelmap, classes)}
    rows = []
    for row in _panels(volume, labelmap, n_slices, views):
        tiles = []
        for grey, labels, pixel_mm in row:
            g = _fit(((grey.astype(np.float32) - lo) / (hi - lo)).clip(0, 1), pixel_mm, panel_size, order=1)
            lab = _fit(labels, pixel_mm, panel_size, order=0)
            tiles.append(_render(g, lab, colors))
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
) -> Path:
    """Write the montage PNG atomically: ``n_slices`` axial slices, then (``views``) coronal and sagittal."""
    path = Path(path)
    check_can_write(path, force)
    image = sitk.GetImageFromArray(render_overlay(volume, labelmap, classes, n_slices, views, panel_size), isVector=True)
    with atomic_path(path, force) as tmp:
        sitk.WriteImage(image, str(tmp))
    return path
