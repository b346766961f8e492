"""Clean-up of a predicted labelmap: drop tiny 3D islands, fill enclosed cavities, keep every real fragment.

Per foreground class, on the class's bounding box:
- islands: 3D connected components (26-connected, so diagonally touching voxels count as one piece)
  smaller than ``min_island_voxels`` become background. Every component at or above the size is kept —
  fossils are fragmentary, so the largest component is never singled out.
- holes: background voxels enclosed by the class in 3D become that class (the class's complement is
  26-connected, so a cavity that reaches the outside even through a diagonal gap stays open; other classes
  are part of that complement and are never overwritten). Filling is 3D on purpose: per-slice filling
  would close foramina and medullary canals that are open in 3D but look enclosed in a single slice.
  Classes fill in the order given; a voxel enclosed by two classes takes the first.

Memory is bounded: components are found slab by slab (:mod:`.components`), so temporaries stay within
``max_bytes`` (256 MB by default) whatever the volume size; with ``inplace=True`` no copy is made either.
The result is identical to labelling the whole volume at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, check_cancelled
from .components import DEFAULT_MAX_BYTES, ComponentStats, SlabCallback, select_components, slab_length


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
    return list(dict.fromkeys(v for v in values if v != 0))


def _bbox(labels: np.ndarray, value: int, slab: int, tick: Callable[[int], None]) -> tuple[slice, ...] | None:
    """Tight bounding box of ``labels == value``, computed a slab at a time; None when absent.
    ``tick(slices_done)`` after each slab."""
    hits = [np.zeros(n, dtype=bool) for n in labels.shape]
    for k0 in range(0, labels.shape[0], slab):
        tick(k0)
        mask = labels[k0 : k0 + slab] == value
        in_k = mask.any(axis=(1, 2))
        if not in_k.any():
            continue
        hits[0][k0 : k0 + slab] = in_k
        hits[1] |= mask.any(axis=(0, 2))
        hits[2] |= mask.any(axis=(0, 1))
    if not hits[0].any():
        return None
    return tuple(slice(int(np.flatnonzero(h)[0]), int(np.flatnonzero(h)[-1]) + 1) for h in hits)


def _remove_islands(region: np.ndarray, value: int, min_voxels: int, slab: int, on_slab: SlabCallback) -> None:
    """Set to 0, in place, the 26-connected components of ``region == value`` under ``min_voxels``."""

    def clear(k0: int, k1: int, chosen: np.ndarray) -> None:
        np.copyto(region[k0:k1], 0, where=chosen)

    select_components(lambda k0, k1: region[k0:k1] == value, region.shape[0],
                      lambda stats: stats.sizes < min_voxels, clear, slab, on_slab=on_slab)


def _fill_enclosed(region: np.ndarray, value: int, slab: int, on_slab: SlabCallback) -> None:
    """Set to ``value``, in place, the 0 voxels of complement components not touching the region border.

    ``region`` is the class's bounding box (or any box holding all its voxels): everything outside it is
    complement reaching the volume border, so touching the box border is the same as reaching the outside.
    """

    def fill(k0: int, k1: int, chosen: np.ndarray) -> None:
        part = region[k0:k1]
        chosen &= part == 0
        np.copyto(part, value, where=chosen)

    def enclosed(stats: ComponentStats) -> np.ndarray:
        return ~stats.touches_border

    select_components(lambda k0, k1: region[k0:k1] != value, region.shape[0], enclosed, fill, slab,
                      on_slab=on_slab)


def postprocess(
    labels: np.ndarray,
    classes: Iterable[Any],
    options: PostprocessOptions | None = None,
    *,
    inplace: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> np.ndarray:
    """The cleaned integer labelmap ``labels`` (K, H, W); ``classes`` are config class dicts or values.

    Returns a copy, or ``labels`` itself cleaned in place with ``inplace=True`` (e.g. a memory-mapped
    labelmap). ``max_bytes`` bounds the temporaries of one slab of slices. ``progress(done, total)`` after
    each slab (total: 3 passes over the K slices per step and class; (0, 0) when there is nothing to do);
    ``cancel`` is checked there too and raises :class:`~fossilsegment_engine.errors.Cancelled` (an in-place
    labelmap is then part-cleaned).
    """
    options = options or PostprocessOptions()
    if labels.ndim != 3:
        raise InputError(f"labelmap must be 3D, got shape {labels.shape}")
    out = labels if inplace else np.array(labels, copy=True)
    values = _class_values(classes)
    remove_islands = partial(_remove_islands, min_voxels=options.min_island_voxels)
    steps = [(remove_islands, v) for v in values if options.min_island_voxels > 1] + \
        [(_fill_enclosed, v) for v in values if options.fill_holes]
    n = out.shape[0]
    total = 3 * n * len(steps)

    def report(done: int) -> None:
        check_cancelled(cancel)
        if progress is not None:
            progress(min(done, total), total)

    def slab(array: np.ndarray) -> int:
        return slab_length(array.shape[1] * array.shape[2], array.shape[0], max_bytes)

    for index, (step, v) in enumerate(steps):
        base = 3 * n * index
        box = _bbox(out, v, slab(out), lambda done, base=base: report(base + done))
        if box is not None:
            region = out[box]
            extent = max(region.shape[0], 1)

            def on_slab(phase: int, done: int, base: int = base, extent: int = extent) -> None:
                report(base + n * (1 + phase) + done * n // extent)

            step(region, v, slab=slab(region), on_slab=on_slab)
        report(base + 3 * n)
    if not steps and progress is not None:
        progress(0, 0)  # nothing to clean: done at once
    return out
