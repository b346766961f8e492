"""Read and write 3D volumes with exact geometry (LPS, mm, as SimpleITK).

Inputs: NRRD/NHDR, NIfTI (.nii, .nii.gz), MetaImage (.mha/.mhd), a DICOM series folder (or one of its
files), a folder of TIFF/PNG slices, a multipage TIFF, and ``.npy`` (3D arrays). Every problem becomes an
:class:`InputError` naming the file. Voxel types are kept (uint16 stays uint16).

Memory (issue 6): a volume is held once, never twice. Raw NRRD/NHDR, MetaImage, uncompressed contiguous
multipage TIFF and ``.npy`` voxels are memory-mapped read-only (read as used; copy the array to change
it); gzip NRRD/MetaImage data is stream-decompressed into one array (:mod:`.lazy_readers`); other
formats (NIfTI, DICOM, PNG) are read once by SimpleITK and handed over without a copy; slice folders are
read slice by slice into one array. NRRD output is written a few slices at a time (:mod:`.nrrd_stream`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..atomic import atomic_path, check_can_write
from ..errors import InputError, OutputError
from ..mapped_pages import release_pages
from ..volume import IDENTITY_DIRECTION, Volume
from .lazy_readers import read_voxels
from .nrrd_stream import iter_slabs, volume_fields, write_nrrd
from .tiff_stack import (
    SLICE_SUFFIXES,
    TIFF_SUFFIXES,
    list_slice_files,
    read_multipage_tiff,
    read_slice_folder,
    resolve_spacing,
)
from .validate import (
    LUMA_STANDARD,
    LUMA_WEIGHTS,
    check_components,
    check_shape,
    read_itk_information,
    short_itk_reason,
    to_luminance,
    validate_array,
)

log = logging.getLogger(__name__)

#: Output formats by file-name ending (all written compressed).
WRITE_SUFFIXES = (".nrrd", ".nii.gz", ".nii", ".mha")
#: Formats that carry no origin/direction (a labelmap in one of them may take its reference's geometry).
GEOMETRY_FREE_FORMATS = ("npy", "tiff-slices", "png-slices", "tiff-multipage")
_ITK_FORMATS = {".nrrd": "nrrd", ".nhdr": "nrrd", ".nii": "nifti", ".nii.gz": "nifti", ".mha": "metaimage", ".mhd": "metaimage"}
#: File-name endings read as one volume (besides folders: a DICOM series or TIFF/PNG slices, and a DICOM file).
READ_SUFFIXES = (*_ITK_FORMATS, *TIFF_SUFFIXES, ".npy")

Geometry = tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, ...]]


def scan_stem(path: Path | str) -> str:
    """A scan's name without its format ending: ``/data/skull_01.nii.gz`` → ``skull_01`` (``.seg.nrrd`` too);
    a folder keeps its name."""
    name = Path(path).resolve().name
    for suffix in sorted((".seg.nrrd", *READ_SUFFIXES), key=len, reverse=True):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _read_itk_file(path: Path, fmt: str) -> tuple[np.ndarray, Geometry, str]:
    """One image file: SimpleITK reads the header (geometry); raw/gzip NRRD and MetaImage voxels are then
    memory-mapped or stream-decompressed (:mod:`.lazy_readers`), anything else is read once by SimpleITK."""
    reader = read_itk_information(path)
    check_components(reader.GetNumberOfComponents(), str(path))
    check_shape(tuple(reversed(reader.GetSize())), str(path))
    array = read_voxels(path, reader)
    if array is not None:
        return array, (reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()), fmt
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read {path}: {short_itk_reason(exc)}") from exc
    return _from_itk(image, fmt)


class _ItkPixels:
    """Hands NumPy a SimpleITK image's own pixel buffer and keeps the image alive as the array's base.

    ``GetArrayFromImage`` would copy the buffer (two full copies for a moment). The image is ours alone
    (``GetArrayViewFromImage`` makes it unique), so the array may be writable like a copy.
    """

    def __init__(self, image: sitk.Image) -> None:
        self._image = image
        interface = dict(sitk.GetArrayViewFromImage(image).__array_interface__)
        interface["data"] = (interface["data"][0], False)
        self.__array_interface__ = interface


def _from_itk(image: sitk.Image, fmt: str) -> tuple[np.ndarray, Geometry, str]:
    array = np.asarray(_ItkPixels(image))  # ITK's buffer itself: no copy
    return array, (image.GetSpacing(), image.GetOrigin(), image.GetDirection()), fmt


def _dicom_series(folder: Path) -> dict[str, tuple[str, ...]]:
    reader = sitk.ImageSeriesReader()
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM warns on every folder without DICOM files
    try:
        ids = reader.GetGDCMSeriesIDs(str(folder))
        return {sid: tuple(reader.GetGDCMSeriesFileNames(str(folder), sid)) for sid in ids}
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _read_dicom(folder: Path, series: dict[str, tuple[str, ...]], member: Optional[Path] = None) -> tuple[np.ndarray, Geometry, str]:
    """The series holding ``member`` if given, else the one with the most files (logged when several)."""
    if member is not None:
        chosen = next((sid for sid, files in series.items() if member.name in {Path(f).name for f in files}), None)
        if chosen is None:
            raise InputError(f"cannot read {member}: not part of a readable DICOM series in {folder}")
    else:
        chosen = max(series, key=lambda sid: len(series[sid]))
        if len(series) > 1:
            log.warning(
                "%s holds %d DICOM series; reading the largest (%s, %d files)", folder, len(series), chosen, len(series[chosen])
            )
    files = series[chosen]
    if len(files) < 2:
        raise InputError(f"DICOM series {chosen} in {folder} has a single slice: it is 2D; need a 3D volume")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(files))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read DICOM series in {folder}: {short_itk_reason(exc)}") from exc
    check_components(image.GetNumberOfComponentsPerPixel(), f"DICOM series in {folder}")
    return _from_itk(image, "dicom")


def _read_folder(folder: Path, spacing: Optional[Sequence[float]]) -> tuple[np.ndarray, Optional[Geometry], str]:
    others = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in SLICE_SUFFIXES]
    series = _dicom_series(folder) if others else {}
    if series:
        return _read_dicom(folder, series)
    if not list_slice_files(folder):
        raise InputError(f"folder {folder} holds no DICOM series and no TIFF/PNG slices")
    array, found, fmt = read_slice_folder(folder, spacing)
    return array, (found, (0.0, 0.0, 0.0), IDENTITY_DIRECTION), fmt


def _read_npy(path: Path, spacing: Optional[Sequence[float]]) -> tuple[np.ndarray, Geometry, str]:
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")  # memory-mapped, read-only
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    if not isinstance(array, np.ndarray):
        raise InputError(f"cannot read {path}: not a single NumPy array")
    array = array.view(np.ndarray)  # a plain array over the memory map
    if array.ndim == 4 and array.shape[-1] in (3, 4):  # an RGB(A) stack: read_volume makes it luminance
        check_shape(array.shape[:3], str(path))
    else:
        check_shape(array.shape, str(path))
    return array, (resolve_spacing((None, None, None), spacing, str(path)), (0.0, 0.0, 0.0), IDENTITY_DIRECTION), "npy"


def _read_raw(path: Path | str, spacing: Optional[Sequence[float]]) -> tuple[np.ndarray, Geometry, str, Path]:
    """Dispatch on the path; returns (array [k,j,i], (spacing, origin, direction), format, path)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"input not found: {path}")
    suffix = _suffix(path)
    if path.is_dir():
        array, geometry, fmt = _read_folder(path, spacing)
    elif suffix in TIFF_SUFFIXES:
        array, found, fmt = read_multipage_tiff(path, spacing)
        geometry = (found, (0.0, 0.0, 0.0), IDENTITY_DIRECTION)
    elif suffix == ".npy":
        array, geometry, fmt = _read_npy(path, spacing)
    elif suffix == ".dcm":
        array, geometry, fmt = _read_dicom(path.parent, _dicom_series(path.parent), member=path)
    else:
        array, geometry, fmt = _read_itk_file(path, _ITK_FORMATS.get(suffix, suffix.lstrip(".") or "unknown"))
    if spacing is not None and fmt not in GEOMETRY_FREE_FORMATS:
        spacing = resolve_spacing((None, None, None), spacing, str(path))
        log.warning("%s: overriding the file's voxel size %s with %s", path, tuple(geometry[0]), spacing)
        geometry = (spacing, geometry[1], geometry[2])
    return array, geometry, fmt, path  # type: ignore[return-value]


def read_volume(path: Path | str, spacing: Optional[Sequence[float]] = None) -> Volume:
    """Read a 3D scalar volume with its exact geometry.

    ``spacing`` = (si, sj, sk) mm is the voxel size for slice stacks and ``.npy`` (it wins over TIFF
    metadata); for formats that store geometry it overrides the stored voxel size (logged).
    The array may be a read-only memory map of the file (raw NRRD/MetaImage, plain TIFF stacks, ``.npy``).
    RGB/RGBA voxels (photographs of serial sections) become BT.601 luminance, with a logged warning and a
    note in ``meta["notes"]`` (and ``meta["colour_conversion"]``). Raises :class:`InputError` for a
    missing/unreadable input or one that is not 3D, is a vector image, holds NaN/Inf, is empty or is constant.
    """
    array, (sp, origin, direction), fmt, path = _read_raw(path, spacing)
    meta = {"source_path": str(path), "source_format": fmt}
    if is_colour(array):
        array, note = to_luminance(array, str(path))
        log.warning("%s", note)
        meta.update(notes=[note], colour_conversion={"from": "RGBA" if note.find("RGBA") >= 0 else "RGB",
                                                      "weights": list(LUMA_WEIGHTS), "standard": LUMA_STANDARD})
    validate_array(array, str(path))
    release_pages(array)  # validation touched every page of a mapped input; they are read again as needed
    return Volume(array, sp, origin, direction, meta=meta)


def is_colour(array: np.ndarray) -> bool:
    """True for a ``[k, j, i, 3|4]`` RGB(A) array as the readers return colour stacks."""
    return array.ndim == 4 and array.shape[-1] in (3, 4)


def _geometry_text(v: Volume) -> str:
    def fmt(values: Sequence[float]) -> str:
        return "(" + ", ".join(f"{x:.6g}" for x in values) + ")"

    return f"size {v.shape[::-1]}, spacing {fmt(v.spacing)}, origin {fmt(v.origin)}, direction {fmt(v.direction)}"


def geometry_matches(a: Volume, b: Volume, rel_tol: float = 1e-4) -> bool:
    """Same shape, with spacing/origin equal to ``rel_tol`` x the smallest voxel size and direction to ``rel_tol``."""
    tol = rel_tol * min(min(a.spacing), min(b.spacing))
    return a.same_geometry(b, tol=tol) and np.allclose(a.direction, b.direction, atol=rel_tol, rtol=0)


def read_labelmap(path: Path | str, like: Optional[Volume] = None) -> Volume:
    """Read an integer labelmap (0 = background); with ``like``, its geometry must match ``like``'s.

    A float file whose values are all whole non-negative numbers is accepted (converted to uint8/uint16).
    Labelmaps from formats without geometry (``.npy``, TIFF/PNG) take ``like``'s geometry.
    """
    geometry_free_spacing = like.spacing if like is not None else None
    path = Path(path)
    is_geometry_free = path.is_dir() or _suffix(path) in TIFF_SUFFIXES + (".npy",)
    array, (sp, origin, direction), fmt, path = _read_raw(path, geometry_free_spacing if is_geometry_free else None)
    if is_colour(array):
        raise InputError(f"labelmap {path} has RGB/RGBA pixels ({array.shape[-1]} components); need integer labels")
    check_shape(tuple(array.shape), str(path))
    array = _as_labels(array, path)
    labels = Volume(array, sp, origin, direction, meta={"source_path": str(path), "source_format": fmt})
    if like is None:
        return labels
    if fmt in GEOMETRY_FREE_FORMATS and labels.shape == like.shape:
        labels = like.with_array(array, source_path=str(path), source_format=fmt)
    if not geometry_matches(labels, like):
        raise InputError(
            f"labelmap {path} does not match the volume's geometry: labelmap {_geometry_text(labels)}; "
            f"volume {_geometry_text(like)}"
        )
    return labels


def _as_labels(array: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.signedinteger) and array.size and array.min() < 0:
            raise InputError(f"labelmap {path} has negative labels (minimum {array.min()}); labels must be >= 0")
        return array
    if np.issubdtype(array.dtype, np.floating):
        whole = array.size and all(np.isfinite(s).all() and s.min() >= 0 and np.array_equal(s, np.round(s))
                                   for s in iter_slabs(array))  # a slab at a time: no full-size temporaries
        if whole:
            top = array.max()
            out_type = np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.uint32
            log.info("labelmap %s stored as %s; converted to %s", path, array.dtype, np.dtype(out_type))
            return array.astype(out_type)
    raise InputError(f"labelmap {path} has {array.dtype} voxels that are not whole non-negative numbers; need integer labels")


def to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image (one copy of the voxels) with the volume's geometry."""
    array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(volume.direction)
    return image


def write_volume(volume: Volume, path: Path | str, force: bool = False) -> Path:
    """Write ``volume`` compressed and atomically; the format follows the extension (WRITE_SUFFIXES).

    NRRD is written a few slices at a time (gzip level 1, no full-size temporary); other formats go through
    SimpleITK (one copy of the voxels).
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".seg.nrrd") or not name.endswith(WRITE_SUFFIXES):
        raise OutputError(f"cannot write {path}: unsupported extension for a volume; use one of {', '.join(WRITE_SUFFIXES)}")
    check_can_write(path, force)
    if name.endswith(".nrrd"):
        with atomic_path(path, force) as tmp:
            try:
                write_nrrd(tmp, volume.array, volume_fields(volume.spacing, volume.origin, volume.direction))
            except OSError as exc:
                raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return path
    image = to_sitk(volume)
    with atomic_path(path, force) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=True)
        except RuntimeError as exc:
            raise OutputError(f"cannot write {path}: {short_itk_reason(exc)}") from exc
    return path
