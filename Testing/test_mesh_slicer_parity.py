"""Our meshes equal Slicer's closed-surface export (slicer-core): same triangles, same volume, same place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import vtk
from vtk.util import numpy_support

from _helpers_io import OBLIQUE
from fossilsegment_engine.io.mesh_io import MeshOptions, build_meshes
from fossilsegment_engine.volume import Volume

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

CLASSES = [{"value": 1, "name": "Bone", "color": [0.89, 0.85, 0.79]}]


def _labels() -> Volume:
    """A hollow, holed blob (thin walls and struts, where smoothing settings show most) on an oblique grid."""
    k, j, i = np.ogrid[:24, :32, :32]
    r = ((k - 12) / 10.0) ** 2 + ((j - 16) / 13.0) ** 2 + ((i - 16) / 12.0) ** 2
    wave = np.sin(i / 2.0) * np.cos(j / 2.0) + np.sin(j / 2.0) * np.cos(k / 2.0)
    labels = ((r < 1) & ((r > 0.7) | (wave > 0.5))).astype(np.uint8)
    return Volume(labels, (0.4, 0.5, 0.9), (5.0, -3.0, 12.0), OBLIQUE)


def _slicer_mesh(vol: Volume, smoothing: float, decimation: float, tmp: Path) -> vtk.vtkPolyData:
    from _slicer_fixture import add_labelmap_node, close_scene, make_scene

    scene = make_scene()
    try:
        node = add_labelmap_node(scene, vol)
        seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(node, seg)
        seg.GetSegmentation().SetConversionParameter("Smoothing factor", str(smoothing))
        seg.GetSegmentation().SetConversionParameter("Decimation factor", str(decimation))
        assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsClosedSurfaceRepresentationToFiles(
            str(tmp), seg, None, "STL", True, 1.0, False)
    finally:
        close_scene(scene)
    (path,) = tmp.glob("*.stl")
    reader = vtk.vtkSTLReader()
    reader.SetFileName(str(path))
    reader.Update()
    return reader.GetOutput()


def _volume(mesh: vtk.vtkPolyData) -> float:
    mass = vtk.vtkMassProperties()
    mass.SetInputData(mesh)
    mass.Update()
    return mass.GetVolume()


@pytest.mark.parametrize("smoothing, decimation", [(0.5, 0.0), (0.0, 0.0), (0.9, 0.0), (0.5, 0.6)])
def test_mesh_matches_slicer_closed_surface(tmp_path: Path, smoothing: float, decimation: float) -> None:
    vol = _labels()
    theirs = _slicer_mesh(vol, smoothing, decimation, tmp_path)
    ours = build_meshes(vol, CLASSES, MeshOptions(smoothing=smoothing, decimation=decimation))[0].polydata
    assert ours.GetNumberOfPolys() == theirs.GetNumberOfPolys()
    assert _volume(ours) == pytest.approx(_volume(theirs), rel=1e-4)
    a = numpy_support.vtk_to_numpy(ours.GetPoints().GetData())
    b = numpy_support.vtk_to_numpy(theirs.GetPoints().GetData())
    np.testing.assert_allclose(a.mean(axis=0), b.mean(axis=0), atol=1e-3)  # same place, LPS
    np.testing.assert_allclose(np.ptp(a, axis=0), np.ptp(b, axis=0), atol=1e-3)
