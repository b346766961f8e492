"""FossilSegment: segment fossil bone from rock matrix in CT scans. Thin module file; code is in FossilSegmentLib."""

import os
import pathlib

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule

from FossilSegmentLib.logic import FossilSegmentLogic  # noqa: F401  (Slicer finds <Module>Logic here)
from FossilSegmentLib.tests import FossilSegmentTest  # noqa: F401
from FossilSegmentLib.widget import FossilSegmentWidget  # noqa: F401

DEMO_FILE = "fossil_demo_phantom.nrrd"  # = fossilsegment_engine.resources.DEMO_SCAN.name


class FossilSegment(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("FossilSegment")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["FossilSegment contributors"]
        self.parent.helpText = _("""
Segments fossil bone from the surrounding rock matrix in CT and micro-CT scans with a 2D deep network
applied to the axial slices. Open <b>Auto-segment fossil</b>, choose the scan, press <b>Apply</b>,
correct the result in the Segment Editor and export STL surfaces.
<br><br>Method: Yu, Y. et al. (2022). CT Segmentation of Dinosaur Fossils by Deep Learning.
<i>Frontiers in Earth Science</i> 9:805271.
<a href="https://doi.org/10.3389/feart.2021.805271">doi:10.3389/feart.2021.805271</a>
""")
        self.parent.acknowledgementText = _("""
FossilSegment is open-source software. The approach follows Yu et al. (2022); it builds on 3D Slicer,
PyTorch and segmentation-models-pytorch.
""")
        slicer.app.connect("startupCompleted()", registerSampleData)


def demoScanPath():
    """The bundled demo scan (installed module: its Resources/; source tree: the extension's), or None."""
    from fossilsegment_engine.errors import FossilSegmentError
    from fossilsegment_engine.resources import DEMO_SCAN, resource_path

    try:
        return str(resource_path(DEMO_SCAN))
    except FossilSegmentError:
        return None


def registerSampleData():
    """Offer the demo scan in the Sample Data module (a local file, copied into Slicer's cache). No checksum:
    the file ships with the module, and hashing it at every start-up would slow Slicer down."""
    import SampleData

    path = demoScanPath()
    if path is None:
        return
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="FossilSegment",
        sampleName="FossilDemoPhantom",
        thumbnailFileName=os.path.join(os.path.dirname(__file__), "Resources", "Icons", "FossilSegment.png"),
        uris=pathlib.Path(path).as_uri(),
        fileNames=DEMO_FILE,
        nodeNames="FossilDemoPhantom",
    )
