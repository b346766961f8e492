"""Issue 5 on a real MRML scene: edited slices are detected, learning never changes corrected slices,
uncertainty becomes a scalar volume node and slices are ranked by it."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _slicer_fixture import close_scene, make_scene  # noqa: E402

slicer = pytest.importorskip("slicer")

from fossilsegment_engine.errors import Cancelled, InputError  # noqa: E402
from fossilsegment_engine.finetune.learn import LearnOptions  # noqa: E402
from FossilSegmentLib.logic import FossilSegmentLogic  # noqa: E402
from FossilSegmentLib.corrections import HASH_ATTRIBUTE  # noqa: E402

FAST = dict(minIslandVoxels=0, fillHoles=False, device="cpu")
TUNE = LearnOptions(max_minutes=1.0, finetune_steps=3, device="cpu")
OBLIQUE = np.array([[0.0, -0.6, 0.0, 10.0], [0.7, 0.0, 0.0, -5.0], [0.0, 0.0, 1.5, 3.0], [0, 0, 0, 1.0]])


@pytest.fixture
def scene():
    s = make_scene()
    yield s
    close_scene(s)


def ct() -> np.ndarray:
    rng = np.random.default_rng(3)
    a = rng.normal(1000, 150, (8, 32, 40))
    a[2:6, 8:22, 10:30] += 2500
    return a.astype(np.int16)


def segmented(logic, model):
    volumeNode = slicer.util.addVolumeFromArray(ct(), OBLIQUE, name="ct")
    segNode = logic.process(volumeNode, model=model, **FAST)
    return volumeNode, segNode


def paint(logic, segNode, volumeNode, classes, k, value):
    """Simulate a user edit: slice k of the class labelmap set to ``value`` on a block, re-imported."""
    labels = logic.segmentationLabelArray(segNode, volumeNode, classes)
    labels[k, 5:25, 5:35] = value
    logic._importLabelmap(labels, volumeNode, segNode, classes)
    return labels


@pytest.mark.slow
def test_edited_slices_are_proposed(scene, tiny_model_dir):
    logic = FossilSegmentLogic()
    volumeNode, segNode = segmented(logic, str(tiny_model_dir))
    classes = logic.lastClasses
    assert segNode.GetAttribute(HASH_ATTRIBUTE)
    assert logic.changedSlices(segNode, volumeNode, classes) == []
    paint(logic, segNode, volumeNode, classes, 3, 1)
    paint(logic, segNode, volumeNode, classes, 6, 0)
    assert logic.changedSlices(segNode, volumeNode, classes) == [3, 6]


@pytest.mark.slow
def test_learning_never_changes_corrected_slices(scene, tiny_model_dir):
    logic = FossilSegmentLogic()
    volumeNode, segNode = segmented(logic, str(tiny_model_dir))
    classes = logic.lastClasses
    user = paint(logic, segNode, volumeNode, classes, 2, 1)
    user = paint(logic, segNode, volumeNode, classes, 5, 1)
    user[5, 10:12, 10:12] = 0  # a hole the model would hardly draw
    logic._importLabelmap(user, volumeNode, segNode, classes)
    notes = segNode.GetSegmentation().AddEmptySegment("", "My notes", [0.1, 0.2, 0.3])
    before = logic.segmentationLabelArray(segNode, volumeNode, classes)
    calls = []
    out = logic.learnFromCorrections(volumeNode, segNode, [2, 5], model=str(tiny_model_dir), device="cpu",
                                     progress=lambda d, t: calls.append(d), learnOptions=TUNE,
                                     minIslandVoxels=0, fillHoles=False)
    assert out is segNode and notes in segNode.GetSegmentation().GetSegmentIDs()
    after = logic.segmentationLabelArray(segNode, volumeNode, classes)
    assert np.array_equal(after[[2, 5]], before[[2, 5]])  # bit-identical
    others = [k for k in range(after.shape[0]) if k not in (2, 5)]
    assert not np.array_equal(after[others], before[others])  # the rest was re-segmented by the new model
    assert calls and calls == sorted(calls) and calls[-1] == 1000
    cfg = logic.finetuned[1]
    assert cfg.provenance["finetune"]["slices"] == [2, 5]
    assert logic.changedSlices(segNode, volumeNode, classes) == []  # the merged result is the new reference


@pytest.mark.slow
def test_learning_cancel_and_bad_input(scene, tiny_model_dir):
    logic = FossilSegmentLogic()
    volumeNode, segNode = segmented(logic, str(tiny_model_dir))
    classes = logic.lastClasses
    paint(logic, segNode, volumeNode, classes, 4, 1)
    before = logic.segmentationLabelArray(segNode, volumeNode, classes)
    token = threading.Event()
    with pytest.raises(Cancelled):
        logic.learnFromCorrections(volumeNode, segNode, [4], model=str(tiny_model_dir), device="cpu",
                                   progress=lambda d, t: token.set(), cancel=token, learnOptions=TUNE)
    assert np.array_equal(logic.segmentationLabelArray(segNode, volumeNode, classes), before)
    with pytest.raises(InputError, match="mark at least one"):
        logic.learnFromCorrections(volumeNode, segNode, [], model=str(tiny_model_dir), learnOptions=TUNE)
    with pytest.raises(InputError, match="outside the volume"):
        logic.learnFromCorrections(volumeNode, segNode, [4, 99], model=str(tiny_model_dir), learnOptions=TUNE)


def test_slice_index_and_centre_roundtrip(scene):
    logic = FossilSegmentLogic()
    volumeNode = slicer.util.addVolumeFromArray(ct(), OBLIQUE, name="ct")
    for k in (0, 3, 7):
        assert logic.sliceIndexAtRAS(volumeNode, logic.sliceCenterRAS(volumeNode, k)) == k
    with pytest.raises(InputError, match="outside the volume"):
        logic.sliceIndexAtRAS(volumeNode, logic.sliceCenterRAS(volumeNode, 20))


def test_slices_under_a_parent_transform(scene):
    logic = FossilSegmentLogic()
    volumeNode = slicer.util.addVolumeFromArray(ct(), OBLIQUE, name="ct")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    toParent = np.array([[0.0, 0.0, 1.0, 30.0], [0.0, 1.0, 0.0, -7.0], [-1.0, 0.0, 0.0, 2.0], [0, 0, 0, 1.0]])
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(toParent))
    volumeNode.SetAndObserveTransformNodeID(transform.GetID())
    dims = volumeNode.GetImageData().GetDimensions()
    for k in (0, 3, 7):
        world = toParent @ OBLIQUE @ np.array([(dims[0] - 1) / 2, (dims[1] - 1) / 2, k, 1.0])
        assert np.allclose(logic.sliceCenterRAS(volumeNode, k), world[:3])
        assert logic.sliceIndexAtRAS(volumeNode, world[:3]) == k
    normal = toParent[:3, :3] @ OBLIQUE[:3, 2]
    assert np.allclose(logic.sliceNormalRAS(volumeNode), normal / np.linalg.norm(normal))
    view = np.eye(4)
    view[:3, 2] = -normal / np.linalg.norm(normal)  # a view looking along K (either way)
    view[:3, 3] = logic.sliceCenterRAS(volumeNode, 5)
    assert logic.sliceIndexInView(volumeNode, view) == 5
    view[:3, 2] = toParent[:3, :3] @ OBLIQUE[:3, 0] / np.linalg.norm(OBLIQUE[:3, 0])  # a view across the slices
    with pytest.raises(InputError, match="not parallel"):
        logic.sliceIndexInView(volumeNode, view)


def test_uncertainty_node_and_suggestions(scene, tiny_model_dir):
    logic = FossilSegmentLogic()
    volumeNode = slicer.util.addVolumeFromArray(ct(), OBLIQUE, name="ct")
    volume = logic.prepareInput(volumeNode)
    unc = logic.runUncertainty(volume, model=str(tiny_model_dir), device="cpu", method="softmax")
    node = logic.showUncertainty(unc, volumeNode)
    assert node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode")
    assert np.array_equal(slicer.util.arrayFromVolume(node), unc.array)
    m1, m2 = (slicer.util.arrayFromVTKMatrix(_ijk(n)) for n in (node, volumeNode))
    np.testing.assert_allclose(m1, m2, atol=1e-9)
    ranking = logic.suggestSlices(node, exclude=[0])
    means = unc.array.reshape(8, -1).mean(1)
    assert 0 not in ranking and len(ranking) == 7 and ranking[0] == int(np.argmax(means[1:]) + 1)
    assert logic.showUncertainty(unc, volumeNode, node) is node  # updated in place
    # the region Apply segments (ROI box ∩ slice range): uncertainty there only, suggestions inside it
    from fossilsegment_engine.roi import Box

    part = logic.runUncertainty(volume, model=str(tiny_model_dir), device="cpu", method="softmax",
                                sliceRange=(2, 6), roi=Box(1, 5, 2, 9, 3, 10))
    assert part.array[2:5, 2:9, 3:10].mean() > 0
    assert np.allclose(part.array[2:5, 2:9, 3:10], unc.array[2:5, 2:9, 3:10], atol=0.05)
    rest = part.array.copy()
    rest[2:5, 2:9, 3:10] = 0
    assert not rest.any()
    assert logic.suggestSlices(part)[:3] == sorted(range(2, 5), key=lambda k: -part.array[k].mean())
    with pytest.raises(InputError, match="share no slice"):
        logic.runUncertainty(volume, model=str(tiny_model_dir), device="cpu", sliceRange=(6, 8), roi=Box(1, 5, 0, 4, 0, 4))


def _ijk(node):
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return m
