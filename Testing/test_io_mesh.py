"""STL export: closed, outward, right volume, in physical (LPS) millimetres for oblique grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import vtk
from vtk.util import numpy_support

from _helpers_io import OBLIQUE, ball
from fossilsegment_engine.errors import OutputError
from fossilsegment_engine.io import labelmap_to_polydata, write_stl_folder
from fossilsegment_engine.volume import Volume

SPACING = (0.5, 0.7, 1.3)
ORIGIN = (10.0, -20.0, 30.0)
CLASSES = [{"value": 1, "name": "Bone", "color": [0.89, 0.85, 0.79]}, {"value": 2, "name": "Tooth", "color": [1, 1, 0.8]}]


def _read_stl(path: Path) -> vtk.vtkPolyData:
    reader = vtk.vtkSTLReader()
    reader.SetFileName(str(path))
    reader.Update()
    return reader.GetOutput()


def _open_edges(mesh: vtk.vtkPolyData) -> int:
    edges = vtk.vtkFeatureEdges()
    edges.SetInputData(mesh)
    edges.BoundaryEdgesOn()
    edges.NonManifoldEdgesOn()
    edges.FeatureEdgesOff()
    edges.ManifoldEdgesOff()
    edges.Update()
    return edges.GetOutput().GetNumberOfCells()


def _signed_volume(mesh: vtk.vtkPolyData) -> float:
    """Divergence-theorem volume: positive only when triangles wind outwards."""
    points = numpy_support.vtk_to_numpy(mesh.GetPoints().GetData()).astype(float)
    tri = numpy_support.vtk_to_numpy(mesh.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    a, b, c = points[tri[:, 0]], points[tri[:, 1]], points[tri[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6)


def _physical_corners(vol: Volume) -> np.ndarray:
    n = np.array(vol.shape[::-1]) - 1
    corners = np.array([[i, j, k, 1] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])], dtype=float)
    return (vol.ijk_to_lps() @ corners.T).T[:, :3]


@pytest.mark.parametrize("direction", [OBLIQUE, (1, 0, 0, 0, -1, 0, 0, 0, 1)], ids=["oblique", "left-handed"])
def test_stl_of_ball_is_closed_outward_and_right_size(tmp_path: Path, direction: tuple) -> None:
    labels = np.zeros((40, 40, 40), dtype=np.uint8)
    labels[ball((40, 40, 40), 12.0) == 1] = 1
    labels[2:6, 30:36, 30:37] = 2  # a small box: the second segment
    vol = Volume(labels, SPACING, ORIGIN, direction)
    paths = write_stl_folder(vol, CLASSES, tmp_path / "stl")
    assert [p.name for p in paths] == ["Bone.stl", "Tooth.stl"]
    assert sorted(p.name for p in (tmp_path / "stl").iterdir()) == ["Bone.stl", "Tooth.stl"]
    assert (tmp_path / "stl" / "Bone.stl").read_bytes().startswith(b"SPACE=LPS")

    mesh = _read_stl(paths[0])
    voxel_volume = (labels == 1).sum() * np.prod(SPACING)
    mass = vtk.vtkMassProperties()
    mass.SetInputData(mesh)
    mass.Update()
    assert mass.GetVolume() == pytest.approx(voxel_volume, rel=0.03)
    assert _signed_volume(mesh) == pytest.approx(voxel_volume, rel=0.03)  # outward normals
    assert _open_edges(mesh) == 0

    # Points lie inside the volume's physical box, and the ball's centre maps through the full matrix.
    corners = _physical_corners(vol)
    points = numpy_support.vtk_to_numpy(mesh.GetPoints().GetData())
    assert np.all(points.min(axis=0) >= corners.min(axis=0) - 1e-6)
    assert np.all(points.max(axis=0) <= corners.max(axis=0) + 1e-6)
    centre = (vol.ijk_to_lps() @ np.array([19.5, 19.5, 19.5, 1.0]))[:3]
    np.testing.assert_allclose(points.mean(axis=0), centre, atol=0.3)


def test_ras_coordinates_flip_x_and_y() -> None:
    vol = Volume(ball((20, 20, 20), 6.0), SPACING, ORIGIN, OBLIQUE)
    lps = numpy_support.vtk_to_numpy(labelmap_to_polydata(vol, 1).GetPoints().GetData())
    ras = numpy_support.vtk_to_numpy(labelmap_to_polydata(vol, 1, coordinates="RAS").GetPoints().GetData())
    np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-5)


def test_empty_labelmap_writes_nothing(tmp_path: Path) -> None:
    vol = Volume(np.zeros((8, 8, 8), dtype=np.uint8))
    with pytest.raises(OutputError, match="no foreground to mesh"):
        write_stl_folder(vol, CLASSES, tmp_path / "stl")
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_needs_force(tmp_path: Path) -> None:
    folder = tmp_path / "stl"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    vol = Volume(ball((16, 16, 16), 5.0))
    with pytest.raises(OutputError, match="exists"):
        write_stl_folder(vol, CLASSES, folder)
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]
    write_stl_folder(vol, CLASSES, folder, force=True)
    assert [p.name for p in folder.iterdir()] == ["Bone.stl"]
