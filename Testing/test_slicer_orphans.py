"""Issue 13: deleting a segmentation also deletes its hidden model-result labelmap (real MRML scene)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _slicer_fixture import OBLIQUE, scene  # noqa: E402,F401 (scene: a fixture)

slicer = pytest.importorskip("slicer")

from FossilSegmentLib.classes import SegmentClass  # noqa: E402
from FossilSegmentLib.corrections import (MODEL_RESULT_ATTRIBUTE, MODEL_RESULT_REFERENCE,  # noqa: E402
                                          removeOrphanModelResults)
from FossilSegmentLib.logic import FossilSegmentLogic  # noqa: E402

BONE = [SegmentClass(1, "Bone", (0.9, 0.85, 0.8))]


def _segmentation_with_result(logic, volumeNode, name: str):
    """A segmentation with one painted segment and its remembered model result (as after Apply)."""
    segNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segNode.CreateDefaultDisplayNodes()
    labels = np.zeros((6, 16, 20), np.uint8)
    labels[2:4, 4:10, 5:15] = 1
    logic._importLabelmap(labels, volumeNode, segNode, BONE)
    result = logic.rememberModelResult(segNode, volumeNode, BONE)
    result.AddDefaultStorageNode()  # as once the scene has been saved
    return segNode, result


def _ids(scene, cls: str) -> set[str]:
    return {n.GetID() for n in scene.GetNodesByClass(cls)}


def test_removing_a_segmentation_removes_its_model_result(scene):
    logic = FossilSegmentLogic()
    volumeNode = slicer.util.addVolumeFromArray(np.zeros((6, 16, 20), np.int16), OBLIQUE, name="ct")
    segA, resultA = _segmentation_with_result(logic, volumeNode, "A")
    segB, resultB = _segmentation_with_result(logic, volumeNode, "B")
    assert resultA.GetHideFromEditors() and resultA.GetAttribute(MODEL_RESULT_ATTRIBUTE)
    assert segA.GetNodeReference(MODEL_RESULT_REFERENCE) is resultA
    idA, storageA = resultA.GetID(), resultA.GetStorageNode().GetID()
    displayA = [resultA.GetNthDisplayNode(i).GetID() for i in range(resultA.GetNumberOfDisplayNodes())]
    scene.RemoveNode(segA)
    assert scene.GetNodeByID(idA) is None
    assert all(scene.GetNodeByID(i) is None for i in [storageA, *displayA])
    assert segB.GetNodeReference(MODEL_RESULT_REFERENCE) is resultB  # another segmentation's result stays
    assert resultB.GetID() in _ids(scene, "vtkMRMLLabelMapVolumeNode")
    assert volumeNode.GetScene() is scene  # the scan is never touched


def test_an_unmarked_result_of_an_older_scene_is_found_by_the_reference(scene):
    logic = FossilSegmentLogic()
    volumeNode = slicer.util.addVolumeFromArray(np.zeros((6, 16, 20), np.int16), OBLIQUE, name="ct")
    segNode, result = _segmentation_with_result(logic, volumeNode, "A")
    result.RemoveAttribute(MODEL_RESULT_ATTRIBUTE)
    other = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "a user's labelmap")
    scene.RemoveNode(segNode)
    assert result.GetScene() is None
    assert other.GetScene() is scene  # labelmaps that are no model result are left alone


def test_without_the_observer_the_result_stays_until_cleaned(scene):
    logic = FossilSegmentLogic()
    volumeNode = slicer.util.addVolumeFromArray(np.zeros((6, 16, 20), np.int16), OBLIQUE, name="ct")
    segNode, result = _segmentation_with_result(logic, volumeNode, "A")
    logic.removeSceneObservers()  # what the widget's cleanup does
    scene.RemoveNode(segNode)
    assert result.GetScene() is scene  # the observer is what removed it above
    assert removeOrphanModelResults(scene) == [result.GetID()]
    assert result.GetScene() is None


def test_closing_the_scene_with_results_is_quiet(scene):
    logic = FossilSegmentLogic()
    volumeNode = slicer.util.addVolumeFromArray(np.zeros((6, 16, 20), np.int16), OBLIQUE, name="ct")
    _segmentation_with_result(logic, volumeNode, "A")
    scene.Clear(0)
    assert not _ids(scene, "vtkMRMLSegmentationNode") and not _ids(scene, "vtkMRMLLabelMapVolumeNode")
