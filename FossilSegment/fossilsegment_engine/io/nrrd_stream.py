"""NRRD files written slab by slab: no full-size temporary (pynrrd's ``nrrd.write`` makes one with ``tobytes``).

The header is pynrrd's own (same field order and formatting as ``nrrd.write``); the voxels follow as raw
bytes or one gzip stream fed a few slices at a time, exactly the bytes ``nrrd.write`` produces.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping, Optional

import numpy as np
from nrrd.writer import _handle_header, _write_header  # pynrrd's header code, so the text is nrrd.write's

#: Bytes of voxels handed to the compressor per step.
SLAB_BYTES = 32 << 20


def iter_slabs(array: np.ndarray, dtype: Optional[np.dtype] = None, slab_bytes: int = SLAB_BYTES) -> Iterator[np.ndarray]:
    """C-contiguous ``array[k0:k1]`` blocks of about ``slab_bytes`` (converted to ``dtype`` one block at a time)."""
    dtype = np.dtype(dtype or array.dtype)
    per_slice = max(1, int(np.prod(array.shape[1:], dtype=np.int64)) * dtype.itemsize)
    step = max(1, slab_bytes // per_slice)
    for k in range(0, array.shape[0], step):
        yield np.ascontiguousarray(array[k : k + step], dtype=dtype)


def nrrd_header(shape: tuple[int, ...], dtype: np.dtype, fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` completed as ``nrrd.write`` would for a C-order ``[k, j, i]`` array (type, endian, dimension, sizes)."""
    proxy = np.broadcast_to(np.zeros((), dtype=dtype), shape)  # shape and dtype only: no voxels
    return _handle_header(proxy, dict(fields), index_order="C")


def write_header(fh: BinaryIO, shape: tuple[int, ...], dtype: np.dtype, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Write the NRRD header for a C-order ``[k, j, i]`` array (the voxels follow it); returns the header."""
    header = nrrd_header(shape, np.dtype(dtype), fields)
    _write_header(fh, header)
    return header


def write_nrrd(path: Path | str, array: np.ndarray, fields: Mapping[str, Any], dtype: Optional[np.dtype] = None,
               compression_level: int = 1) -> Path:
    """Write ``array`` (``[k, j, i]``, stored i fastest) with header ``fields`` to ``path``, a slab at a time.

    ``fields["encoding"]`` is ``"gzip"`` (default) or ``"raw"``; ``dtype`` converts the voxels on the way.
    Not atomic by itself: write to :func:`~fossilsegment_engine.atomic.atomic_path`'s temporary.
    """
    dtype = np.dtype(dtype or array.dtype)
    if dtype == bool:
        dtype = np.dtype(np.uint8)
    header = nrrd_header(tuple(array.shape), dtype, {"encoding": "gzip", **fields})
    encoding = str(header["encoding"]).lower()
    if encoding not in ("gzip", "gz", "raw"):
        raise ValueError(f"write_nrrd writes gzip or raw NRRD data, not {encoding!r}")
    compressor = zlib.compressobj(compression_level, zlib.DEFLATED, zlib.MAX_WBITS | 16) if encoding != "raw" else None
    with open(path, "wb") as fh:
        _write_header(fh, header)
        for slab in iter_slabs(array, dtype, SLAB_BYTES):
            data = memoryview(slab).cast("B")
            fh.write(compressor.compress(data) if compressor is not None else data)
        if compressor is not None:
            fh.write(compressor.flush())
    return Path(path)


def volume_fields(spacing: tuple[float, ...], origin: tuple[float, ...], direction: tuple[float, ...]) -> dict[str, Any]:
    """Geometry header fields (LPS) for a volume: SimpleITK reads back the same spacing, origin and direction."""
    axes = np.asarray(direction, dtype=float).reshape(3, 3) * np.asarray(spacing, dtype=float)  # columns = i, j, k
    return {
        "space": "left-posterior-superior",
        "kinds": ["domain", "domain", "domain"],
        "space directions": axes.T,
        "space origin": np.asarray(origin, dtype=float),
    }
