"""In-Slicer self test: drives the real panel (Apply → engine process → segmentation → STL export)."""

import os
import time

import numpy as np
import vtk

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

TIMEOUT_S = 600


class FossilSegmentTest(ScriptedLoadableModuleTest):
    """Runs in Slicer (Reload and Test, or ctest through slicer_add_python_unittest)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ApplyExport()
        self.setUp()
        self.test_Cancel()

    # ------------------------------------------------------------------ helpers
    def _inputVolume(self):
        """The registered demo scan, or a small synthetic one when the demo file is not bundled."""
        import FossilSegment
        import SampleData

        if FossilSegment.demoScanPath():
            FossilSegment.registerSampleData()
            return SampleData.downloadSample("FossilDemoPhantom")
        from fossilsegment_engine.phantom import generate

        volume, _labels, _info = generate(seed=0, size="small")
        ijkToRAS = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.ijk_to_lps()
        return slicer.util.addVolumeFromArray(volume.array, ijkToRAS, name="FossilTestPhantom")

    def _widget(self):
        slicer.util.selectModule("FossilSegment")
        return slicer.util.getModuleWidget("FossilSegment")

    def _waitForWorker(self, widget):
        start = time.monotonic()
        while widget.isRunning():
            self.assertLess(time.monotonic() - start, TIMEOUT_S, "segmentation did not finish in time")
            slicer.app.processEvents()
            time.sleep(0.05)

    # ------------------------------------------------------------------ tests
    def test_ApplyExport(self):
        from FossilSegmentLib import dependencies

        if dependencies.missingPackages():
            self.delayDisplay(f"Skipped: missing {dependencies.missingPackages()}")
            return
        volume = self._inputVolume()
        widget = self._widget()
        widget._parameterNode.inputVolume = volume
        widget._parameterNode.outputSegmentation = None
        widget.ui.applyButton.click()
        self.assertTrue(widget.isRunning(), widget.ui.statusLabel.text)
        self._waitForWorker(widget)

        segNode = widget._parameterNode.outputSegmentation
        self.assertIsNotNone(segNode, widget.ui.statusLabel.text)
        boneId = segNode.GetSegmentation().GetSegmentIdBySegmentName("Bone")
        self.assertTrue(boneId, "no 'Bone' segment")
        labelNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(boneId)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segNode, ids, labelNode, volume)
        self.assertTrue(ok)
        bone = slicer.util.arrayFromVolume(labelNode)
        self.assertEqual(bone.shape, slicer.util.arrayFromVolume(volume).shape)
        self.assertGreater(int(np.count_nonzero(bone)), 0, "the Bone segment is empty")
        a, b = (slicer.util.arrayFromVTKMatrix(self._ijkToRAS(n)) for n in (labelNode, volume))
        np.testing.assert_allclose(a, b, atol=1e-6)

        folder = os.path.join(slicer.util.tempDirectory(), "stl")
        paths = widget.exportStlTo(folder)
        self.assertTrue(paths)
        for path in paths:
            self.assertTrue(path.lower().endswith(".stl") and os.path.getsize(path) > 0, path)
        self.assertTrue(any(os.path.basename(p).endswith("_Bone.stl") for p in paths), paths)
        again = widget.exportStlTo(folder)  # never overwrites: new names
        self.assertFalse(set(again) & set(paths))
        self.delayDisplay("Apply and STL export passed")

    def test_Cancel(self):
        from FossilSegmentLib import dependencies

        if dependencies.missingPackages():
            return
        volume = self._inputVolume()
        widget = self._widget()
        widget._parameterNode.inputVolume = volume
        widget._parameterNode.outputSegmentation = None
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        widget.ui.applyButton.click()  # Apply
        if widget.isRunning():
            widget.ui.applyButton.click()  # the same button is Cancel now
        self._waitForWorker(widget)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
        self.assertIn("Cancelled", widget.ui.statusLabel.text)
        self.delayDisplay("Cancel passed")

    @staticmethod
    def _ijkToRAS(node):
        m = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(m)
        return m
