"""2.5D input stacks: each axial slice with its neighbours above and below (shared by inference and training)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InputError, ModelError


def context_indices(n_slices: int, k_indices: Sequence[int] | np.ndarray, n_context: int) -> np.ndarray:
    """``(len(k), n_context)`` slice indices centred on each k; indices past either end repeat the end slice."""
    bad = isinstance(n_context, bool) or not isinstance(n_context, (int, np.integer))
    if bad or n_context < 1 or n_context % 2 == 0:
        raise ModelError(f"context_slices must be an odd positive integer (1, 3, 5), got {n_context!r}")
    k = np.asarray(k_indices, dtype=np.int64).reshape(-1)
    if k.size and (k.min() < 0 or k.max() >= n_slices):
        raise InputError(f"slice index out of range: volume has {n_slices} slices, asked for {k.min()}..{k.max()}")
    half = int(n_context) // 2
    offsets = np.arange(-half, half + 1, dtype=np.int64)
    return np.clip(k[:, None] + offsets[None, :], 0, n_slices - 1)


def context_slices(array: np.ndarray, k_indices: Sequence[int] | np.ndarray, n_context: int) -> np.ndarray:
    """2.5D stacks ``(len(k), n_context, H, W)`` of ``array[k]`` and its neighbours, ends replicated.

    ``array`` is ``(K, H, W)`` (numpy array or memmap); only the slices needed are read, each once,
    and the result keeps ``array``'s dtype. Channel ``n_context // 2`` is slice k itself.
    """
    if getattr(array, "ndim", None) != 3:
        raise InputError(f"need a 3D volume (slices, rows, columns), got shape {getattr(array, 'shape', None)}")
    idx = context_indices(array.shape[0], k_indices, n_context)
    unique, inverse = np.unique(idx, return_inverse=True)
    block = np.asarray(array[unique])  # reads just these slices from a memmap
    return block[inverse.reshape(idx.shape)]
