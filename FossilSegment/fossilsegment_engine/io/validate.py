"""Checks that turn a freshly read array into a usable 3D scalar volume, or a clear :class:`InputError`."""

from __future__ import annotations

import re

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

#: Voxels examined per step when scanning for NaN/Inf, so the check needs no full-size temporary.
_CHUNK_VOXELS = 1 << 24


#: ITU-R BT.601 luma weights (R, G, B), as PIL ``convert("L")``, OpenCV and MATLAB ``rgb2gray`` use.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
LUMA_STANDARD = "ITU-R BT.601"


def check_components(n_components: int, source: str) -> None:
    """Accept greyscale, RGB and RGBA pixels (colour becomes luminance, :func:`to_luminance`); reject vectors."""
    if n_components in (1, 3, 4):
        return
    raise InputError(f"{source} has {n_components} components per voxel (a vector image); need a single-component volume")


def to_luminance(array: np.ndarray, source: str) -> tuple[np.ndarray, str]:
    """``[k, j, i, 3|4]`` RGB(A) → ``[k, j, i]`` BT.601 luminance (alpha ignored) and a note saying so.

    Integer input keeps its type (rounded); float input becomes float32.
    """
    n = array.shape[-1]
    if n not in (3, 4):
        raise InputError(f"{source} has {n} components per voxel; need greyscale, RGB or RGBA")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)) or array.dtype == bool:
        raise InputError(f"{source} has unsupported voxel type {array.dtype}; need integer or floating-point voxels")
    is_int = np.issubdtype(array.dtype, np.integer)
    out = np.empty(array.shape[:-1], dtype=array.dtype if is_int else np.float32)
    weights = np.asarray(LUMA_WEIGHTS, dtype=np.float32)
    for k in range(array.shape[0]):  # slice by slice: no full-size temporary
        grey = array[k, ..., :3].astype(np.float32) @ weights
        if is_int:
            info = np.iinfo(array.dtype)
            grey = np.clip(np.rint(grey), info.min, info.max)
        out[k] = grey
    kind = "RGB" if n == 3 else "RGBA (alpha ignored)"
    note = (f"{source}: {kind} {array.dtype} pixels converted to greyscale luminance with {LUMA_STANDARD} weights "
            f"{LUMA_WEIGHTS} (e.g. photographs of serial grinding/sections)")
    return out, note


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
    """Number of NaN/Inf voxels (0 for integer arrays), scanned a slab of slices at a time to bound memory."""
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.complexfloating):
        return 0
    if array.ndim == 0 or array.size == 0:
        return int(not np.isfinite(array).all()) if array.size else 0
    step = max(1, _CHUNK_VOXELS // max(1, array[0].size))  # slabs along the first axis: no reshape copy
    return int(sum(np.count_nonzero(~np.isfinite(array[k : k + step])) for k in range(0, array.shape[0], step)))


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


def read_itk_information(path) -> sitk.ImageFileReader:
    """A SimpleITK reader for ``path`` with its header read (size, spacing, components); unreadable → InputError."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"cannot read {path}: {short_itk_reason(exc)}") from exc
    return reader
