"""Reading and writing: volumes, labelmaps, Slicer segmentations, STL meshes and overlay pictures."""

from .mesh_io import labelmap_to_polydata, write_stl_folder
from .overlay import write_overlay_png
from .segmentation_io import read_seg_nrrd, write_seg_nrrd
from .volume_io import read_labelmap, read_volume, write_volume

__all__ = [
    "labelmap_to_polydata",
    "read_labelmap",
    "read_seg_nrrd",
    "read_volume",
    "write_overlay_png",
    "write_seg_nrrd",
    "write_stl_folder",
    "write_volume",
]
