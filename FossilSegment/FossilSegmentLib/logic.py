"""FossilSegmentLogic: MRML in, engine in the middle, MRML out. No Qt here (usable from tests and scripts).

The panel and ``process`` run the engine in a separate process (see :mod:`.job_logic`):
``prepareInput`` (main thread, copies voxels) → engine CLI in its own process → ``applyResult``
(main thread, creates nodes). ``runEngine`` runs the engine in this process (scripts wanting the array).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
from typing import Any, Callable, Optional

import numpy as np
import vtk
import vtk.util.numpy_support

import slicer
from fossilsegment_engine.errors import InputError, OutputError
from fossilsegment_engine.progress import CancelToken, ProgressCallback, check_cancelled, phases
from fossilsegment_engine.roi import Box, covering_box, region_box
from fossilsegment_engine.volume import Volume

from .classes import SegmentClass, segmentClasses
from .corrections import CorrectionsLogicMixin
from .job_logic import JobLogicMixin
from .geometry import lpsGeometryFromIJKToRAS

MODULE_NAME = "FossilSegment"
#: ``factory(model, device, batchSize)`` → an object with ``.predict_labels(...)`` and ``.classes`` (the engine's
#: Predictor).
SegmenterFactory = Callable[[Optional[str], str, Optional[int]], Any]


#: Markups store positions as float32: an ROI face on a voxel face may be off by ~1e-4 voxel (micro-CT).
ROI_TOLERANCE_VOXELS = 1e-3


def defaultSegmenterFactory(model: Optional[str], device: str, batchSize: Optional[int]) -> Any:
    """The engine's Predictor (imports torch on first use only)."""
    from fossilsegment_engine.inference.predictor import Predictor

    return Predictor.load(model, device=device, batch_size=batchSize)


def _ijkToRAS(volumeNode) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


class FossilSegmentLogic(JobLogicMixin, CorrectionsLogicMixin):
    """Segment fossil bone in a scalar volume node into a segmentation node (and learn from corrections)."""

    def __init__(self, segmenterFactory: Optional[SegmenterFactory] = None) -> None:
        self.segmenterFactory = segmenterFactory or defaultSegmenterFactory
        self._segmenters: dict[tuple, Any] = {}
        self._lock = threading.Lock()
        self.lastClasses: list[SegmentClass] = []
        self.observeSceneForOrphans(getattr(slicer, "mrmlScene", None))  # a deleted segmentation's model result goes too

    # ------------------------------------------------------------------ parameters (app only)
    def getParameterNode(self):
        """The module's singleton parameter node, wrapped (the wrapper needs the Slicer app)."""
        from .parameters import FossilSegmentParameterNode

        return FossilSegmentParameterNode(self.parameterMRMLNode())

    @staticmethod
    def parameterMRMLNode():
        """The scene's singleton vtkMRMLScriptedModuleNode of this module, created when missing."""
        scene = slicer.mrmlScene
        node = scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
        if not node:
            node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(MODULE_NAME)
            node.SetName(scene.GenerateUniqueName(MODULE_NAME))
            node = scene.AddNode(node)
        node.SetAttribute("ModuleName", MODULE_NAME)
        return node

    # ------------------------------------------------------------------ model
    def getSegmenter(self, model: Optional[str] = None, device: str = "auto", batchSize: Optional[int] = None,
                     segmenterFactory: Optional[SegmenterFactory] = None) -> Any:
        """Load a model once and keep it, keyed by (model, device, batch size, factory)."""
        factory = segmenterFactory or self.segmenterFactory
        key = (str(model) if model else None, device or "auto", batchSize, factory)
        with self._lock:
            if key not in self._segmenters:
                self._segmenters.clear()  # one model in memory at a time
                self._segmenters[key] = factory(key[0], key[1], batchSize)
            return self._segmenters[key]

    def modelClasses(self, **segmenterArgs: Any) -> list[SegmentClass]:
        """Non-background classes of the model (loads it if needed)."""
        return segmentClasses(self.getSegmenter(**segmenterArgs).classes)

    # ------------------------------------------------------------------ step 1 (main thread)
    def prepareInput(self, volumeNode) -> Volume:
        """A copy of the node's voxels ``[k, j, i]`` with its exact geometry in LPS."""
        if volumeNode is None or not volumeNode.IsA("vtkMRMLScalarVolumeNode") or volumeNode.GetImageData() is None:
            raise InputError("select a scalar volume with image data as input")
        if volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
            raise InputError(f"'{volumeNode.GetName()}' is a labelmap; select the CT scan")
        if volumeNode.GetImageData().GetNumberOfScalarComponents() != 1:
            raise InputError(f"'{volumeNode.GetName()}' has several components; a single-channel CT is needed")
        array = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)
        spacing, origin, direction = lpsGeometryFromIJKToRAS(_ijkToRAS(volumeNode))
        return Volume(array, spacing, origin, direction, meta={"name": volumeNode.GetName()})

    def boxFromROI(self, volumeNode, roiNode) -> Box:
        """The voxels of ``volumeNode`` touched by a markups ROI of any orientation: the ROI's 8 corners
        (world RAS, through the ROI's parent transform) → the volume's IJK (through its own parent transform)
        → every voxel overlapping their bounding box, clipped to the volume. Non-linear transforms are refused."""
        if volumeNode is None or volumeNode.GetImageData() is None:
            raise InputError("select an input volume with image data first")
        if roiNode is None or not roiNode.IsA("vtkMRMLMarkupsROINode"):
            raise InputError("the region must be a markups ROI node")
        name = roiNode.GetName()
        roiTransform = roiNode.GetParentTransformNode()
        if roiTransform is not None and not roiTransform.IsTransformToWorldLinear():
            raise InputError(f"ROI '{name}' is under a non-linear transform; harden or remove the transform")
        size, centre = [0.0] * 3, [0.0] * 3
        roiNode.GetSizeWorld(size)
        roiNode.GetCenterWorld(centre)
        if min(size) <= 0:
            raise InputError(f"ROI '{name}' has no size yet: place it in a view, or press 'Fit to volume'")
        axes = np.zeros((3, 3))  # rows: the ROI's unit axes in world RAS
        for n in range(3):
            axis = [0.0] * 3
            roiNode.GetAxisWorld(n, axis)
            axes[n] = axis
        signs = np.array([[sx, sy, sz] for sx in (-0.5, 0.5) for sy in (-0.5, 0.5) for sz in (-0.5, 0.5)])
        cornersRAS = np.asarray(centre) + (signs * np.asarray(size)) @ axes
        worldToIJK = self._worldToIJK(volumeNode)
        ijk = (worldToIJK @ np.c_[cornersRAS, np.ones(8)].T)[:3].T
        dims = volumeNode.GetImageData().GetDimensions()
        box = covering_box(ijk, (dims[2], dims[1], dims[0]), tolerance=ROI_TOLERANCE_VOXELS)
        if box is None:
            roiBounds, volumeBounds = [0.0] * 6, [0.0] * 6
            roiNode.GetRASBounds(roiBounds)
            volumeNode.GetRASBounds(volumeBounds)
            raise InputError(f"ROI '{name}' (RAS {_formatBounds(roiBounds)} mm) does not overlap volume "
                             f"'{volumeNode.GetName()}' (RAS {_formatBounds(volumeBounds)} mm)")
        return box

    @staticmethod
    def _worldToIJK(volumeNode) -> np.ndarray:
        """4x4 world RAS → the volume's IJK, through its parent transform (refused when non-linear)."""
        rasToIJK = vtk.vtkMatrix4x4()
        volumeNode.GetRASToIJKMatrix(rasToIJK)
        transform = volumeNode.GetParentTransformNode()
        if transform is not None:
            worldToLocal = vtk.vtkMatrix4x4()
            if not transform.GetMatrixTransformFromWorld(worldToLocal):
                raise InputError(f"volume '{volumeNode.GetName()}' is under a non-linear transform; harden it or use "
                                 "a slice range instead of an ROI")
            vtk.vtkMatrix4x4.Multiply4x4(rasToIJK, worldToLocal, rasToIJK)
        return slicer.util.arrayFromVTKMatrix(rasToIJK)

    @staticmethod
    def fitROIToVolume(roiNode, volumeNode) -> None:
        """Make ``roiNode`` the whole volume: same parent transform, aligned with the volume's IJK axes (world
        axes for a sheared volume), corners on the outer faces of the corner voxels."""
        if volumeNode is None or volumeNode.GetImageData() is None:
            raise InputError("select an input volume with image data first")
        ijkToRAS = _ijkToRAS(volumeNode)
        dims = np.array(volumeNode.GetImageData().GetDimensions(), dtype=float)
        axes = ijkToRAS[:3, :3]
        spacing = np.linalg.norm(axes, axis=0)
        unit = axes / spacing
        objectToNode = np.eye(4)
        if np.allclose(unit.T @ unit, np.eye(3), atol=1e-6):
            if np.linalg.det(unit) < 0:
                unit[:, 2] *= -1  # a right-handed ROI frame; the box is symmetric about its centre
            objectToNode[:3, :3] = unit
            size = dims * spacing
        else:  # sheared voxel grid: the axis-aligned box around it
            faces = np.array([[i, j, k, 1.0] for i in (-0.5, dims[0] - 0.5) for j in (-0.5, dims[1] - 0.5)
                              for k in (-0.5, dims[2] - 0.5)])
            ras = (ijkToRAS @ faces.T)[:3]
            size = ras.max(axis=1) - ras.min(axis=1)
        objectToNode[:3, 3] = (ijkToRAS @ np.r_[(dims - 1) / 2, 1.0])[:3]
        with slicer.util.NodeModify(roiNode):
            roiNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
            roiNode.GetObjectToNodeMatrix().DeepCopy(slicer.util.vtkMatrixFromArray(objectToNode))
            roiNode.SetSize(*size.tolist())

    # ------------------------------------------------------------------ step 2 (any thread, no MRML)
    def runEngine(self, volume: Volume, model: Optional[str] = None, device: str = "auto",
                  batchSize: Optional[int] = None, minIslandVoxels: int = 64, fillHoles: bool = True,
                  sliceRange: Optional[tuple[int, int]] = None, progress: Optional[ProgressCallback] = None,
                  cancel: Optional[CancelToken] = None,
                  segmenterFactory: Optional[SegmenterFactory] = None, roi: Optional[Box] = None,
                  thorough: bool = False) -> Volume:
        """The engine's uint8 labelmap for ``volume`` (same geometry). Raises ``Cancelled`` when cancelled.

        ``roi`` (a voxel :class:`Box`, e.g. from :meth:`boxFromROI`): voxels outside it are 0; with a
        ``sliceRange`` too, only their common slices are segmented. ``thorough``: the mean of five passes."""
        from fossilsegment_engine.inference.postprocess import PostprocessOptions

        box = region_box(volume.shape, sliceRange, roi)  # bad range/ROI: an error before the model loads
        segmenter = self.getSegmenter(model, device, batchSize, segmenterFactory)
        self.lastClasses = segmentClasses(segmenter.classes)
        options = PostprocessOptions(min_island_voxels=int(minIslandVoxels), fill_holes=bool(fillHoles))
        # one bar for both steps; the 3D clean-up takes roughly a tenth of the CPU time of segmenting
        segmenting, cleaning = phases(progress, [10, 1])
        labelmap = segmenter.predict_labels(volume, progress=segmenting, cancel=cancel, postprocess=options, roi=box,
                                            cleanup_progress=cleaning, **({"thorough": True} if thorough else {}))
        check_cancelled(cancel)
        return labelmap

    # ------------------------------------------------------------------ step 3 (main thread)
    @staticmethod
    def conflictingSegmentNames(segmentationNode, names: list[str]) -> list[str]:
        """Names among ``names`` that already are segments of ``segmentationNode``."""
        if segmentationNode is None:
            return []
        segmentation = segmentationNode.GetSegmentation()
        return [n for n in names if segmentation.GetSegmentIdBySegmentName(n)]

    def applyResult(self, labelmap: Volume, inputVolume, outputSegmentation=None,
                    classes: Optional[list[SegmentClass]] = None, overwrite: bool = False):
        """Put the labelmap into a segmentation node (a new one by default), one segment per class.

        Segments named like the model's classes that already exist are replaced only with
        ``overwrite=True``; otherwise ``OutputError`` and nothing changes.
        """
        classes = list(classes if classes is not None else self.lastClasses)
        if inputVolume is None or inputVolume.GetScene() is None or inputVolume.GetImageData() is None:
            raise InputError("the input volume is no longer in the scene")
        if outputSegmentation is not None and outputSegmentation.GetScene() is None:
            raise InputError("the output segmentation is no longer in the scene")
        if not classes:
            raise InputError("the model defines no non-background class")
        dims = inputVolume.GetImageData().GetDimensions()
        if tuple(labelmap.array.shape) != (dims[2], dims[1], dims[0]):
            raise InputError(f"labelmap shape {labelmap.array.shape} differs from the volume's {dims[::-1]}")
        self._checkConflicts(outputSegmentation, classes, overwrite)
        if outputSegmentation is not None and outputSegmentation.GetSegmentation().GetSourceRepresentationName() \
                != slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName():
            raise OutputError(f"segmentation '{outputSegmentation.GetName()}' is not stored as a binary labelmap")

        segNode = outputSegmentation
        if segNode is None:
            scene = inputVolume.GetScene()
            segNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                              scene.GenerateUniqueName(f"{inputVolume.GetName()} fossil"))
            segNode.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
        try:
            self._importLabelmap(labelmap.array, inputVolume, segNode, classes)
        except Exception:
            if outputSegmentation is None:  # leave the scene as it was
                _removeWithDisplayNodes(segNode)
            raise
        self.rememberModelResult(segNode, inputVolume, classes)  # to propose the slices the user edits later
        self.lastClasses = classes
        return segNode

    def _importLabelmap(self, array: np.ndarray, inputVolume, segNode, classes: list[SegmentClass]) -> None:
        """One segment per class (same-named segments replaced, keeping their IDs), from the labelmap."""
        if segNode.GetDisplayNode() is None:
            segNode.CreateDefaultDisplayNodes()
        segmentation = segNode.GetSegmentation()
        if segmentation.GetNumberOfSegments() == 0:
            segNode.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
        ids = vtk.vtkStringArray()
        with slicer.util.NodeModify(segNode):
            for c in classes:
                segmentId = segmentation.GetSegmentIdBySegmentName(c.name)
                if segmentId:
                    segmentation.RemoveSegment(segmentId)
                ids.InsertNextValue(segmentation.AddEmptySegment(segmentId or "", c.name, list(c.color)))
            image = self._orientedLabelmap(array, classes, _ijkToRAS(inputVolume))
            transform = self._volumeToSegmentationTransform(inputVolume, segNode)
            ok = slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(image, segNode, ids,
                                                                                           transform)
        if not ok:
            raise OutputError("Slicer could not import the labelmap into the segmentation")

    @staticmethod
    def _orientedLabelmap(array: np.ndarray, classes: list[SegmentClass], ijkToRAS: np.ndarray):
        """vtkOrientedImageData with label ``n`` for the n-th class (1-based), in the volume's IJK-to-RAS."""
        remapped = np.zeros(array.shape, dtype=np.uint8)
        for index, c in enumerate(classes, start=1):
            remapped[array == c.value] = index
        image = slicer.vtkOrientedImageData()
        image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
        scalars = vtk.util.numpy_support.numpy_to_vtk(remapped.ravel(), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
        image.GetPointData().SetScalars(scalars)
        image.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(ijkToRAS))
        return image

    @staticmethod
    def _volumeToSegmentationTransform(volumeNode, segNode):
        """General transform from the volume's to the segmentation's coordinates, or None when they match."""
        source, target = volumeNode.GetParentTransformNode(), segNode.GetParentTransformNode()
        if source is target:
            return None
        transform = vtk.vtkGeneralTransform()
        slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(source, target, transform)
        return transform

    # ------------------------------------------------------------------ all steps
    def process(self, inputVolume, outputSegmentation=None, model: Optional[str] = None, device: str = "auto",
                batchSize: Optional[int] = None, minIslandVoxels: int = 64, fillHoles: bool = True,
                sliceRange: Optional[tuple[int, int]] = None, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelToken] = None, overwrite: bool = False, roiNode=None, thorough: bool = False):
        """Segment ``inputVolume`` (only the voxels ``roiNode``, a markups ROI, touches, when given; ``thorough``:
        the mean of five passes) in a separate engine process, blocking, through the panel's code path; return
        the segmentation node. On cancel or error the scene is unchanged."""
        self.startSegmentation(inputVolume, outputSegmentation, model, device, batchSize, minIslandVoxels,
                               fillHoles, sliceRange, overwrite, roiNode, thorough)
        return self.waitJob(progress, cancel)

    # ------------------------------------------------------------------ results
    @staticmethod
    def showIn3D(segmentationNode) -> None:
        """Build the closed-surface representation so the segments show in 3D views."""
        segmentationNode.CreateClosedSurfaceRepresentation()
        display = segmentationNode.GetDisplayNode()
        if display is not None:
            display.SetVisibility3D(True)

    @staticmethod
    def exportStl(segmentationNode, folder: str) -> list[str]:
        """One closed STL per non-empty segment (LPS, mm) into ``folder`` (created). Never overwrites:
        a taken name gets a numbered suffix. Returns the written paths."""
        if segmentationNode is None or segmentationNode.GetSegmentation().GetNumberOfSegments() == 0:
            raise InputError("select a segmentation with at least one segment to export")
        segmentationNode.CreateClosedSurfaceRepresentation()
        ids = vtk.vtkStringArray()
        for segmentId in segmentationNode.GetSegmentation().GetSegmentIDs():
            surface = segmentationNode.GetClosedSurfaceInternalRepresentation(segmentId)
            if surface is not None and surface.GetNumberOfPoints() > 0:
                ids.InsertNextValue(segmentId)
        if ids.GetNumberOfValues() == 0:
            raise InputError("every segment is empty; nothing to export")
        try:
            os.makedirs(folder, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=".fossilsegment-stl-", dir=folder)
        except OSError as exc:
            raise OutputError(f"cannot write to {folder}: {exc}") from exc
        written = []
        try:
            for n in range(ids.GetNumberOfValues()):
                written.append(_exportOneStl(segmentationNode, ids.GetValue(n), staging, folder, n))
        except BaseException:
            for path in written:  # all or nothing
                os.remove(path)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logging.info("FossilSegment: wrote %s", ", ".join(written))
        return written


def _formatBounds(bounds) -> str:
    """``[x0, x1, y0, y1, z0, z1]`` → ``x0:x1,y0:y1,z0:z1`` (1 decimal)."""
    return ",".join(f"{bounds[n]:.1f}:{bounds[n + 1]:.1f}" for n in (0, 2, 4))


def _removeWithDisplayNodes(node) -> None:
    scene = node.GetScene()
    displays = [node.GetNthDisplayNode(n) for n in range(node.GetNumberOfDisplayNodes())]
    for display in displays + [node]:
        if display is not None:
            scene.RemoveNode(display)


def safeFileName(name: str) -> str:
    """``name`` usable as a file name on every system: path separators and reserved characters → ``_``."""
    cleaned = re.sub(r'[\\/:*?"<>|\x00-\x1f]', "_", name).strip(" .")
    return cleaned or "segment"


def _exportOneStl(segmentationNode, segmentId: str, staging: str, folder: str, n: int) -> str:
    """Export one segment through Slicer into its own staging subfolder (so equal names never collide), then
    move it to ``folder/<node>_<segment>.stl`` (sanitised, numbered when taken). Returns the path."""
    sub = os.path.join(staging, str(n))
    os.mkdir(sub)
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    nodeName, segmentName = segmentationNode.GetName(), segment.GetName()
    one = vtk.vtkStringArray()
    one.InsertNextValue(segmentId)
    try:  # Slicer writes <node>_<segment>.stl unsanitised: a "/" in a name would be a folder
        segmentationNode.SetName(safeFileName(nodeName))
        segment.SetName(safeFileName(segmentName))
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsClosedSurfaceRepresentationToFiles(
            sub, segmentationNode, one, "STL", True, 1.0, False)
    finally:
        segment.SetName(segmentName)
        segmentationNode.SetName(nodeName)
    names = os.listdir(sub)
    if not ok or len(names) != 1:
        raise OutputError(f"Slicer could not write the STL file of segment '{segmentName}' to {folder}")
    target = _freePath(os.path.join(folder, f"{safeFileName(nodeName)}_{safeFileName(segmentName)}.stl"))
    os.replace(os.path.join(sub, names[0]), target)  # same file system: atomic; target checked free
    return target


def _freePath(path: str) -> str:
    """``path`` or, when taken, ``stem_1.stl``, ``stem_2.stl``…"""
    stem, ext = os.path.splitext(path)
    candidate, n = path, 0
    while os.path.exists(candidate):
        n += 1
        candidate = f"{stem}_{n}{ext}"
    return candidate
