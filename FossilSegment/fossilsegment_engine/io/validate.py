"""Checks that turn a freshly read array into a usable 3D scalar volume, or a clear :class:`InputError`."""

from __future__ import annotations

import re

import numpy as np

from ..errors import InputError

#: Voxels examined per step when scanning for NaN/Inf, so the check needs no full-size temporary.
_CHUNK_VOXELS = 1 << 24


def check_components(n_components: int, source: str) -> None:
    """Reject vector / RGB pixels: the one place to change when RGB stacks become accepted (issue 5)."""
    if n_components == 1:
        return
    if n_components in (3, 4):
        kind = "RGB" if n_components == 3 else "RGBA"
        raise InputError(
            f"{source} has {kind} pixels ({n_components} components per voxel); "
            "need a greyscale (single-component) volume: convert it to greyscale first"
        )
    raise InputError(f"{source} has {n_components} components per voxel (a vector image); need a single-component volume")


def check_shape(shape: tuple[int, ...], source: str) -> None:
    """Require exactly three axes, none empty and none of length 1 (that would be a single 2D image)."""
    if len(shape) == 2:
        raise InputError(f"{source} is 2D (size {shape[1]}x{shape[0]}); need a 3D volume (a stack of slices)")
    if len(shape) != 3:
        raise InputError(f"{source} is {len(shape)}D (array shape {tuple(shape)}); need a 3D volume")
    if 0 in shape:
        raise InputError(f"{source} is empty (array shape {tuple(shape)})")
    if 1 in shape:
        raise InputError(f"{source} is 2D (array shape {tuple(shape)} has a single slice); need a 3D volume")


def count_non_finite(array: np.ndarray) -> int:
    """Number of NaN/Inf voxels (0 for integer arrays), scanned in chunks to bound memory."""
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.complexfloating):
        return 0
    flat = array.reshape(-1)
    return int(sum(np.count_nonzero(~np.isfinite(flat[s : s + _CHUNK_VOXELS])) for s in range(0, flat.size, _CHUNK_VOXELS)))


def check_values(array: np.ndarray, source: str, allow_constant: bool = False) -> None:
    """Require a real-valued, finite and (unless ``allow_constant``) non-constant array."""
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{source} has unsupported voxel type {array.dtype}; need integer or floating-point voxels")
    bad = count_non_finite(array)
    if bad:
        raise InputError(f"{source} has {bad} non-finite voxel(s) (NaN or Inf) out of {array.size}")
    if not allow_constant:
        lo, hi = array.min(), array.max()
        if lo == hi:
            raise InputError(f"{source} is constant (every voxel is {lo}); nothing to segment")


def validate_array(array: np.ndarray, source: str, allow_constant: bool = False) -> None:
    """Shape then value checks for an array indexed ``[k, j, i]`` (components already handled)."""
    check_shape(tuple(array.shape), source)
    check_values(array, source, allow_constant=allow_constant)


def short_itk_reason(exc: Exception) -> str:
    """The useful last line of a long ITK exception message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    reason = lines[-1] if lines else type(exc).__name__
    return re.sub(r"^(itk::ERROR: *)?(\w+\(0x[0-9a-f]+\): *)?", "", reason)
