"""Closed surface meshes (STL) from a labelmap, made the way Slicer makes them.

Pipeline (as Slicer's binary-labelmap → closed-surface rule): pad the segment's bounding box by one
voxel, vtkDiscreteFlyingEdges3D, optional vtkDecimatePro, vtkWindowedSincPolyDataFilter with pass band
``10 ** (-4 * smoothing)`` and ``20 + 40 * smoothing`` iterations, then the full IJK → LPS matrix
(spacing, direction, origin). Meshes are in
millimetres, in **LPS** by default (what Slicer writes; the STL header says ``SPACE=LPS``), or RAS.
Triangles wind counter-clockwise seen from outside, so normals point out of the material.

Beyond STL folders (:func:`write_stl_folder`), :func:`build_meshes` + :func:`export_meshes` write each
segment as STL (binary), PLY (binary) and/or OBJ with a JSON report per mesh (:mod:`.mesh_report`) and an
optional ``provenance.json`` sidecar, refusing meshes above a triangle limit before anything is written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import vtk
from vtk.util import numpy_support

from ..atomic import atomic_dir, check_can_write
from ..errors import FossilSegmentError, OutputError
from ..volume import Volume
from .segmentation_io import segment_specs

COORDINATES = ("LPS", "RAS")
MESH_FORMATS = ("stl", "ply", "obj")


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
        smoother.SetNumberOfIterations(int(20 + 40 * float(smoothing)))  # as Slicer 5.x: 40 at the default 0.5
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
    # Point normals for shading (PLY/OBJ, snapshots). Flying edges already winds every triangle
    # consistently (outwards), so the costly consistency pass Slicer runs here (about half of the
    # export time) would change nothing: it is off.
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(last.GetOutputPort())
    normals.ConsistencyOff()
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


class MeshTooLargeError(OutputError):
    """A mesh has more triangles than the user's limit (nothing was written)."""


@dataclass(frozen=True)
class MeshOptions:
    """How meshes are made and written. Defaults are Slicer's (smoothing 0.5, no decimation, LPS, STL)."""

    formats: tuple[str, ...] = ("stl",)
    coordinates: str = "LPS"
    smoothing: float = 0.5
    decimation: float = 0.0
    max_triangles: int | None = None

    def __post_init__(self) -> None:
        formats = tuple(dict.fromkeys(f.lower().strip().lstrip(".") for f in self.formats))
        bad = [f for f in formats if f not in MESH_FORMATS]
        if not formats or bad:
            raise FossilSegmentError(f"mesh format must be among {', '.join(MESH_FORMATS)}, got {list(self.formats)}")
        object.__setattr__(self, "formats", formats)
        coordinates = str(self.coordinates).upper()
        if coordinates not in COORDINATES:
            raise FossilSegmentError(f"mesh coordinates must be LPS or RAS, got {self.coordinates!r}")
        object.__setattr__(self, "coordinates", coordinates)
        for name in ("smoothing", "decimation"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0 or (name == "decimation" and value >= 1.0):
                raise FossilSegmentError(f"mesh {name} must be between 0 and 1 (decimation below 1), got {value}")
            object.__setattr__(self, name, value)
        if self.max_triangles is not None and (isinstance(self.max_triangles, bool) or int(self.max_triangles) < 1):
            raise FossilSegmentError(f"maximum mesh triangles must be a positive integer, got {self.max_triangles!r}")

    def to_json(self) -> dict[str, Any]:
        """The options as a JSON-ready dict (for provenance)."""
        return {"formats": list(self.formats), "coordinates": self.coordinates, "smoothing": self.smoothing,
                "decimation": self.decimation, "max_triangles": self.max_triangles}


def parse_formats(values: Sequence[str] | str | None) -> tuple[str, ...]:
    """``["stl,ply", "obj"]`` → ``("stl", "ply", "obj")``; None or empty → ``("stl",)``."""
    if isinstance(values, str):
        values = [values]
    out = [v for value in (values or []) for v in str(value).split(",") if v.strip()]
    return MeshOptions(formats=tuple(out) if out else ("stl",)).formats


@dataclass
class Mesh:
    """One segment's surface: name, label value, file stem, colour (0–1) and the polydata."""

    name: str
    value: int
    stem: str
    color: list[float]
    polydata: vtk.vtkPolyData = field(repr=False)

    @property
    def triangles(self) -> int:
        """Number of triangles."""
        return int(self.polydata.GetNumberOfPolys())


def build_meshes(labelmap: Volume, classes: Sequence[dict], options: MeshOptions = MeshOptions()) -> list[Mesh]:
    """One :class:`Mesh` per segment present. Raises :class:`OutputError` when there is no foreground and
    :class:`MeshTooLargeError` when a mesh has more than ``options.max_triangles`` triangles."""
    specs = segment_specs(labelmap, classes)
    if not specs:
        raise OutputError("no foreground to mesh: the labelmap has no non-zero labels; no mesh written")
    meshes: list[Mesh] = []
    stems: set[str] = set()
    for spec in specs:
        stem = safe_file_stem(spec["name"])
        stem = f"{stem}_{spec['value']}" if stem in stems else stem
        stems.add(stem)
        poly = labelmap_to_polydata(labelmap, spec["value"], options.smoothing, options.decimation, options.coordinates)
        mesh = Mesh(spec["name"], spec["value"], stem, spec["color"], poly)
        if options.max_triangles is not None and mesh.triangles > options.max_triangles:
            raise MeshTooLargeError(
                f"mesh of segment {mesh.name!r} has {mesh.triangles:,} triangles, more than the limit of "
                f"{options.max_triangles:,}; no mesh written (raise the limit or use decimation, e.g. --decimation 0.8)")
        meshes.append(mesh)
    return meshes


def write_mesh(polydata: vtk.vtkPolyData, path: Path, fmt: str, coordinates: str = "LPS") -> None:
    """Write one mesh: binary STL (``SPACE=`` header, as Slicer), binary PLY (``SPACE=`` comment) or OBJ."""
    if fmt == "stl":
        write_stl(polydata, path, coordinates)
        return
    if fmt == "ply":
        writer = vtk.vtkPLYWriter()
        writer.SetFileTypeToBinary()
        writer.AddComment(f"SPACE={coordinates}")
    elif fmt == "obj":
        writer = vtk.vtkOBJWriter()
    else:
        raise ValueError(f"unknown mesh format {fmt!r}")
    writer.SetInputData(polydata)
    writer.SetFileName(str(path))
    if not writer.Write() or writer.GetErrorCode():
        raise OutputError(f"cannot write {path}: VTK {fmt.upper()} writer error {writer.GetErrorCode()}")


@dataclass
class MeshExport:
    """What :func:`export_meshes` wrote: mesh files, per-mesh reports and the sidecar (if any)."""

    folder: Path
    files: list[Path]
    reports: list[dict[str, Any]]
    sidecar: Path | None = None


def export_meshes(
    labelmap: Volume,
    classes: Sequence[dict],
    folder: Path | str,
    options: MeshOptions = MeshOptions(),
    force: bool = False,
    provenance: dict[str, Any] | None = None,
    meshes: Sequence[Mesh] | None = None,
) -> MeshExport:
    """Write every segment's mesh in each requested format, a ``<stem>.report.json`` per mesh and, with
    ``provenance``, ``provenance.json`` (provenance + mesh options + reports) into ``folder``, atomically.

    ``meshes`` (from :func:`build_meshes` with the same options) avoids meshing twice. Errors (existing
    folder without ``force``, no foreground, a mesh over the triangle limit) come before anything is written.
    """
    from .mesh_report import mesh_report

    folder = Path(folder)
    check_can_write(folder, force)
    meshes = list(meshes) if meshes is not None else build_meshes(labelmap, classes, options)
    voxel_mm3 = float(np.prod(labelmap.spacing))
    files: list[Path] = []
    reports: list[dict[str, Any]] = []
    with atomic_dir(folder, force) as tmp:
        for mesh in meshes:
            names = [f"{mesh.stem}.{fmt}" for fmt in options.formats]
            for fmt, name in zip(options.formats, names):
                write_mesh(mesh.polydata, tmp / name, fmt, options.coordinates)
            voxels = int(np.count_nonzero(labelmap.array == mesh.value))
            report = {"segment": mesh.name, "label_value": mesh.value, "files": names,
                      "coordinates": options.coordinates, "voxel_volume_mm3": voxels * voxel_mm3,
                      **mesh_report(mesh.polydata)}
            _write_json(tmp / f"{mesh.stem}.report.json", report)
            reports.append(report)
            files += [folder / n for n in names]
        sidecar = None
        if provenance is not None:
            _write_json(tmp / "provenance.json", {**provenance, "mesh_options": options.to_json(), "meshes": reports})
            sidecar = folder / "provenance.json"
    return MeshExport(folder, files, reports, sidecar)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
