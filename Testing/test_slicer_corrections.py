"""Issues 5 and 13 on a real MRML scene: edited slices are detected along any axis, slice views along any volume
axis give the slice they show, learning never changes corrected slices (any axis), uncertainty becomes a scalar
volume node and slices are ranked by it."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _slicer_fixture import FAST, OBLIQUE, scene  # noqa: E402,F401 (scene: a fixture)

slicer = pytest.importorskip("slicer")

from fossilsegment_engine.errors import Cancelled, InputError  # noqa: E402
from fossilsegment_engine.finetune.learn import LearnOptions  # noqa: E402
from FossilSegmentLib.logic import FossilSegmentLogic  # noqa: E402
from FossilSegmentLib.corrections import (HASH_ATTRIBUTE, MODEL_RESULT_REFERENCE, attributeChanges,  # noqa: E402
                                          sliceHashes, toSliceRefs)

TUNE = LearnOptions(max_minutes=1.0, finetune_steps=3, device="cpu")


def ct() -> np.ndarray:
    rng = np.random.default_rng(3)
    a = rng.normal(1000, 150, (8, 32, 40))
    a[2:6, 8:22, 10:30] += 2500
    return a.astype(np.int16)


def segmented(logic, model):
    volumeNode = slicer.util.addVolumeFromArray(ct(), OBLIQUE, name="ct")
    segNode = logic.process(volumeNode, model=model, **FAST)
    return volumeNode, segNode


def paint(logic, segNode, volumeNode, classes, k, value, axis=0):
    """Simulate a user edit: slice k (along ``axis``) of the class labelmap set to ``value`` on a block."""
    labels = logic.segmentationLabelArray(segNode, volumeNode, classes)
    block = [slice(1, 7), slice(5, 25), slice(5, 35)]
    block[axis] = k
    labels[tuple(block)] = value
    logic._importLabelmap(labels, volumeNode, segNode, classes)
    return labels


@pytest.mark.slow
def test_edited_slices_are_proposed(scene, tiny_model_dir):
    logic = FossilSegmentLogic()
    volumeNode, segNode = segmented(logic, str(tiny_model_dir))
    classes = logic.lastClasses
    reference = segNode.GetNodeReference(MODEL_RESULT_REFERENCE)
    assert reference is not None and reference.GetHideFromEditors()
    assert logic.changedSlices(segNode, volumeNode, classes) == []
    model = logic.segmentationLabelArray(segNode, volumeNode, classes)
    paint(logic, segNode, volumeNode, classes, 3, 1)
    paint(logic, segNode, volumeNode, classes, 6, 0)
    # a coronal (j) and a sagittal (i) edit, each crossing several axial slices: reported as j/i, not as k
    paint(logic, segNode, volumeNode, classes, 30, 1, axis=1)
    paint(logic, segNode, volumeNode, classes, 2, 1, axis=2)
    now = logic.segmentationLabelArray(segNode, volumeNode, classes)
    assert len({k for k in range(8) if not np.array_equal(now[k], model[k])}) > 3  # the j/i edits touch many k
    assert logic.changedSlices(segNode, volumeNode, classes) == [(0, 3), (0, 6), (1, 30), (2, 2)]
    # a scene saved before issue 13: per-axial-slice hashes only (changed axial slices)
    segNode.RemoveNodeReferenceIDs(MODEL_RESULT_REFERENCE)
    import json

    segNode.SetAttribute(HASH_ATTRIBUTE, json.dumps({"volume": volumeNode.GetID(), "hashes": sliceHashes(model)}))
    changedK = [(0, k) for k in range(8) if not np.array_equal(now[k], model[k])]
    assert logic.changedSlices(segNode, volumeNode, classes) == changedK
    logic.rememberModelResult(segNode, volumeNode, classes)  # the new record replaces the old one
    assert segNode.GetAttribute(HASH_ATTRIBUTE) is None and logic.changedSlices(segNode, volumeNode, classes) == []


def test_changes_are_given_to_the_slices_that_explain_them():
    changed = np.zeros((20, 30, 40), bool)
    assert attributeChanges(changed) == []
    changed[4, 3:20, 5:30] = True  # an axial edit
    assert attributeChanges(changed) == [(0, 4)]
    changed[2:15, 22, 10:35] = True  # a coronal edit crossing 13 axial slices, k4 among them
    changed[6:18, 2:25, 37] = True  # a sagittal edit
    assert attributeChanges(changed) == [(0, 4), (1, 22), (2, 37)]
    blob = np.zeros((20, 30, 40), bool)
    blob[5:8, 10:20, 10:20] = True  # a 3D edit: the slices of its thinnest direction
    assert attributeChanges(blob) == [(0, 5), (0, 6), (0, 7)]
    blob[:] = False
    blob[3, 7, 2:9] = True  # one line: axial first
    assert attributeChanges(blob) == [(0, 3)]


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
    with pytest.raises(InputError, match=r"j40 is outside the volume: its j slices are 0\.\.31"):
        logic.learnFromCorrections(volumeNode, segNode, ["k4", "j40"], model=str(tiny_model_dir), learnOptions=TUNE)
    with pytest.raises(InputError, match="i0 contain no foreground"):
        logic.learnFromCorrections(volumeNode, segNode, ["i0"], model=str(tiny_model_dir), learnOptions=TUNE)
    assert np.array_equal(logic.segmentationLabelArray(segNode, volumeNode, classes), before)


def test_learning_from_slices_along_every_axis(scene, tiny_model_dir):
    logic = FossilSegmentLogic()
    volumeNode, segNode = segmented(logic, str(tiny_model_dir))
    classes = logic.lastClasses
    paint(logic, segNode, volumeNode, classes, 3, 1)
    paint(logic, segNode, volumeNode, classes, 15, 1, axis=1)
    user = paint(logic, segNode, volumeNode, classes, 20, 0, axis=2)  # a sagittal cut through the bone
    refs = logic.changedSlices(segNode, volumeNode, classes)
    assert refs == [(0, 3), (1, 15), (2, 20)]
    logic.learnFromCorrections(volumeNode, segNode, refs, model=str(tiny_model_dir), device="cpu",
                               learnOptions=TUNE, minIslandVoxels=0, fillHoles=False)
    after = logic.segmentationLabelArray(segNode, volumeNode, classes)
    for plane in (np.s_[3], np.s_[:, 15], np.s_[:, :, 20]):  # bit-identical
        assert np.array_equal(after[plane], user[plane])
    assert not np.array_equal(after, user)  # the rest was re-segmented


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
    assert logic.sliceRefInView(volumeNode, view) == (0, 5)
    view[:3, 2] = toParent[:3, :3] @ OBLIQUE[:3, 0] / np.linalg.norm(OBLIQUE[:3, 0])  # along I, under the transform
    view[:3, 3] = logic.sliceCenterRAS(volumeNode, (2, 33))
    assert logic.sliceRefInView(volumeNode, view) == (2, 33)


def rotation(axis, degrees):
    """3x3 rotation about a unit ``axis`` (Rodrigues)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


#: a volume whose IJK axes are turned 30° about (1, 2, 3) from RAS, with anisotropic spacing
TURNED = np.eye(4)
TURNED[:3, :3] = rotation((1, 2, 3), 30) @ np.diag([0.5, 0.7, 1.2])
TURNED[:3, 3] = (10.0, -5.0, 3.0)


def slice_node(scene, orientation):
    node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    node.SetLayoutName(orientation)
    node.SetOrientation(orientation)
    return node


def shown(logic, volumeNode, sliceNode):
    return logic.sliceRefInView(volumeNode, slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS()))


@pytest.mark.parametrize("orientation, axis", [("Axial", 0), ("Coronal", 1), ("Sagittal", 2)])
def test_slice_views_along_each_volume_axis(scene, orientation, axis):
    """Slicer's own "rotate to volume plane" + jump gives a view along one volume axis; the slice it shows is
    found (axis and index), whatever the view was called; the panel's own jump comes back to the same slice."""
    logic = FossilSegmentLogic()
    volumeNode = slicer.util.addVolumeFromArray(ct(), TURNED, name="turned")
    sliceNode = slice_node(scene, orientation)
    sliceNode.RotateToVolumePlane(volumeNode)
    for index in (0, 5, ct().shape[axis] - 1):
        ijk = np.array([7.0, 11.0, 3.0, 1.0])
        ijk[2 - axis] = index
        sliceNode.JumpSliceByCentering(*(TURNED @ ijk)[:3])
        assert shown(logic, volumeNode, sliceNode) == (axis, index)
    normal = slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS())[:3, 2]
    assert abs(normal @ logic.sliceNormalRAS(volumeNode, axis)) == pytest.approx(1.0)
    for ref in ((0, 6), (1, 30), (2, 2)):  # any view can be turned to show any axis (a "reformatted" Red view)
        logic.showSliceInView(sliceNode, volumeNode, ref)
        assert shown(logic, volumeNode, sliceNode) == ref
    logic.showSliceInView(sliceNode, volumeNode, (axis, 4))
    views = [slice_node(scene, o) for o in ("Axial", "Coronal", "Sagittal")]
    assert logic.alignedSliceNode(views, logic.sliceNormalRAS(volumeNode, axis)) is views[axis]


def test_oblique_and_outside_views_mark_nothing(scene):
    logic = FossilSegmentLogic()
    volumeNode = slicer.util.addVolumeFromArray(ct(), TURNED, name="turned")
    sliceNode = slice_node(scene, "Coronal")
    logic.showSliceInView(sliceNode, volumeNode, (1, 12))
    aligned = slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS())
    for degrees, ok in ((0.5, True), (2.0, False), (45.0, False)):  # tilted about the view's in-plane x axis
        view = aligned.copy()
        view[:3, :3] = rotation(aligned[:3, 0], degrees) @ aligned[:3, :3]
        if ok:
            assert logic.sliceRefInView(volumeNode, view) == (1, 12)
        else:
            with pytest.raises(InputError, match=r"oblique to the volume \(\d+\.\d° from its nearest slices"):
                logic.sliceRefInView(volumeNode, view)
    view = aligned.copy()
    view[:3, 3] = logic.sliceCenterRAS(volumeNode, (1, 12)) + 40 * aligned[:3, 2] / np.linalg.norm(aligned[:3, 2])
    with pytest.raises(InputError, match=r"outside the volume \(slice j\d+; its j slices are 0..31\)"):
        logic.sliceRefInView(volumeNode, view)
    with pytest.raises(InputError, match="select the input volume"):
        logic.sliceRefInView(None, aligned)


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
    assert len(ranking) == 5 and (0, 0) not in ranking and ranking[0] == (0, int(np.argmax(means[1:]) + 1))
    assert [k for _, k in ranking] == sorted(range(1, 8), key=lambda k: -means[k])[:5]  # axial: none corrected off-axis
    # a slice corrected along j: j slices are suggested too, ranked with the axial ones by their mean
    mixed = logic.suggestSlices(node, exclude=["k0", "j5"], count=40)
    jMeans = unc.array.mean(axis=(0, 2))
    assert {axis for axis, _ in mixed} == {0, 1} and (1, 5) not in mixed
    assert mixed[0] == max([(0, k) for k in range(1, 8)] + [(1, j) for j in range(32) if j != 5],
                           key=lambda r: (means if r[0] == 0 else jMeans)[r[1]])
    assert logic.suggestSlices(node, axes=[2], count=3)[0] == (2, int(np.argmax(unc.array.mean(axis=(0, 1)))))
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
    assert logic.suggestSlices(part)[:3] == [(0, k) for k in sorted(range(2, 5), key=lambda k: -part.array[k].mean())]
    with pytest.raises(InputError, match="share no slice"):
        logic.runUncertainty(volume, model=str(tiny_model_dir), device="cpu", sliceRange=(6, 8), roi=Box(1, 5, 0, 4, 0, 4))


def _ijk(node):
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return m
