"""Clean-up of a predicted labelmap: drop tiny 3D islands, fill enclosed cavities, keep every real fragment.

Per foreground class, on a boolean mask cropped to the class's bounding box:
- islands: 3D connected components (26-connected, so diagonally touching voxels count as one piece)
  smaller than ``min_island_voxels`` become background. Every component at or above the size is kept —
  fossils are fragmentary, so the largest component is never singled out.
- holes: background voxels enclosed by the class in 3D become that class (``binary_fill_holes`` with a
  26-connected background, so a cavity that reaches the outside even through a diagonal gap stays open).
  Filling is 3D on purpose: per-slice filling would close foramina and medullary canals that are open in
  3D but look enclosed in a single slice. Voxels of other classes are never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
from scipy import ndimage

from ..errors import InputError

_FULL = ndimage.generate_binary_structure(3, 3)  # 26-connectivity
_CHUNK = 32  # slices per chunk when counting component sizes


@dataclass(frozen=True)
class PostprocessOptions:
    """``min_island_voxels``: smaller 3D components are removed (0 or 1 keeps all).
    ``fill_holes``: fill cavities enclosed in 3D."""

    min_island_voxels: int = 64
    fill_holes: bool = True

    def __post_init__(self) -> None:
        n = self.min_island_voxels
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise InputError(f"min_island_voxels must be an integer ≥ 0, got {self.min_island_voxels!r}")


def _class_values(classes: Iterable[Any]) -> list[int]:
    values = [int(c["value"]) if isinstance(c, Mapping) else int(c) for c in classes]
    return [v for v in values if v != 0]


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of a boolean mask, or None when empty."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components, in uint16 when they fit (half the memory), else int32."""
    try:
        out = np.empty(mask.shape, dtype=np.uint16)
        n = ndimage.label(mask, structure=_FULL, output=out)
        return out, int(n)
    except RuntimeError:  # more components than uint16 holds
        out = np.empty(mask.shape, dtype=np.int32)
        n = ndimage.label(mask, structure=_FULL, output=out)
        return out, int(n)


def remove_small_islands(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """``mask`` (bool, 3D) without its 26-connected components smaller than ``min_voxels`` (in place)."""
    if min_voxels <= 1 or not mask.any():
        return mask
    lab, n = _label(mask)
    sizes = np.zeros(n + 1, dtype=np.int64)
    for k in range(0, lab.shape[0], _CHUNK):  # bincount copies to intp: do it a chunk at a time
        sizes += np.bincount(lab[k : k + _CHUNK].ravel(), minlength=n + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    if not keep[1:].all():
        for k in range(0, lab.shape[0], _CHUNK):
            mask[k : k + _CHUNK] &= keep[lab[k : k + _CHUNK]]
    return mask


def postprocess(labels: np.ndarray, classes: Iterable[Any], options: PostprocessOptions | None = None) -> np.ndarray:
    """A cleaned copy of the integer labelmap ``labels`` (K, H, W); ``classes`` are config class dicts or values."""
    options = options or PostprocessOptions()
    if labels.ndim != 3:
        raise InputError(f"labelmap must be 3D, got shape {labels.shape}")
    out = np.array(labels, copy=True)
    values = _class_values(classes)
    if options.min_island_voxels > 1:
        for v in values:
            mask = out == v
            box = _bbox(mask)
            if box is None:
                continue
            crop = mask[box]
            removed = crop & ~remove_small_islands(crop.copy(), options.min_island_voxels)
            out[box][removed] = 0
            del mask, crop, removed
    if options.fill_holes:
        for v in values:
            mask = out == v
            box = _bbox(mask)
            if box is None:
                continue
            crop = mask[box]
            del mask
            filled = ndimage.binary_fill_holes(crop, structure=_FULL)
            region = out[box]
            region[filled & (region == 0)] = v
            del crop, filled
    return out
