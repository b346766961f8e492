"""Voxels of large NRRD/NHDR and MetaImage (MHA/MHD) files without a second full copy.

Raw data in native byte order is memory-mapped read-only (pages are read only when used, and
:func:`~fossilsegment_engine.mapped_pages.release_pages` hands back those no longer needed); raw data in
the other byte order is read a slab at a time into one array; gzip/zlib data is stream-decompressed
straight into one preallocated array. Geometry is not read here: the caller
takes it from SimpleITK's header reading, so it is exactly what the SimpleITK path gives.

:func:`read_voxels` returns None for what it does not handle (ASCII, bzip2 or hex data, several data
files, line skips, multi-component voxels); the caller then reads the file through SimpleITK.
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import nrrd
import numpy as np
import SimpleITK as sitk

from ..errors import InputError

#: NumPy voxel types for SimpleITK's scalar pixel types.
SITK_DTYPES = {
    sitk.sitkUInt8: np.uint8, sitk.sitkInt8: np.int8, sitk.sitkUInt16: np.uint16, sitk.sitkInt16: np.int16,
    sitk.sitkUInt32: np.uint32, sitk.sitkInt32: np.int32, sitk.sitkUInt64: np.uint64, sitk.sitkInt64: np.int64,
    sitk.sitkFloat32: np.float32, sitk.sitkFloat64: np.float64,
}
#: Bytes converted or decompressed per step, and compressed bytes read per step (small: zlib copies the
#: unread rest of its input on every call).
_STEP_BYTES = 4 << 20
_READ_BYTES = 1 << 20
#: Longest MetaImage header searched for ``ElementDataFile``.
_MAX_META_HEADER = 1 << 16


@dataclass(frozen=True)
class DataLayout:
    """Where and how a file stores its voxels."""

    data_path: Path
    offset: int  # bytes before the voxels in data_path; -1: the voxels end the file
    compressed: bool  # gzip or zlib stream (raw otherwise)
    big_endian: bool


def read_voxels(path: Path, reader: sitk.ImageFileReader) -> Optional[np.ndarray]:
    """The ``[k, j, i]`` voxels of the NRRD/MetaImage file ``path`` whose header ``reader`` has read, or None.

    Raises :class:`InputError` for a truncated or corrupt data block.
    """
    dtype = SITK_DTYPES.get(reader.GetPixelID())
    if dtype is None or reader.GetNumberOfComponents() != 1 or reader.GetDimension() != 3:
        return None
    name = path.name.lower()
    if name.endswith((".nrrd", ".nhdr")):
        layout = nrrd_layout(path, reader.GetSize())
    elif name.endswith((".mha", ".mhd")):
        layout = metaimage_layout(path)
    else:
        return None
    if layout is None:
        return None
    shape = tuple(int(n) for n in reversed(reader.GetSize()))
    stored = np.dtype(dtype).newbyteorder(">" if layout.big_endian else "<")
    if layout.compressed:
        return inflate(layout, shape, stored, path)
    return map_raw(layout, shape, stored, path)


def nrrd_layout(path: Path, size: tuple[int, ...]) -> Optional[DataLayout]:
    """The data layout from an NRRD/NHDR header (pynrrd), or None when it needs SimpleITK."""
    try:
        with open(path, "rb") as fh:
            header = nrrd.read_header(fh)
            offset = fh.tell()
    except (nrrd.NRRDError, ValueError, OSError, StopIteration):
        return None  # SimpleITK read this header, so let it say what is wrong with the data
    if header.get("dimension") != 3 or tuple(int(n) for n in header.get("sizes", ())) != tuple(size):
        return None
    encoding = str(header.get("encoding", "")).lower()
    if encoding not in ("raw", "gzip", "gz"):
        return None
    if int(header.get("line skip", header.get("lineskip", 0))) != 0:
        return None
    byte_skip = int(header.get("byte skip", header.get("byteskip", 0)))
    data_file = header.get("data file", header.get("datafile"))
    data_path = path
    if data_file is not None:
        if not isinstance(data_file, str) or data_file.startswith("LIST") or " " in data_file.strip():
            return None  # several data files
        data_path = Path(data_file) if Path(data_file).is_absolute() else path.parent / data_file
        offset = 0
    compressed = encoding != "raw"
    if byte_skip == -1 and not compressed:
        offset = -1
    elif byte_skip < 0 or (byte_skip and compressed):
        return None  # a skip inside compressed data: SimpleITK handles it
    else:
        offset += byte_skip
    return DataLayout(data_path, offset, compressed, str(header.get("endian", sys.byteorder)).lower() == "big")


def _meta_fields(path: Path) -> Optional[tuple[dict[str, str], int]]:
    """MetaImage ``key = value`` fields up to ``ElementDataFile`` and the byte offset just after that line."""
    fields: dict[str, str] = {}
    offset = 0
    with open(path, "rb") as fh:
        for raw in fh:
            offset += len(raw)
            if offset > _MAX_META_HEADER:
                return None
            line = raw.decode("latin-1").strip()
            if not line:
                continue
            key, sep, value = line.partition("=")
            if not sep:
                return None
            fields[key.strip().lower()] = value.strip()
            if key.strip().lower() == "elementdatafile":
                return fields, offset
    return None


def metaimage_layout(path: Path) -> Optional[DataLayout]:
    """The data layout from a MetaImage header, or None when it needs SimpleITK."""
    try:
        found = _meta_fields(path)
    except OSError:
        return None
    if found is None:
        return None
    fields, offset = found
    if fields.get("ndims") != "3" or fields.get("elementnumberofchannels", "1") != "1":
        return None
    data_file = fields["elementdatafile"]
    header_size = int(fields.get("headersize", "0") or 0)
    compressed = fields.get("compresseddata", "false").lower() == "true"
    if data_file.upper() == "LOCAL":
        data_path = path
        if header_size != 0:
            return None
    else:
        if data_file.upper() == "LIST" or "%" in data_file or " " in data_file:
            return None  # several data files
        data_path = Path(data_file) if Path(data_file).is_absolute() else path.parent / data_file
        offset = header_size
        if header_size < -1 or (header_size == -1 and compressed):
            return None
    msb = fields.get("binarydatabyteordermsb", fields.get("elementbyteordermsb", "false")).lower() == "true"
    return DataLayout(data_path, offset, compressed, msb)


def _truncated(path: Path, have: int, need: int) -> InputError:
    return InputError(f"cannot read {path}: the file is truncated (its voxel data has {have} bytes; need {need})")


def map_raw(layout: DataLayout, shape: tuple[int, ...], stored: np.dtype, source: Path) -> np.ndarray:
    """Raw voxels memory-mapped read-only (native byte order) or read slab by slab into one native array."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * stored.itemsize
    try:
        size = layout.data_path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read {source}: its data file {layout.data_path} is missing ({exc.strerror})") from exc
    offset = size - nbytes if layout.offset == -1 else layout.offset
    if offset < 0 or offset + nbytes > size:
        raise _truncated(source, max(0, size - max(offset, 0)), nbytes)
    mapped = np.memmap(layout.data_path, dtype=stored, mode="r", offset=offset, shape=shape)
    if stored.isnative or stored.itemsize == 1:
        return mapped.view(np.ndarray)  # a plain ndarray whose base is the memory map
    out = np.empty(shape, dtype=stored.newbyteorder("="))
    step = max(1, _STEP_BYTES // max(1, nbytes // shape[0]))
    for k in range(0, shape[0], step):
        out[k : k + step] = mapped[k : k + step]
    del mapped
    return out


def inflate(layout: DataLayout, shape: tuple[int, ...], stored: np.dtype, source: Path) -> np.ndarray:
    """gzip/zlib voxels decompressed a block at a time straight into one preallocated array."""
    out = np.empty(shape, dtype=stored)
    target = out.reshape(-1).view(np.uint8)
    nbytes = target.size
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
    pos = 0
    try:
        with open(layout.data_path, "rb") as fh:
            fh.seek(layout.offset)
            while pos < nbytes and not inflater.eof:
                data = inflater.unconsumed_tail or fh.read(_READ_BYTES)
                piece = inflater.decompress(data, min(_STEP_BYTES, nbytes - pos))
                if not data and not piece:
                    break  # end of the file, nothing pending
                target[pos : pos + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
                pos += len(piece)
            while pos == nbytes and not inflater.eof:  # read on to the end: the gzip/zlib checksum
                data = inflater.unconsumed_tail or fh.read(_READ_BYTES)
                if inflater.decompress(data, 1 << 16) or not data:
                    break  # more data than the header's sizes (ignored, as SimpleITK does), or no trailer
    except zlib.error as exc:
        raise InputError(f"cannot read {source}: its compressed voxel data is corrupt ({exc})") from exc
    except OSError as exc:
        raise InputError(f"cannot read {source}: {exc}") from exc
    if pos < nbytes:
        raise _truncated(source, pos, nbytes)
    if not stored.isnative and stored.itemsize > 1:
        out = out.byteswap(inplace=True).view(stored.newbyteorder("="))
    return out
