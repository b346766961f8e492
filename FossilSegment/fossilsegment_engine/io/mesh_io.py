"""Closed surface meshes (STL) from a labelmap, made the way Slicer makes them.

Pipeline (as Slicer's binary-labelmap → closed-surface rule): pad the segment's bounding box by one
voxel, vtkDiscreteFlyingEdges3D, optional vtkDecimatePro, vtkWindowedSincPolyDataFilter with pass band
``10 ** (-4 * smoothing)``, then the full IJK → LPS matrix (spacing, direction, origin). Meshes are in
millimetres, in **LPS** by default (what Slicer writes; the STL header says ``SPACE=LPS``), or RAS.
Triangles wind counter-clockwise seen from outside, so normals point out of the material.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import vtk
from vtk.util import numpy_support

from ..atomic import atomic_dir, check_can_write
from ..errors import OutputError
from ..volume import Volume
from .segmentation_io import segment_specs

COORDINATES = ("LPS", "RAS")


def _segment_image(labelmap: Volume, value: int) -> vtk.vtkImageData | None:
    """A uint8 0/1 vtkImageData (IJK units) of the segment's bounding box padded by one voxel, or None if absent."""
    mask = labelmap.array == value
    hit = [np.flatnonzero(mask.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1))]  # k, j, i
    if any(h.size == 0 for h in hit):
        return None
    (k0, k1), (j0, j1), (i0, i1) = ((h[0], h[-1] + 1) for h in hit)
    padded = np.zeros((k1 - k0 + 2, j1 - j0 + 2, i1 - i0 + 2), dtype=bool)
    padded[1:-1, 1:-1, 1:-1] = mask[k0:k1, j0:j1, i0:i1]
    image = vtk.vtkImageData()
    image.SetDimensions(padded.shape[2], padded.shape[1], padded.shape[0])
    image.SetOrigin(i0 - 1.0, j0 - 1.0, k0 - 1.0)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(padded.view(np.uint8).reshape(-1), deep=True))
    return image


def _ijk_to_world(labelmap: Volume, coordinates: str) -> np.ndarray:
    if coordinates not in COORDINATES:
        raise ValueError(f"coordinates must be one of {COORDINATES}, got {coordinates!r}")
    matrix = labelmap.ijk_to_lps()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ matrix if coordinates == "RAS" else matrix


def labelmap_to_polydata(
    labelmap: Volume, value: int, smoothing: float = 0.5, decimation: float = 0.0, coordinates: str = "LPS"
) -> vtk.vtkPolyData:
    """Closed triangle surface (mm, LPS or RAS) of the voxels equal to ``value``; empty polydata if none.

    ``smoothing`` 0..1 as Slicer's smoothing factor; ``decimation`` 0..1 = fraction of triangles removed.
    """
    matrix = _ijk_to_world(labelmap, coordinates)
    image = _segment_image(labelmap, int(value))
    if image is None:
        return vtk.vtkPolyData()
    surface = vtk.vtkDiscreteFlyingEdges3D()
    surface.SetInputData(image)
    surface.SetValue(0, 1)
    surface.ComputeNormalsOff()
    surface.ComputeGradientsOff()
    surface.ComputeScalarsOff()
    last: vtk.vtkAlgorithm = surface
    if decimation > 0:
        decimate = vtk.vtkDecimatePro()
        decimate.SetInputConnection(last.GetOutputPort())
        decimate.SetFeatureAngle(60)
        decimate.SplittingOff()
        decimate.PreserveTopologyOn()
        decimate.SetMaximumError(1)
        decimate.SetTargetReduction(float(decimation))
        last = decimate
    if smoothing > 0:
        smoother = vtk.vtkWindowedSincPolyDataFilter()
        smoother.SetInputConnection(last.GetOutputPort())
        smoother.SetNumberOfIterations(20)
        smoother.BoundarySmoothingOff()
        smoother.FeatureEdgeSmoothingOff()
        smoother.SetFeatureAngle(90.0)
        smoother.NonManifoldSmoothingOn()
        smoother.NormalizeCoordinatesOn()
        smoother.SetPassBand(10.0 ** (-4.0 * float(smoothing)))
        last = smoother
    transform = vtk.vtkTransform()
    transform.SetMatrix(matrix.ravel().tolist())
    to_world = vtk.vtkTransformPolyDataFilter()
    to_world.SetInputConnection(last.GetOutputPort())
    to_world.SetTransform(transform)
    last = to_world
    # Flying edges winds triangles so normals point to lower label values (outwards) in a right-handed
    # grid; a left-handed IJK -> world matrix mirrors the winding, so reverse it back.
    if np.linalg.det(matrix[:3, :3]) < 0:
        reverse = vtk.vtkReverseSense()
        reverse.SetInputConnection(last.GetOutputPort())
        reverse.ReverseCellsOn()
        last = reverse
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(last.GetOutputPort())
    normals.ConsistencyOn()
    normals.SplittingOff()
    normals.AutoOrientNormalsOff()
    normals.Update()
    out = vtk.vtkPolyData()
    out.ShallowCopy(normals.GetOutput())
    return out


def safe_file_stem(name: str) -> str:
    """A segment name usable as a file name on every OS."""
    stem = re.sub(r'[<>:"/\\|?*\x00-\x1f]', "_", name).strip(" .")
    return stem or "segment"


def write_stl(polydata: vtk.vtkPolyData, path: Path, coordinates: str = "LPS") -> None:
    """Binary STL with a ``SPACE=<coordinates>`` header, as Slicer reads and writes."""
    writer = vtk.vtkSTLWriter()
    writer.SetInputData(polydata)
    writer.SetFileName(str(path))
    writer.SetFileTypeToBinary()
    writer.SetHeader(f"SPACE={coordinates}")
    if not writer.Write() or writer.GetErrorCode():
        raise OutputError(f"cannot write {path}: VTK STL writer error {writer.GetErrorCode()}")


def write_stl_folder(
    labelmap: Volume,
    classes: Sequence[dict],
    folder: Path | str,
    force: bool = False,
    coordinates: str = "LPS",
    smoothing: float = 0.5,
    decimation: float = 0.0,
) -> list[Path]:
    """Write one closed binary STL per segment present, named ``<SegmentName>.stl``, in mm (LPS by default).

    The folder appears complete or not at all. Raises :class:`OutputError` if it exists and not
    ``force``, or if the labelmap has no foreground to mesh.
    """
    folder = Path(folder)
    check_can_write(folder, force)
    _ijk_to_world(labelmap, coordinates)  # validate the choice before any work
    specs = segment_specs(labelmap, classes)
    if not specs:
        raise OutputError(f"no foreground to mesh: the labelmap has no non-zero labels; nothing written to {folder}")
    names: dict[str, int] = {}
    with atomic_dir(folder, force) as tmp:
        for spec in specs:
            stem = safe_file_stem(spec["name"])
            stem = f"{stem}_{spec['value']}" if stem in names else stem
            names[stem] = spec["value"]
            mesh = labelmap_to_polydata(labelmap, spec["value"], smoothing, decimation, coordinates)
            write_stl(mesh, tmp / f"{stem}.stl", coordinates)
    return [folder / f"{stem}.stl" for stem in names]
