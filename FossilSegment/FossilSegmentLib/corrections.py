"""Learning from the user's corrected slices and pointing at where to correct next (issue 5). No Qt.

Mixed into :class:`.logic.FossilSegmentLogic`. Per-slice hashes of the labelmap the model produced are kept
on the segmentation node (attribute ``FossilSegment.ModelSliceHashes``) so slices the user edited since are
found by comparison. ``learnFromCorrections`` = ``prepareCorrections`` (main thread) → ``runLearning``
(worker thread, no MRML) → ``applyLearning`` (main thread); corrected slices are copied back unchanged.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import vtk

import slicer
from fossilsegment_engine.errors import InputError
from fossilsegment_engine.progress import CancelToken, ProgressCallback, check_cancelled
from fossilsegment_engine.roi import Box, region_box
from fossilsegment_engine.volume import Volume

from .classes import SegmentClass

HASH_ATTRIBUTE = "FossilSegment.ModelSliceHashes"


def sliceHashes(array: np.ndarray) -> list[str]:
    """A short SHA-1 per axial slice ``array[k]`` (shape and dtype included)."""
    return [hashlib.sha1(np.ascontiguousarray(array[k]).tobytes() + str(array.shape[1:]).encode()).hexdigest()[:16]
            for k in range(array.shape[0])]


def _ijkToRAS(volumeNode) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


class CorrectionsLogicMixin:
    """Fine-tune on corrected slices, re-segment the others, and rank slices by uncertainty."""

    finetuned: Any = None  # (module, config) of the last "learn from corrections", or None

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

    def rememberModelResult(self, segmentationNode, volumeNode, classes: Sequence[SegmentClass]) -> list[str]:
        """Store per-slice hashes of what the model just produced, to detect the user's edits later."""
        hashes = sliceHashes(self.segmentationLabelArray(segmentationNode, volumeNode, classes))
        segmentationNode.SetAttribute(HASH_ATTRIBUTE, json.dumps({"volume": volumeNode.GetID(), "hashes": hashes}))
        return hashes

    def changedSlices(self, segmentationNode, volumeNode, classes: Sequence[SegmentClass]) -> list[int]:
        """Axial slices whose segmentation differs from the model's last result (none known → [])."""
        stored = segmentationNode.GetAttribute(HASH_ATTRIBUTE) if segmentationNode is not None else None
        if not stored:
            return []
        record = json.loads(stored)
        now = sliceHashes(self.segmentationLabelArray(segmentationNode, volumeNode, classes))
        if len(now) != len(record["hashes"]):
            return []
        return [k for k, (a, b) in enumerate(zip(now, record["hashes"])) if a != b]

    # ------------------------------------------------------------------ slices and views
    def sliceIndexAtRAS(self, volumeNode, ras: Sequence[float]) -> int:
        """The slice index k of the volume at a world RAS point (through the volume's parent transform)."""
        ijk = self._worldToIJK(volumeNode) @ np.array([*ras[:3], 1.0])
        k = int(np.floor(ijk[2] + 0.5))
        n = volumeNode.GetImageData().GetDimensions()[2]
        if not 0 <= k < n:
            raise InputError(f"the slice view is outside the volume (slice {k} of 0..{n - 1})")
        return k

    def sliceCenterRAS(self, volumeNode, k: int) -> tuple[float, float, float]:
        """World RAS position of the centre of slice ``k`` (through the volume's parent transform)."""
        dims = volumeNode.GetImageData().GetDimensions()
        ijk = np.array([(dims[0] - 1) / 2, (dims[1] - 1) / 2, float(k), 1.0])
        point = np.linalg.solve(self._worldToIJK(volumeNode), ijk)
        return tuple(float(v) for v in point[:3])

    def sliceIndexInView(self, volumeNode, sliceToRAS: np.ndarray) -> int:
        """The slice k a slice view shows (its 4x4 SliceToRAS), refused unless the view is parallel to the
        volume's slices (the model works on K slices only)."""
        normal = np.asarray(sliceToRAS)[:3, 2]
        if abs(float(np.dot(normal / np.linalg.norm(normal), self.sliceNormalRAS(volumeNode)))) < 0.999:
            raise InputError("the slice view is not parallel to the volume's slices; double-click a slice in the "
                             "list (or use Reformat) to align it first")
        return self.sliceIndexAtRAS(volumeNode, np.asarray(sliceToRAS)[:3, 3])

    @staticmethod
    def sliceNormalRAS(volumeNode) -> tuple[float, float, float]:
        """World RAS direction of the volume's K axis (to align a slice view with the slices the model sees)."""
        m = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASDirectionMatrix(m)
        normal = slicer.util.arrayFromVTKMatrix(m)[:3, 2]
        transform = volumeNode.GetParentTransformNode()
        if transform is not None:
            toWorld = vtk.vtkMatrix4x4()
            if transform.GetMatrixTransformToWorld(toWorld):
                normal = slicer.util.arrayFromVTKMatrix(toWorld)[:3, :3] @ normal
        normal = normal / np.linalg.norm(normal)
        return tuple(float(v) for v in normal)

    # ------------------------------------------------------------------ learn from corrections
    def prepareCorrections(self, volumeNode, segmentationNode, correctedSlices: Iterable[int],
                           classes: Sequence[SegmentClass]) -> tuple[Volume, Volume, list[int]]:
        """(scan, current labels, sorted corrected slices), copied from MRML (main thread)."""
        volume = self.prepareInput(volumeNode)
        ks = sorted({int(k) for k in correctedSlices})
        if not ks:
            raise InputError("mark at least one corrected slice first")
        labels = volume.with_array(self.segmentationLabelArray(segmentationNode, volumeNode, classes))
        return volume, labels, ks

    def runLearning(self, volume: Volume, labels: Volume, correctedSlices: Sequence[int], model: Optional[str] = None,
                    device: str = "auto", maxMinutes: float = 3.0, minIslandVoxels: int = 64, fillHoles: bool = True,
                    progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
                    learnOptions: Any = None) -> Volume:
        """Learn from the corrected axial slices and segment the rest (``fossilsegment learn``'s method; any
        thread, no MRML); the corrected slices come back unchanged. ``learnOptions`` (a ``LearnOptions``) replaces
        the budget, device and clean-up arguments."""
        from fossilsegment_engine.finetune import annotations_from_labelmap
        from fossilsegment_engine.finetune.learn import LearnOptions, learn_and_segment
        from fossilsegment_engine.inference.postprocess import PostprocessOptions

        annotations = annotations_from_labelmap(labels, [(0, int(k)) for k in sorted(set(correctedSlices))])
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

    def learnFromCorrections(self, volumeNode, segmentationNode, correctedSlices: Iterable[int],
                             model: Optional[str] = None, device: str = "auto", maxMinutes: float = 3.0,
                             progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
                             classes: Optional[Sequence[SegmentClass]] = None, **runArgs: Any):
        """All three steps on the calling thread; returns the segmentation node. On cancel nothing changes."""
        classes = list(classes) if classes is not None else self.modelClasses(model=model, device=device)
        volume, labels, ks = self.prepareCorrections(volumeNode, segmentationNode, correctedSlices, classes)
        merged = self.runLearning(volume, labels, ks, model=model, device=device, maxMinutes=maxMinutes,
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
    def suggestSlices(uncertainty, exclude: Iterable[int] = ()) -> list[int]:
        """Axial slices by mean uncertainty, most uncertain first; ``exclude`` (corrected slices) left out.

        ``uncertainty``: a Volume, a numpy array ``[k, j, i]`` or a scalar volume node."""
        from fossilsegment_engine.inference.uncertainty import slice_ranking

        if hasattr(uncertainty, "GetImageData"):
            uncertainty = np.array(slicer.util.arrayFromVolume(uncertainty))
        return [k for k, _ in slice_ranking(uncertainty, exclude)]


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
