"""Small builders shared by the io tests: oblique volumes, DICOM series, slice folders."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from fossilsegment_engine.volume import Volume


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """A proper rotation (det +1) from three angles in degrees."""
    x, y, z = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


OBLIQUE = tuple(rotation(20, -35, 50).ravel())
SPACING = (0.3, 0.45, 1.7)
ORIGIN = (-12.5, 33.25, 104.125)


def oblique_volume(shape: tuple[int, int, int] = (8, 9, 10), dtype: type = np.uint16, seed: int = 0) -> Volume:
    """Random voxels on an oblique, anisotropic grid with a non-zero origin."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 4000, size=shape).astype(dtype)
    return Volume(array, SPACING, ORIGIN, OBLIQUE)


def write_dicom_series(volume: Volume, folder: Path, series_uid: str, description: str = "test") -> None:
    """One DICOM file per axial slice with position/orientation tags, as SimpleITK's DICOM series example."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(volume.direction)
    d = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")
    tags = [
        ("0008|0031", time.strftime("%H%M%S")),
        ("0008|0021", time.strftime("%Y%m%d")),
        ("0008|0008", "DERIVED\\SECONDARY"),
        ("0020|000e", series_uid),
        ("0020|0037", "\\".join(f"{c:.10f}" for c in (d[0], d[3], d[6], d[1], d[4], d[7]))),
        ("0008|103e", description),
        ("0018|0050", f"{volume.spacing[2]}"),
    ]
    for k in range(image.GetDepth()):
        sl = image[:, :, k]
        for tag, value in tags:
            sl.SetMetaData(tag, value)
        sl.SetMetaData("0020|0032", "\\".join(f"{c:.6f}" for c in image.TransformIndexToPhysicalPoint((0, 0, k))))
        sl.SetMetaData("0020|0013", str(k + 1))
        writer.SetFileName(str(folder / f"{series_uid[-6:]}_{k}"))  # no extension, like many scanners
        writer.Execute(sl)


def ball(shape: tuple[int, int, int] = (40, 40, 40), radius: float = 12.0, center: tuple[float, ...] | None = None) -> np.ndarray:
    """uint8 0/1 voxelised ball indexed [k, j, i]."""
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    c = center or tuple((s - 1) / 2 for s in shape)
    return (((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) <= radius**2).astype(np.uint8)
