"""A Slicer markups ROI → the engine's voxel Box, on a real MRML scene (slicer-core wheel).

Expected boxes are worked out by hand for axis-aligned and 90°-rotated ROIs, and by brute force
(points of the ROI sampled in its own frame, mapped to voxels through the known matrices) for ROIs
rotated against an oblique volume. The Qt panel (selector, 'Fit to volume' button) cannot run here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _slicer_fixture import scene  # noqa: E402,F401 (scene: a fixture)

slicer = pytest.importorskip("slicer")
import vtk  # noqa: E402

from fossilsegment_engine.errors import InputError  # noqa: E402
from fossilsegment_engine.roi import Box  # noqa: E402
from FossilSegmentLib.logic import FossilSegmentLogic  # noqa: E402

SHAPE = (10, 36, 44)  # k, j, i
_ROT = np.array([[np.cos(0.5236), -np.sin(0.5236), 0], [np.sin(0.5236), np.cos(0.5236), 0], [0, 0, 1]])
OBLIQUE = np.eye(4)  # rotated 30° about S, axes permuted and flipped, anisotropic, off-origin
OBLIQUE[:3, :3] = _ROT @ np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]]) @ np.diag([0.7, 1.1, 2.5])
OBLIQUE[:3, 3] = [12.5, -7.0, 40.0]
LEFT_HANDED = np.diag([-0.8, 1.0, 1.5, 1.0])
LEFT_HANDED[:3, 3] = [3.0, 1.0, -2.0]


@pytest.fixture
def logic() -> FossilSegmentLogic:
    return FossilSegmentLogic()


def add_volume(matrix: np.ndarray):
    return slicer.util.addVolumeFromArray(np.zeros(SHAPE, np.int16), matrix, name="ct")


def rotation(axis: int, degrees: float) -> np.ndarray:
    """4x4 rotation about the R (0), A (1) or S (2) axis."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    a, b = [n for n in range(3) if n != axis]
    m = np.eye(4)
    m[a, a], m[a, b], m[b, a], m[b, b] = c, -s, s, c
    return m


def add_roi(scene, centre, size, objectToNode: np.ndarray | None = None):
    """A box ROI: ``objectToNode`` sets its orientation (its translation is replaced by ``centre``)."""
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    m = np.eye(4) if objectToNode is None else objectToNode.copy()
    m[:3, 3] = centre
    roi.GetObjectToNodeMatrix().DeepCopy(slicer.util.vtkMatrixFromArray(m))
    roi.SetSize(*size)
    return roi


def brute_force_box(ijkToRAS: np.ndarray, objectToWorld: np.ndarray, size) -> Box | None:
    """Bounding box of the voxels holding points of the ROI (a 7×7×7 grid in its own frame, corners included);
    None when some point falls outside the volume (clipping is checked separately)."""
    axes = [np.linspace(-s / 2, s / 2, 7) for s in size]
    grid = np.stack(np.meshgrid(*axes), -1).reshape(-1, 3)
    world = (objectToWorld @ np.c_[grid, np.ones(len(grid))].T)
    ijk = np.rint(np.linalg.solve(ijkToRAS, world)[:3].T).astype(int)
    if np.any(ijk < 0) or np.any(ijk >= np.array(SHAPE[::-1])):
        return None
    lo, hi = ijk.min(axis=0), ijk.max(axis=0) + 1
    return Box(lo[2], hi[2], lo[1], hi[1], lo[0], hi[0])


def test_axis_aligned_roi(scene, logic):
    volumeNode = add_volume(np.eye(4))
    roi = add_roi(scene, (10.0, 12.0, 4.0), (4.0, 6.0, 2.0))  # R 8..12, A 9..15, S 3..5
    assert logic.boxFromROI(volumeNode, roi) == Box(k0=3, k1=6, j0=9, j1=16, i0=8, i1=13)


def test_roi_rotated_90_degrees(scene, logic):
    volumeNode = add_volume(np.eye(4))
    roi = add_roi(scene, (10.0, 12.0, 4.0), (4.0, 6.0, 2.0), rotation(2, 90))  # now R 7..13, A 10..14
    assert logic.boxFromROI(volumeNode, roi) == Box(k0=3, k1=6, j0=10, j1=15, i0=7, i1=14)


def test_roi_aligned_with_oblique_volume_is_exact(scene, logic):
    """An ROI along the volume's own axes covering voxel faces i 4.5..9.5, j 2.5..20.5, k 1.5..4.5 is exactly
    voxels i 5..9, j 3..20, k 2..4 (an axis-aligned world bounding box would take many more)."""
    volumeNode = add_volume(OBLIQUE)
    axes = OBLIQUE[:3, :3] / np.linalg.norm(OBLIQUE[:3, :3], axis=0)
    orientation = np.eye(4)
    orientation[:3, :3] = axes
    centre = (OBLIQUE @ np.array([7.0, 11.5, 3.0, 1.0]))[:3]
    size = np.array([5.0, 18.0, 3.0]) * np.linalg.norm(OBLIQUE[:3, :3], axis=0)
    roi = add_roi(scene, centre, size, orientation)
    assert logic.boxFromROI(volumeNode, roi) == Box(k0=2, k1=5, j0=3, j1=21, i0=5, i1=10)


@pytest.mark.parametrize("degrees", [(0, 0, 0), (0, 0, 90), (20, -35, 50), (90, 45, 0)])
def test_rotated_roi_on_oblique_volume_matches_brute_force(scene, logic, degrees):
    volumeNode = add_volume(OBLIQUE)
    orientation = rotation(0, degrees[0]) @ rotation(1, degrees[1]) @ rotation(2, degrees[2])
    centre = (OBLIQUE @ np.array([20.0, 18.0, 5.0, 1.0]))[:3]
    size = (9.0, 5.0, 4.0)
    roi = add_roi(scene, centre, size, orientation)
    objectToWorld = slicer.util.arrayFromVTKMatrix(roi.GetObjectToWorldMatrix())
    np.testing.assert_allclose(objectToWorld[:3, :3], orientation[:3, :3], atol=1e-9)
    expected = brute_force_box(OBLIQUE, objectToWorld, size)
    assert expected is not None
    assert logic.boxFromROI(volumeNode, roi) == expected


def test_parent_transforms_of_roi_and_volume(scene, logic):
    volumeNode = add_volume(np.eye(4))
    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(np.array(
        [[1, 0, 0, 100.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])))
    volumeNode.SetAndObserveTransformNodeID(shift.GetID())  # voxel (i, j, k) is now at world (i + 100, j, k)
    turn = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    turn.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(rotation(2, 90)))
    roi = add_roi(scene, (12.0, -110.0, 4.0), (4.0, 6.0, 2.0))  # rotated by its parent to centre (110, 12, 4)
    roi.SetAndObserveTransformNodeID(turn.GetID())  # world: R 107..113, A 10..14, S 3..5
    assert logic.boxFromROI(volumeNode, roi) == Box(k0=3, k1=6, j0=10, j1=15, i0=7, i1=14)


def test_non_linear_transform_refused(scene, logic):
    volumeNode = add_volume(np.eye(4))
    roi = add_roi(scene, (10.0, 12.0, 4.0), (4.0, 6.0, 2.0))
    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    volumeNode.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(InputError, match="non-linear"):
        logic.boxFromROI(volumeNode, roi)
    volumeNode.SetAndObserveTransformNodeID(None)
    roi.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(InputError, match="non-linear"):
        logic.boxFromROI(volumeNode, roi)


def test_roi_clipped_outside_and_empty(scene, logic):
    volumeNode = add_volume(OBLIQUE)
    big = add_roi(scene, (OBLIQUE @ np.array([20.0, 18.0, 5.0, 1.0]))[:3], (500.0, 500.0, 500.0))
    assert logic.boxFromROI(volumeNode, big) == Box.whole(SHAPE)
    far = add_roi(scene, (0.0, 0.0, 1000.0), (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match=r"does not overlap volume 'ct' \(RAS "):
        logic.boxFromROI(volumeNode, far)
    unplaced = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    with pytest.raises(InputError, match="no size"):
        logic.boxFromROI(volumeNode, unplaced)


@pytest.mark.parametrize("matrix", [np.eye(4), OBLIQUE, LEFT_HANDED])
def test_fit_roi_to_volume_covers_it_exactly(scene, logic, matrix):
    volumeNode = add_volume(matrix)
    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(rotation(0, 33)))
    volumeNode.SetAndObserveTransformNodeID(shift.GetID())
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    logic.fitROIToVolume(roi, volumeNode)
    assert roi.GetParentTransformNode() is shift
    assert logic.boxFromROI(volumeNode, roi) == Box.whole(SHAPE)
    size = roi.GetSize()
    if matrix is not OBLIQUE:  # axes not permuted: sizes in i, j, k order
        np.testing.assert_allclose(size, np.array(SHAPE[::-1]) * np.abs(np.diag(matrix)[:3]), rtol=1e-9)


class RecordingSegmenter:
    """Stands in for the engine: labels every voxel inside the ROI it receives 1 and records the call."""

    classes = [{"value": 0, "name": "Background", "color": [0, 0, 0]},
               {"value": 1, "name": "Bone", "color": [0.9, 0.85, 0.7]}]

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def predict_labels(self, volume, progress=None, cancel=None, postprocess=None, slice_range=None, roi=None, **_):
        self.calls.append(dict(slice_range=slice_range, roi=roi))
        labels = np.zeros(volume.shape, np.uint8)
        labels[roi.slices() if roi is not None else slice(None)] = 1
        return volume.with_array(labels)


@pytest.mark.slow
def test_process_passes_the_roi_box_to_the_engine(scene, logic, tiny_model_dir):
    volumeNode = add_volume(OBLIQUE)
    slicer.util.updateVolumeFromArray(volumeNode, np.random.default_rng(3).normal(1000, 400, SHAPE).astype(np.int16))
    roi = add_roi(scene, (OBLIQUE @ np.array([20.0, 18.0, 5.0, 1.0]))[:3], (9.0, 5.0, 4.0), rotation(2, 90))
    box = logic.boxFromROI(volumeNode, roi)
    options = dict(model=str(tiny_model_dir), device="cpu", minIslandVoxels=0, fillHoles=False)
    job = logic.startSegmentation(volumeNode, roiNode=roi, **options)
    command = job.process.commands[0]
    assert command[command.index("--roi") + 1] == str(box)
    segNode = logic.waitJob()
    expected = logic.runEngine(logic.prepareInput(volumeNode), roi=box, **options)  # the same engine in-process
    labelNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ids = vtk.vtkStringArray()
    bone = next(c for c in logic.classesOf(str(tiny_model_dir)) if c.name == "Bone")
    ids.InsertNextValue(segNode.GetSegmentation().GetSegmentIdBySegmentName("Bone"))
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segNode, ids, labelNode, volumeNode)
    assert np.array_equal(slicer.util.arrayFromVolume(labelNode) > 0, expected.array == bone.value)
    outside = np.ones(SHAPE, bool)
    outside[box.slices()] = False
    assert not expected.array[outside].any()

    fake = RecordingSegmenter()

    logic.runEngine(logic.prepareInput(volumeNode), sliceRange=(box.k0 + 1, SHAPE[0]), roi=box,
                    segmenterFactory=lambda *a: fake)
    assert fake.calls[-1]["roi"] == Box(box.k0 + 1, box.k1, box.j0, box.j1, box.i0, box.i1)
    with pytest.raises(InputError, match="share no slice"):
        logic.runEngine(logic.prepareInput(volumeNode), sliceRange=(0, box.k0), roi=box,
                        segmenterFactory=lambda *a: fake)
