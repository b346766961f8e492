"""Slice stacks: a folder of TIFF/PNG slices (natural file-name order) or one multipage TIFF.

Greyscale slices of any integer/float type (8-bit included) are read as they are; RGB/RGBA slices (e.g.
photographs of serial grinding) come back as ``[k, j, i, c]`` and :func:`..volume_io.read_volume` turns
them into luminance.

Voxel size comes, in this order, from the ``spacing`` argument, the TIFF metadata (ImageJ ``unit`` /
``spacing`` and the resolution tags, or a PNG ``pHYs`` chunk), else 1.0 mm with a logged warning.
When only the in-plane size is known the slices are taken as isotropic (z = x), with a warning.
"""

from __future__ import annotations

import logging
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk
import tifffile

from ..errors import InputError
from .validate import check_components, check_shape, read_itk_information, short_itk_reason

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)
SLICE_SUFFIXES = TIFF_SUFFIXES + PNG_SUFFIXES

#: Millimetres per unit for the units ImageJ and other tools write.
_UNIT_MM = {
    "nm": 1e-6, "nanometer": 1e-6,
    "um": 1e-3, "µm": 1e-3, "μm": 1e-3, "\\u00b5m": 1e-3, "micron": 1e-3, "microns": 1e-3, "micrometer": 1e-3,
    "mm": 1.0, "millimeter": 1.0,
    "cm": 10.0, "centimeter": 10.0,
    "m": 1000.0, "meter": 1000.0,
    "inch": 25.4, "in": 25.4,
}
#: Dots-per-inch values that image libraries write by default; they say nothing about voxel size.
_DEFAULT_DPI = (72.0, 96.0)
#: Exceptions tifffile raises on damaged files.
_TIFF_ERRORS = (tifffile.TiffFileError, ValueError, OSError, EOFError, struct.error, KeyError, IndexError)

Spacing3 = tuple[Optional[float], Optional[float], Optional[float]]


def natural_key(name: str) -> list:
    """Sort key so that ``slice2`` comes before ``slice10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_slice_files(folder: Path) -> list[Path]:
    """TIFF or PNG files of ``folder`` in natural order (hidden files skipped; one kind only)."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SLICE_SUFFIXES]
    kinds = {p.suffix.lower() in TIFF_SUFFIXES for p in files}
    if len(kinds) > 1:
        raise InputError(f"folder {folder} mixes TIFF and PNG slices; keep one kind of slice file per folder")
    return sorted(files, key=lambda p: natural_key(p.name))


def _ratio(value: object) -> Optional[float]:
    """A TIFF RATIONAL tag value (num, den) as a float, None when unusable."""
    if isinstance(value, tuple) and len(value) == 2:
        num, den = value
        return float(num) / float(den) if num and den else None
    return float(value) if value else None


def tiff_spacing(tif: tifffile.TiffFile) -> Spacing3:
    """(si, sj, sk) in mm from ImageJ metadata and resolution tags; None for what the file does not say."""
    page = tif.pages.first
    ij = tif.imagej_metadata or {}
    tags = page.tags
    xres = _ratio(tags["XResolution"].value) if "XResolution" in tags else None
    yres = _ratio(tags["YResolution"].value) if "YResolution" in tags else None
    res_unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    unit = str(ij.get("unit", "")).strip().lower()
    if unit in _UNIT_MM:  # ImageJ: resolution is pixels per `unit`, `spacing` is the slice step in `unit`
        factor = _UNIT_MM[unit]
    elif res_unit == 3:  # pixels per centimetre
        factor = 10.0
    elif res_unit == 2 and xres and xres not in _DEFAULT_DPI:  # pixels per inch
        factor = 25.4
    else:
        return (None, None, None)
    si = factor / xres if xres else None
    sj = factor / yres if yres else si
    z = ij.get("spacing") if unit in _UNIT_MM else None
    sk = float(z) * factor if z else None
    return (si, sj, sk)


def resolve_spacing(found: Spacing3, spacing: Optional[Sequence[float]], source: str) -> tuple[float, float, float]:
    """Pick the voxel size: the argument, else the metadata (z = x when only x/y are known), else 1.0."""
    if spacing is not None:
        if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
            raise InputError(f"spacing must be three positive numbers (si, sj, sk), got {tuple(spacing)}")
        return tuple(float(s) for s in spacing)  # type: ignore[return-value]
    si, sj, sk = found
    if si is None:
        log.warning("%s has no voxel size in its metadata; using 1.0 mm (pass spacing=(si, sj, sk) / --spacing)", source)
        return (1.0, 1.0, 1.0)
    if sk is None:
        log.warning("%s gives the in-plane voxel size %.6g mm but no slice step; assuming isotropic voxels", source, si)
        sk = si
    return (si, sj or si, sk)


@dataclass(frozen=True)
class _SliceInfo:
    shape: tuple[int, ...]
    dtype: str
    components: int


def _check_complete(tif: tifffile.TiffFile, path: Path) -> None:
    """Refuse a file cut short: the first page's (or contiguous series') pixel data must lie inside it."""
    page, series, size = tif.pages.first, tif.series[0], tif.filehandle.size
    ends = [int(o) + int(c) for o, c in zip(page.dataoffsets, page.databytecounts)]
    if series.dataoffset is not None:
        ends.append(int(series.dataoffset) + int(series.nbytes))
    if ends and max(ends) > size:
        raise InputError(f"cannot read {path}: the file is truncated ({size} bytes; its image data needs {max(ends)})")


def _tiff_info(path: Path) -> tuple[_SliceInfo, Spacing3]:
    try:
        with tifffile.TiffFile(path) as tif:
            _check_complete(tif, path)
            series = tif.series[0]
            info = _SliceInfo(tuple(series.shape), str(series.dtype), 1)
            spacing = tiff_spacing(tif)
            if "S" in series.axes:  # colour samples: the shape is the spatial one, the samples are components
                s_axis = series.axes.index("S")
                spatial = tuple(n for a, n in zip(series.axes, series.shape) if a != "S")
                info = _SliceInfo(spatial, info.dtype, int(series.shape[s_axis]))
    except _TIFF_ERRORS as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    return info, spacing


def _png_info(path: Path) -> tuple[_SliceInfo, Spacing3]:
    reader = read_itk_information(path)
    shape = tuple(reversed(reader.GetSize()))
    info = _SliceInfo(shape, sitk.GetPixelIDValueAsString(reader.GetPixelID()), reader.GetNumberOfComponents())
    sx, sy = reader.GetSpacing()[:2]
    return info, ((sx, sy, None) if (sx, sy) != (1.0, 1.0) else (None, None, None))


def read_slice_folder(folder: Path, spacing: Optional[Sequence[float]] = None) -> tuple[np.ndarray, tuple[float, float, float], str]:
    """Stack the folder's slices into one ``[k, j, i]`` array; returns (array, spacing, format name)."""
    files = list_slice_files(folder)
    if not files:
        raise InputError(f"folder {folder} holds no DICOM series and no TIFF/PNG slices")
    is_tiff = files[0].suffix.lower() in TIFF_SUFFIXES
    info_of = _tiff_info if is_tiff else _png_info
    first, found = info_of(files[0])
    check_components(first.components, str(files[0]))
    if len(first.shape) != 2:
        raise InputError(f"{files[0]} holds {first.shape} pixels (several pages?); a slice folder needs one 2D image per file")
    for path in files[1:]:
        info, _ = info_of(path)
        if info != first:
            raise InputError(
                f"slice {path} differs from the first slice {files[0].name}: size {info.shape[::-1]} {info.dtype} "
                f"vs {first.shape[::-1]} {first.dtype}; all slices must share size and type"
            )
    if len(files) < 2:
        raise InputError(f"folder {folder} holds a single slice ({files[0].name}): it is 2D; need a 3D volume")
    array: Optional[np.ndarray] = None
    for k, path in enumerate(files):
        try:
            if is_tiff:
                if array is None:
                    page = tifffile.imread(path)
                    array = np.empty((len(files),) + page.shape, dtype=page.dtype)
                    array[0] = page
                else:
                    tifffile.imread(path, out=array[k])
            else:
                image = sitk.ReadImage(str(path))
                view = sitk.GetArrayViewFromImage(image)  # valid while `image` lives
                if array is None:
                    array = np.empty((len(files),) + view.shape, dtype=view.dtype)
                array[k] = view
        except _TIFF_ERRORS + (RuntimeError,) as exc:
            reason = short_itk_reason(exc) if isinstance(exc, RuntimeError) else str(exc)
            raise InputError(f"cannot read {path}: {reason}") from exc
    assert array is not None
    source = f"slice folder {folder}"
    array = samples_last(array, first.components)
    return array, resolve_spacing(found, spacing, source), "tiff-slices" if is_tiff else "png-slices"


def samples_last(array: np.ndarray, components: int) -> np.ndarray:
    """A ``[k, c, j, i]`` colour stack (planar TIFF) as ``[k, j, i, c]``; other arrays unchanged."""
    if components > 1 and array.ndim == 4 and array.shape[-1] != components and array.shape[1] == components:
        return np.moveaxis(array, 1, -1)
    return array


def read_multipage_tiff(path: Path, spacing: Optional[Sequence[float]] = None) -> tuple[np.ndarray, tuple[float, float, float], str]:
    """Read a multipage (or ImageJ stack) TIFF as ``[k, j, i]``; returns (array, spacing, format name)."""
    info, found = _tiff_info(path)
    check_components(info.components, str(path))
    check_shape(info.shape, str(path))
    try:
        array = _memory_map(path)
        if array is None:
            array = tifffile.imread(path)  # decoded page by page into one array
    except _TIFF_ERRORS as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    return samples_last(array, info.components), resolve_spacing(found, spacing, str(path)), "tiff-multipage"


def _memory_map(path: Path) -> Optional[np.ndarray]:
    """The stack memory-mapped read-only when its pages are stored uncompressed, contiguous and in native
    byte order (as most micro-CT exports are); None otherwise."""
    with tifffile.TiffFile(path) as tif:
        if tif.series[0].dataoffset is None:
            return None
    try:
        mapped = tifffile.memmap(path, mode="r")
    except ValueError:  # not memory-mappable after all
        return None
    if not mapped.dtype.isnative and mapped.dtype.itemsize > 1:
        return None  # stored big-endian: imread gives native voxels
    return mapped.view(np.ndarray)
