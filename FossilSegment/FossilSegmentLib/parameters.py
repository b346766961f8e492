"""The module's parameter node (saved with the scene). Needs the Slicer app (parameterNodeWrapper uses Qt)."""

from typing import Annotated

from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Minimum, WithinRange, parameterNodeWrapper


@parameterNodeWrapper
class FossilSegmentParameterNode:
    """
    inputVolume - CT/micro-CT scan to segment (slices along K).
    outputSegmentation - where segments go; None creates a new segmentation.
    roi - optional markups ROI (any orientation): only the voxels it touches are segmented.
    model - bundled model name or model folder; "" = the default model.
    device - "auto", "cpu", "cuda:N" or "mps".
    batchSize - slices per batch; 0 = automatic.
    minIslandVoxels - remove connected pieces smaller than this.
    fillHoles - fill cavities enclosed in bone.
    thorough - average five passes (three views, two mirrors): about 5x slower, more accurate.
    useSliceRange, sliceStart, sliceStop - segment only slices [start, stop).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    roi: vtkMRMLMarkupsROINode
    model: str = ""
    device: str = "auto"
    batchSize: Annotated[int, WithinRange(0, 512)] = 0
    minIslandVoxels: Annotated[int, Minimum(0)] = 64
    fillHoles: bool = True
    thorough: bool = False
    useSliceRange: bool = False
    sliceStart: Annotated[int, Minimum(0)] = 0
    sliceStop: Annotated[int, Minimum(0)] = 0
