"""FossilSegment engine: fossil bone segmentation of CT volumes, slice by slice.

Pure Python (torch, segmentation-models-pytorch, SimpleITK, numpy, VTK). It never imports
``slicer``, ``qt`` or ``ctk``; the ``fossilsegment`` CLI and the Slicer module both sit on it.
"""

__version__ = "0.1.0"
