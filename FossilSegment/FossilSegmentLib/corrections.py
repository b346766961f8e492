"""Learning from the user's corrected slices and pointing at where to correct next (issues 5 and 13). No Qt.

Mixed into :class:`.logic.FossilSegmentLogic`. A corrected slice is ``(axis, index)`` with axis 0 k (axial),
1 j or 2 i of the volume's KJI array; its text is the CLI's (``k10``, ``j40``, ``i120``). The labelmap the model
produced is kept in a hidden labelmap node referenced by the segmentation node (``MODEL_RESULT_REFERENCE``),
so slices the user edited since are found by comparison (:meth:`CorrectionsLogicMixin.changedSlices`).
``learnFromCorrections`` = ``prepareCorrections`` (main thread) → ``runLearning`` (worker thread, no MRML) →
``applyLearning`` (main thread); corrected slices are copied back unchanged.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import vtk

import slicer
from fossilsegment_engine.errors import InputError
from fossilsegment_engine.progress import CancelToken, ProgressCallback, check_cancelled
from fossilsegment_engine.roi import Box, region_box
from fossilsegment_engine.volume import Volume

from .classes import SegmentClass

#: a corrected slice: (axis 0 k / 1 j / 2 i, index)
SliceRef = tuple[int, int]
#: axis letters, as the engine's ``--slices`` (``finetune.annotations.AXES``; that package imports torch)
AXES = "kji"
_REF = re.compile(r"([kji]?)(\d+)")  # one slice as the panel stores it (the engine's parser also takes ranges)
#: node reference (segmentation → hidden labelmap of the model's last result)
MODEL_RESULT_REFERENCE = "FossilSegmentModelResult"
#: attribute marking a labelmap node as a model result (found and removed when no segmentation references it)
MODEL_RESULT_ATTRIBUTE = "FossilSegment.ModelResult"
#: attribute of scenes saved before the model result was kept: per-axial-slice hashes only
HASH_ATTRIBUTE = "FossilSegment.ModelSliceHashes"
#: a slice view within this angle of a volume axis shows that axis' slices (rounding in matrices)
ALIGNED_DEGREES = 1.0


def toSliceRefs(values: Iterable[Union[int, str, Sequence[int]]]) -> list[SliceRef]:
    """Sorted unique ``(axis, index)`` from ints (axial), texts (``"k10"``, ``"j40"``, ``"12"``) or pairs."""
    out: set[SliceRef] = set()
    for v in values:
        if isinstance(v, str):
            for part in filter(None, (p.strip().lower() for p in v.split(","))):
                m = _REF.fullmatch(part)
                if m is None:
                    raise InputError(f"a corrected slice is an axis letter k, j or i and an index (k10, j40, i120; "
                                     f"a bare number is axial), got {part!r}")
                out.add((AXES.index(m.group(1) or "k"), int(m.group(2))))
        elif isinstance(v, (int, np.integer)):
            out.add((0, int(v)))
        else:
            axis, index = v
            if int(axis) not in (0, 1, 2):
                raise InputError(f"slice axis must be 0 (k), 1 (j) or 2 (i), got {axis}")
            out.add((int(axis), int(index)))
    return sorted(out)


def sliceRefName(ref: SliceRef) -> str:
    """``(1, 40)`` → ``"j40"`` (the CLI's ``--slices`` form)."""
    return f"{AXES[ref[0]]}{ref[1]}"


def attributeChanges(changed: np.ndarray) -> list[SliceRef]:
    """The slices that explain a boolean KJI mask of changed voxels, along any axis.

    Each changed voxel is given to a slice: repeatedly the slice (of any axis) holding the most changed voxels
    not yet given is taken (ties: k before j before i, then the lower index), until none is left. An edit on one
    axial slice gives that k; an edit on one sagittal or coronal slice gives that i or j, not the axial slices it
    crosses; a 3D edit gives the slices of its thinnest direction (k first)."""
    changed = np.asarray(changed, dtype=bool)
    touched = [np.flatnonzero(changed.any(axis=tuple(d for d in range(3) if d != axis))) for axis in range(3)]
    if not touched[0].size:
        return []
    lo = [int(t[0]) for t in touched]
    # a copy of the box of the changes, cleared as its voxels are given to slices
    left = np.array(changed[tuple(slice(int(t[0]), int(t[-1]) + 1) for t in touched)])
    counts = [left.sum(axis=tuple(d for d in range(3) if d != axis)).astype(np.int64) for axis in range(3)]
    out: list[SliceRef] = []
    while True:
        best = max(range(3), key=lambda axis: (int(counts[axis].max()), -axis))
        index = int(np.argmax(counts[best]))  # the first of equal counts
        if counts[best][index] == 0:
            return sorted(out)
        out.append((best, lo[best] + index))
        plane = np.take(left, index, axis=best)  # 2D: the other two axes, in order
        others = [d for d in range(3) if d != best]
        counts[others[0]] -= plane.sum(axis=1)
        counts[others[1]] -= plane.sum(axis=0)
        counts[best][index] = 0
        left[(slice(None),) * best + (index,)] = False


def sliceHashes(array: np.ndarray) -> list[str]:
    """A short SHA-1 per axial slice ``array[k]`` (the record of scenes saved before issue 13)."""
    return [hashlib.sha1(np.ascontiguousarray(array[k]).tobytes() + str(array.shape[1:]).encode()).hexdigest()[:16]
            for k in range(array.shape[0])]


def _ijkToRAS(volumeNode) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


def removeOrphanModelResults(scene, removedNode=None) -> list[str]:
    """Remove the model-result labelmaps (and their display and storage nodes) that no segmentation node of
    ``scene`` references any more: those marked ``MODEL_RESULT_ATTRIBUTE`` and the one ``removedNode`` (a
    segmentation just removed, whose reference ID outlives it) pointed at. Returns the IDs removed."""
    candidates = {n.GetID() for n in scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode")
                  if n.GetAttribute(MODEL_RESULT_ATTRIBUTE)}
    if removedNode is not None and removedNode.GetNodeReferenceID(MODEL_RESULT_REFERENCE):
        candidates.add(removedNode.GetNodeReferenceID(MODEL_RESULT_REFERENCE))
    referenced = {n.GetNodeReferenceID(MODEL_RESULT_REFERENCE)
                  for n in scene.GetNodesByClass("vtkMRMLSegmentationNode")}
    removed = []
    for nodeID in sorted(candidates - referenced):
        node = scene.GetNodeByID(nodeID)
        if node is not None and node.IsA("vtkMRMLLabelMapVolumeNode"):
            storage = node.GetStorageNode()
            _removeNode(node)
            if storage is not None and storage.GetScene() is scene:
                scene.RemoveNode(storage)
            removed.append(nodeID)
    return removed


@vtk.calldata_type(vtk.VTK_OBJECT)
def _onNodeRemoved(scene, event, node) -> None:
    """A segmentation node left the scene: its model result goes too (not while the scene closes or loads)."""
    if node is not None and node.IsA("vtkMRMLSegmentationNode") and not scene.IsClosing() \
            and not scene.IsBatchProcessing():
        removeOrphanModelResults(scene, node)


class CorrectionsLogicMixin:
    """Fine-tune on corrected slices, re-segment the others, and rank slices by uncertainty."""

    finetuned: Any = None  # (module, config) of the last "learn from corrections", or None

    def observeSceneForOrphans(self, scene) -> None:
        """Remove a segmentation's model result when the segmentation leaves ``scene`` (one observer per scene;
        :meth:`removeSceneObservers` takes them off)."""
        observed = self.__dict__.setdefault("_orphanObservers", {})
        if scene is not None and id(scene) not in observed:
            observed[id(scene)] = (scene, scene.AddObserver(slicer.vtkMRMLScene.NodeRemovedEvent, _onNodeRemoved))

    def removeSceneObservers(self) -> None:
        """Take off the observers :meth:`observeSceneForOrphans` added."""
        for scene, tag in self.__dict__.pop("_orphanObservers", {}).values():
            scene.RemoveObserver(tag)

    # ------------------------------------------------------------------ reading segments back
    def segmentationLabelArray(self, segmentationNode, volumeNode, classes: Sequence[SegmentClass]) -> np.ndarray:
        """The class-valued uint8 labelmap ``[k, j, i]`` of the segments named like ``classes``, on the volume's grid."""
        if segmentationNode is None or segmentationNode.GetScene() is None:
            raise InputError("select the segmentation to learn from")
        segmentation = segmentationNode.GetSegmentation()
        dims = volumeNode.GetImageData().GetDimensions()
        out = np.zeros((dims[2], dims[1], dims[0]), dtype=np.uint8)
        present = [(c, segmentation.GetSegmentIdBySegmentName(c.name)) for c in classes]
        present = [(c, sid) for c, sid in present if sid]
        if not present:
            return out
        ids = vtk.vtkStringArray()
        for _, sid in present:
            ids.InsertNextValue(sid)
        labelNode = volumeNode.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        try:
            ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentationNode, ids, labelNode, volumeNode)
            if not ok:
                raise InputError(f"could not read the segments of '{segmentationNode.GetName()}'")
            exported = np.array(slicer.util.arrayFromVolume(labelNode))
        finally:
            _removeLabelmapWithColorTable(labelNode)
        for index, (c, _) in enumerate(present, start=1):  # exported value = position in ids + 1
            out[exported == index] = c.value
        return out

    def rememberModelResult(self, segmentationNode, volumeNode, classes: Sequence[SegmentClass]):
        """Keep what the model just produced (a hidden labelmap node referenced by the segmentation, saved with
        the scene), to find the user's edits later. Returns that node."""
        labels = self.segmentationLabelArray(segmentationNode, volumeNode, classes)
        node = segmentationNode.GetNodeReference(MODEL_RESULT_REFERENCE)
        if node is None:
            scene = segmentationNode.GetScene()
            node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode",
                                           scene.GenerateUniqueName(f"{segmentationNode.GetName()} model result"))
            node.SetHideFromEditors(True)
            segmentationNode.SetNodeReferenceID(MODEL_RESULT_REFERENCE, node.GetID())
        node.SetAttribute(MODEL_RESULT_ATTRIBUTE, "1")
        self.observeSceneForOrphans(node.GetScene())
        node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(_ijkToRAS(volumeNode)))
        node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        slicer.util.updateVolumeFromArray(node, labels)
        segmentationNode.RemoveAttribute(HASH_ATTRIBUTE)  # an older scene's record is superseded
        return node

    def changedSlices(self, segmentationNode, volumeNode, classes: Sequence[SegmentClass]) -> list[SliceRef]:
        """Slices, along any axis, whose segmentation differs from the model's last result (none known → []);
        see :func:`attributeChanges` for which slice an edit is given to. A scene saved before the model result
        was kept has per-axial-slice hashes only: the changed axial slices."""
        if segmentationNode is None:
            return []
        reference = segmentationNode.GetNodeReference(MODEL_RESULT_REFERENCE)
        stored = segmentationNode.GetAttribute(HASH_ATTRIBUTE)
        if (reference is None or reference.GetImageData() is None) and not stored:
            return []
        now = self.segmentationLabelArray(segmentationNode, volumeNode, classes)
        if reference is not None and reference.GetImageData() is not None:
            before = slicer.util.arrayFromVolume(reference)
            return attributeChanges(now != before) if before.shape == now.shape else []
        hashes = json.loads(stored)["hashes"]
        return [(0, k) for k, (a, b) in enumerate(zip(sliceHashes(now), hashes)) if a != b] \
            if len(hashes) == len(now) else []

    # ------------------------------------------------------------------ slices and views
    def sliceIndexAtRAS(self, volumeNode, ras: Sequence[float], axis: int = 0) -> int:
        """The index along ``axis`` (0 k, 1 j, 2 i) of the volume's slice through a world RAS point (through the
        volume's parent transform)."""
        ijk = self._worldToIJK(volumeNode) @ np.array([*ras[:3], 1.0])
        index = int(np.floor(ijk[2 - axis] + 0.5))
        n = volumeNode.GetImageData().GetDimensions()[2 - axis]
        if not 0 <= index < n:
            raise InputError(f"the slice view is outside the volume (slice {AXES[axis]}{index}; its "
                             f"{AXES[axis]} slices are 0..{n - 1})")
        return index

    def sliceCenterRAS(self, volumeNode, ref: Union[int, SliceRef]) -> tuple[float, float, float]:
        """World RAS position of the centre of slice ``ref`` (``(axis, index)``, or an axial index)."""
        axis, index = toSliceRefs([ref])[0]
        dims = volumeNode.GetImageData().GetDimensions()
        ijk = np.array([(d - 1) / 2 for d in dims] + [1.0])
        ijk[2 - axis] = float(index)
        point = np.linalg.solve(self._worldToIJK(volumeNode), ijk)
        return tuple(float(v) for v in point[:3])

    def sliceRefInView(self, volumeNode, sliceToRAS: np.ndarray) -> SliceRef:
        """The slice ``(axis, index)`` a slice view shows (its 4x4 SliceToRAS): the volume axis its normal is
        parallel to (within ``ALIGNED_DEGREES``) and the index at its offset. An oblique view → InputError."""
        if volumeNode is None or volumeNode.GetImageData() is None:
            raise InputError("select the input volume first")
        sliceToRAS = np.asarray(sliceToRAS, dtype=float)
        normal = sliceToRAS[:3, 2] / np.linalg.norm(sliceToRAS[:3, 2])
        worldToIJK = self._worldToIJK(volumeNode)
        # the plane "ijk[d] = const" has the gradient of ijk[d] (row d of world → IJK) as its normal
        cosines = [abs(float(normal @ row)) / np.linalg.norm(row) for row in worldToIJK[:3, :3]]
        d = int(np.argmax(cosines))
        angle = float(np.degrees(np.arccos(min(cosines[d], 1.0))))
        if angle > ALIGNED_DEGREES:
            raise InputError(f"the slice view is oblique to the volume ({angle:.1f}° from its nearest slices, "
                             f"{AXES[2 - d]}); nothing marked. Double-click a slice in the list, or rotate the view "
                             "to the volume's axes (slice view menu, 'Rotate to volume plane'), then mark it")
        return 2 - d, self.sliceIndexAtRAS(volumeNode, sliceToRAS[:3, 3], axis=2 - d)

    def showSliceInView(self, sliceNode, volumeNode, ref: Union[int, SliceRef]) -> None:
        """Turn a slice view to the volume's ``axis`` (keeping its handedness) and centre it on slice ``ref``."""
        axis, index = toSliceRefs([ref])[0]
        ijkToWorld = np.linalg.inv(self._worldToIJK(volumeNode))
        sliceNode.RotateToAxes(slicer.util.vtkMatrixFromArray(ijkToWorld), 2 - axis)
        sliceNode.JumpSliceByCentering(*self.sliceCenterRAS(volumeNode, (axis, index)))

    @staticmethod
    def alignedSliceNode(sliceNodes: Sequence[Any], normal: Sequence[float]):
        """Of ``sliceNodes``, the one whose normal is closest to ``normal`` (the view to turn the least)."""
        def cosine(node) -> float:
            return abs(float(np.dot(slicer.util.arrayFromVTKMatrix(node.GetSliceToRAS())[:3, 2], normal)))
        return max(sliceNodes, key=cosine)

    @staticmethod
    def sliceNormalRAS(volumeNode, axis: int = 0) -> tuple[float, float, float]:
        """World RAS direction of the volume's ``axis`` (0 k, 1 j, 2 i), through its parent transform."""
        m = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASDirectionMatrix(m)
        normal = slicer.util.arrayFromVTKMatrix(m)[:3, 2 - axis]
        transform = volumeNode.GetParentTransformNode()
        if transform is not None:
            toWorld = vtk.vtkMatrix4x4()
            if transform.GetMatrixTransformToWorld(toWorld):
                normal = slicer.util.arrayFromVTKMatrix(toWorld)[:3, :3] @ normal
        normal = normal / np.linalg.norm(normal)
        return tuple(float(v) for v in normal)

    # ------------------------------------------------------------------ learn from corrections
    def prepareCorrections(self, volumeNode, segmentationNode, correctedSlices: Iterable[Union[int, str, SliceRef]],
                           classes: Sequence[SegmentClass]) -> tuple[Volume, Volume, list[SliceRef]]:
        """(scan, current labels, sorted corrected slices ``(axis, index)``), copied from MRML (main thread).

        The engine's checks run here, before anything is written: a slice outside the volume, no foreground on
        any corrected slice, or two crossing slices that disagree (the line of voxels named) → InputError."""
        from fossilsegment_engine.finetune.annotations import annotations_from_labelmap, check_annotation_set

        volume = self.prepareInput(volumeNode)
        refs = toSliceRefs(correctedSlices)
        if not refs:
            raise InputError("mark at least one corrected slice first")
        labels = volume.with_array(self.segmentationLabelArray(segmentationNode, volumeNode, classes))
        check_annotation_set(volume, annotations_from_labelmap(labels, refs), max(c.value for c in classes) + 1)
        return volume, labels, refs

    def runLearning(self, volume: Volume, labels: Volume, correctedSlices: Iterable[Union[int, str, SliceRef]],
                    model: Optional[str] = None, device: str = "auto", maxMinutes: float = 3.0,
                    minIslandVoxels: int = 64, fillHoles: bool = True, progress: Optional[ProgressCallback] = None,
                    cancel: Optional[CancelToken] = None, learnOptions: Any = None) -> Volume:
        """Learn from the corrected slices (any axis) and segment the rest (``fossilsegment learn``'s method; any
        thread, no MRML); the corrected slices come back unchanged. ``learnOptions`` (a ``LearnOptions``) replaces
        the budget, device and clean-up arguments."""
        from fossilsegment_engine.finetune import annotations_from_labelmap
        from fossilsegment_engine.finetune.learn import LearnOptions, learn_and_segment
        from fossilsegment_engine.inference.postprocess import PostprocessOptions

        annotations = annotations_from_labelmap(labels, toSliceRefs(correctedSlices))
        opts = learnOptions or LearnOptions(max_minutes=float(maxMinutes), device=device,
                                            postprocess=PostprocessOptions(int(minIslandVoxels), bool(fillHoles)))
        result = learn_and_segment(volume, annotations, model or None, opts, progress, cancel)
        check_cancelled(cancel)
        if result.finetuned is not None:
            self.finetuned = (result.finetuned.module, result.finetuned.config)
        return result.labels

    def applyLearning(self, merged: Volume, volumeNode, segmentationNode, classes: Sequence[SegmentClass]):
        """Write the merged labelmap back into the segmentation (segments of ``classes`` replaced)."""
        return self.applyResult(merged, volumeNode, segmentationNode, list(classes), overwrite=True)

    def learnFromCorrections(self, volumeNode, segmentationNode, correctedSlices: Iterable[Union[int, str, SliceRef]],
                             model: Optional[str] = None, device: str = "auto", maxMinutes: float = 3.0,
                             progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
                             classes: Optional[Sequence[SegmentClass]] = None, **runArgs: Any):
        """All three steps on the calling thread; returns the segmentation node. On cancel nothing changes."""
        classes = list(classes) if classes is not None else self.modelClasses(model=model, device=device)
        volume, labels, refs = self.prepareCorrections(volumeNode, segmentationNode, correctedSlices, classes)
        merged = self.runLearning(volume, labels, refs, model=model, device=device, maxMinutes=maxMinutes,
                                  progress=progress, cancel=cancel, **runArgs)
        return self.applyLearning(merged, volumeNode, segmentationNode, classes)

    # ------------------------------------------------------------------ uncertainty
    def runUncertainty(self, volume: Volume, model: Optional[str] = None, device: str = "auto",
                       method: Optional[str] = None, useFinetuned: bool = False,
                       progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
                       sliceRange: Optional[tuple[int, int]] = None, roi: Optional[Box] = None) -> Volume:
        """Per-voxel uncertainty (float32, 0..1) of ``volume`` (any thread, no MRML); with ``sliceRange`` and/or
        ``roi`` only that region, as Apply segments it (0 elsewhere)."""
        from fossilsegment_engine.inference.predictor import Predictor
        from fossilsegment_engine.inference.uncertainty import DEFAULT_METHOD, uncertainty_volume

        box = region_box(volume.shape, sliceRange, roi)  # the whole volume when neither is given
        if useFinetuned and self.finetuned is not None:
            segmenter = Predictor.from_module(*self.finetuned, device=device)
        else:
            segmenter = self.getSegmenter(model, device)
        return uncertainty_volume(segmenter, volume, method or DEFAULT_METHOD, progress=progress, cancel=cancel,
                                  roi=box)

    def showUncertainty(self, uncertainty: Volume, inputVolume, node=None):
        """A scalar volume node '<input> uncertainty' (same geometry and transform) holding ``uncertainty``."""
        if node is None or node.GetScene() is None:
            scene = inputVolume.GetScene()
            node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode",
                                           scene.GenerateUniqueName(f"{inputVolume.GetName()} uncertainty"))
        node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(_ijkToRAS(inputVolume)))
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(uncertainty.array, dtype=np.float32))
        node.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
        node.SetAttribute("FossilSegment.UncertaintyMethod", str(uncertainty.meta.get("uncertainty_method", "")))
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        return node

    @staticmethod
    def suggestSlices(uncertainty, exclude: Iterable[Union[int, str, SliceRef]] = (),
                      axes: Optional[Sequence[int]] = None, count: int = 5) -> list[SliceRef]:
        """Up to ``count`` slices ``(axis, index)`` to correct next: most uncertain first, spread out, none near a
        slice of ``exclude`` (the corrected slices) on its axis (the engine's ``suggest_slices``).

        ``axes`` None: axial, plus every axis the user has already corrected a slice along. Axial first because
        the learn method fine-tunes the network on axial slices only and a shape prior along an axis needs two
        corrected slices on it: a lone j or i suggestion would add only its voxels. ``uncertainty``: a Volume, a
        numpy array ``[k, j, i]`` or a scalar volume node."""
        from fossilsegment_engine.inference.uncertainty import suggest_slices

        if hasattr(uncertainty, "GetImageData"):
            uncertainty = np.array(slicer.util.arrayFromVolume(uncertainty))
        refs = toSliceRefs(exclude)
        axes = sorted({0} | {axis for axis, _ in refs}) if axes is None else list(axes)
        return [(axis, index) for axis, index, _ in suggest_slices(uncertainty, count, axes, refs)]


def _removeLabelmapWithColorTable(labelNode) -> None:
    """Remove a temporary labelmap and the colour table the export made for it (as Slicer's
    ``arrayFromSegmentBinaryLabelmap`` does), so no ``…_ColorTable`` node is left in the scene."""
    display = labelNode.GetDisplayNode()
    colorNode = display.GetColorNode() if display is not None else None
    scene = labelNode.GetScene()
    _removeNode(labelNode)
    if colorNode is not None and scene is not None and colorNode.GetScene() is scene:
        scene.RemoveNode(colorNode)


def _removeNode(node) -> None:
    scene = node.GetScene()
    for n in [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())] + [node]:
        if n is not None and scene is not None:
            scene.RemoveNode(n)
