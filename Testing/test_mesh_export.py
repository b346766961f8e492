"""Mesh export: STL/PLY/OBJ in mm, reports, provenance sidecar, triangle limit, empty labelmaps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import vtk
from vtk.util import numpy_support

from _helpers_io import OBLIQUE, ball
from fossilsegment_engine.errors import FossilSegmentError, OutputError
from fossilsegment_engine.io.mesh_io import (MeshOptions, MeshTooLargeError, build_meshes, export_meshes,
                                             parse_formats)
from fossilsegment_engine.io.mesh_report import mesh_report
from fossilsegment_engine.volume import Volume

SPACING = (0.5, 0.7, 1.3)
CLASSES = [{"value": 1, "name": "Bone", "color": [0.89, 0.85, 0.79]}, {"value": 2, "name": "Tooth", "color": [1, 1, 0.8]}]


def _labels() -> Volume:
    labels = np.zeros((30, 30, 30), dtype=np.uint8)
    labels[ball((30, 30, 30), 9.0) == 1] = 1
    labels[2:6, 24:28, 24:28] = 2  # a box: the second segment
    labels[24:27, 2:5, 2:5] = 2  # a second, separate box of the same segment
    return Volume(labels, SPACING, (10.0, -20.0, 30.0), OBLIQUE)


def _read(path: Path) -> vtk.vtkPolyData:
    reader = {".stl": vtk.vtkSTLReader, ".ply": vtk.vtkPLYReader, ".obj": vtk.vtkOBJReader}[path.suffix]()
    reader.SetFileName(str(path))
    reader.Update()
    return reader.GetOutput()


def test_formats_reports_and_sidecar(tmp_path: Path) -> None:
    vol = _labels()
    options = MeshOptions(formats=("stl", "ply", "obj"))
    export = export_meshes(vol, CLASSES, tmp_path / "m", options, provenance={"model": "m1", "date": "today"})
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == ["Bone.obj", "Bone.ply", "Bone.report.json", "Bone.stl", "Tooth.obj", "Tooth.ply",
                     "Tooth.report.json", "Tooth.stl", "provenance.json"]
    bone, tooth = export.reports
    voxel_mm3 = float((vol.array == 1).sum() * np.prod(SPACING))
    assert bone["volume_mm3"] == pytest.approx(voxel_mm3, rel=0.03)
    assert bone["voxel_volume_mm3"] == pytest.approx(voxel_mm3)
    assert bone["watertight"] and bone["connected_components"] == 1
    assert tooth["connected_components"] == 2
    assert bone["surface_area_mm2"] > 0
    mesh = build_meshes(vol, CLASSES)[0].polydata  # point normals point outwards (away from the ball's centre)
    points = numpy_support.vtk_to_numpy(mesh.GetPoints().GetData())
    normals = numpy_support.vtk_to_numpy(mesh.GetPointData().GetNormals())
    outward = np.einsum("ij,ij->i", normals, points - points.mean(axis=0))
    assert (outward > 0).mean() > 0.99
    sidecar = json.loads((tmp_path / "m" / "provenance.json").read_text())
    assert sidecar["model"] == "m1" and sidecar["mesh_options"]["smoothing"] == 0.5
    assert [m["segment"] for m in sidecar["meshes"]] == ["Bone", "Tooth"]
    # the same surface in every format: equal point sets up to STL's float32 storage
    stl, ply, obj = (_read(tmp_path / "m" / f"Bone.{f}") for f in ("stl", "ply", "obj"))
    for mesh in (ply, obj):
        assert mesh.GetNumberOfPolys() == stl.GetNumberOfPolys() == bone["triangles"]
    assert (tmp_path / "m" / "Bone.ply").read_bytes().find(b"SPACE=LPS") > 0
    pts_ply = numpy_support.vtk_to_numpy(ply.GetPoints().GetData())
    np.testing.assert_allclose(np.sort(pts_ply, axis=0),
                               np.sort(numpy_support.vtk_to_numpy(obj.GetPoints().GetData()), axis=0), atol=1e-4)


def test_ras_option_and_decimation(tmp_path: Path) -> None:
    vol = _labels()
    lps = build_meshes(vol, CLASSES)[0].polydata
    ras = build_meshes(vol, CLASSES, MeshOptions(coordinates="ras"))[0].polydata
    np.testing.assert_allclose(numpy_support.vtk_to_numpy(ras.GetPoints().GetData()),
                               numpy_support.vtk_to_numpy(lps.GetPoints().GetData()) * [-1, -1, 1], atol=1e-5)
    fewer = build_meshes(vol, CLASSES, MeshOptions(decimation=0.7))[0]
    assert fewer.triangles < 0.5 * lps.GetNumberOfPolys()
    export = export_meshes(vol, CLASSES, tmp_path / "r", MeshOptions(coordinates="RAS"))
    assert (tmp_path / "r" / "Bone.stl").read_bytes().startswith(b"SPACE=RAS")
    assert export.sidecar is None and not (tmp_path / "r" / "provenance.json").exists()


def test_triangle_limit_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(MeshTooLargeError, match="more than the limit of 100"):
        export_meshes(_labels(), CLASSES, tmp_path / "m", MeshOptions(max_triangles=100))
    assert list(tmp_path.iterdir()) == []


def test_empty_labelmap_writes_no_mesh(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="no foreground to mesh"):
        export_meshes(Volume(np.zeros((6, 6, 6), np.uint8)), CLASSES, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs", [{"formats": ("stl", "gltf")}, {"coordinates": "XYZ"}, {"smoothing": 1.5},
                                    {"decimation": 1.0}, {"max_triangles": 0}])
def test_bad_options_are_refused(kwargs: dict) -> None:
    with pytest.raises(FossilSegmentError):
        MeshOptions(**kwargs)


def test_parse_formats() -> None:
    assert parse_formats(None) == ("stl",)
    assert parse_formats(["STL,ply", "obj", "ply"]) == ("stl", "ply", "obj")


def test_report_of_open_mesh_is_not_watertight() -> None:
    plane = vtk.vtkPlaneSource()
    tri = vtk.vtkTriangleFilter()
    tri.SetInputConnection(plane.GetOutputPort())
    tri.Update()
    report = mesh_report(tri.GetOutput())
    assert report["boundary_edges"] > 0 and not report["watertight"]
    assert report["connected_components"] == 1
