"""The module panel: Qt only, thin. All computation is in :mod:`.logic`."""

from __future__ import annotations

import importlib
import logging
import os
import time

import qt
import vtk

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from .job import InferenceJob
from .logic import FossilSegmentLogic

POLL_MS = 100


class FossilSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Auto-segment fossil: pick a scan, press Apply, then edit in Segment Editor and export STL."""

    def __init__(self, parent=None, logic: FossilSegmentLogic | None = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = logic
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job: InferenceJob | None = None
        self._timer = None
        self.lastSegmentation = None
        self.correctedSlices: set[int] = set()
        self.uncertaintyNode = None

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FossilSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        if self.logic is None:
            self.logic = FossilSegmentLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.loadModelButton.connect("clicked(bool)", self.onLoadModelFolder)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.installButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.editInSegmentEditorButton.connect("clicked(bool)", self.onEditInSegmentEditor)
        self.ui.show3DButton.connect("clicked(bool)", self.onShow3D)
        self.ui.exportStlButton.connect("clicked(bool)", self.onExportStl)
        self.ui.markSliceButton.connect("clicked(bool)", self.onMarkSlice)
        self.ui.proposeSlicesButton.connect("clicked(bool)", self.onProposeSlices)
        self.ui.removeSliceButton.connect("clicked(bool)", self.onRemoveSlices)
        self.ui.correctedSlicesList.connect("itemDoubleClicked(QListWidgetItem*)", self.onSliceDoubleClicked)
        self.ui.learnButton.connect("clicked(bool)", self.onLearnButton)
        self.ui.suggestSlicesButton.connect("clicked(bool)", self.onSuggestSlicesButton)
        self.ui.fitRoiButton.connect("clicked(bool)", self.onFitROI)
        self.ui.roiSelector.connect("nodeAddedByUser(vtkMRMLNode*)", self.onROIAddedByUser)

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.connect("timeout()", self._pollWorker)
        self.ui.progressBar.setVisible(False)
        self._fillModelAndDeviceCombos()
        self.initializeParameterNode()

    def _fillModelAndDeviceCombos(self) -> None:
        """Models: the default first (data ""), then other bundled ones; devices: auto, then what torch finds."""
        from . import dependencies

        models, devices = self.ui.modelComboBox, self.ui.deviceComboBox
        models.blockSignals(True)
        devices.blockSignals(True)
        try:
            models.clear()
            devices.clear()
            devices.addItem("auto (GPU if available)", "auto")
            missing = dependencies.missingPackages()
            self.ui.installButton.setVisible(bool(missing))
            if missing:
                self.ui.statusLabel.text = f"Missing Python packages: {', '.join(missing)}. Press 'Install dependencies'."
                models.addItem("default model", "")
                return
            from fossilsegment_engine.inference.device import describe_devices
            from fossilsegment_engine.models.store import DEFAULT_MODEL, bundled_models

            models.addItem(f"{DEFAULT_MODEL} (default)", "")
            for name in bundled_models():
                if name != DEFAULT_MODEL:
                    models.addItem(name, name)
            for description in describe_devices():
                devices.addItem(description, description.split()[0])
        finally:
            models.blockSignals(False)
            devices.blockSignals(False)

    def cleanup(self) -> None:
        self._cancelJob(wait=True)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelJob(wait=True)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Reload the FossilSegmentLib files too (Slicer reloads only FossilSegment.py)."""
        for name in ("classes", "geometry", "dependencies", "job", "corrections", "logic", "widget", "tests"):
            module = importlib.import_module(f"FossilSegmentLib.{name}")
            importlib.reload(module)
        ScriptedLoadableModuleWidget.onReload(self)

    # ------------------------------------------------------------------ parameter node
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = first

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._parameterNode = parameterNode
        if self._parameterNode:
            # Widgets with the "SlicerParameterName" property in the .ui are bound here.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
            self._updateGui()

    def _updateGui(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if not p:
            return
        self._selectComboData(self.ui.modelComboBox, p.model)
        self._selectComboData(self.ui.deviceComboBox, p.device)
        running = self._job is not None
        self.ui.applyButton.text = "Cancel" if running else "Apply"
        self.ui.applyButton.enabled = running or bool(p.inputVolume)
        self.ui.applyButton.toolTip = ("Stop the segmentation" if running else
                                       "Segment the input volume" if p.inputVolume else "Select an input volume")
        for w in (self.ui.inputSelector, self.ui.outputSelector, self.ui.optionsCollapsibleButton,
                  self.ui.modelComboBox, self.ui.loadModelButton, self.ui.deviceComboBox):
            w.enabled = not running
        self.ui.sliceStartSpinBox.enabled = self.ui.sliceStopSpinBox.enabled = p.useSliceRange
        self.ui.fitRoiButton.enabled = bool(p.inputVolume) and not running
        hasResult = bool(p.outputSegmentation) and not running
        for w in (self.ui.editInSegmentEditorButton, self.ui.show3DButton, self.ui.exportStlButton,
                  self.ui.markSliceButton, self.ui.proposeSlicesButton, self.ui.removeSliceButton):
            w.enabled = hasResult
        method = self._job.method if running else None
        self.ui.learnButton.text = "Cancel" if method == "runLearning" else "Learn from corrections"
        self.ui.learnButton.enabled = method == "runLearning" or (hasResult and bool(self.correctedSlices))
        self.ui.suggestSlicesButton.text = "Cancel" if method == "runUncertainty" else "Suggest slices to correct"
        self.ui.suggestSlicesButton.enabled = method == "runUncertainty" or (not running and bool(p.inputVolume))

    @staticmethod
    def _selectComboData(combo, data: str) -> None:
        index = combo.findData(data)
        if index < 0 and data and os.path.isdir(data):  # a model folder saved in the scene
            combo.addItem(os.path.basename(os.path.normpath(data)) + " (folder)", data)
            index = combo.findData(data)
        if index >= 0 and combo.currentIndex != index:
            combo.currentIndex = index

    def onModelChanged(self, index: int) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.model = self.ui.modelComboBox.itemData(index) or ""
            self.ui.modelInfoLabel.text = ""

    def onDeviceChanged(self, index: int) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index) or "auto"

    def onLoadModelFolder(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(self.parent, "Model folder (config.json + model.safetensors)")
        if not folder:
            return
        if not os.path.isfile(os.path.join(folder, "config.json")):
            slicer.util.errorDisplay(f"{folder} has no config.json: it is not a FossilSegment model folder.")
            return
        self._selectComboData(self.ui.modelComboBox, folder)
        self._parameterNode.model = folder

    def onInstallDependencies(self) -> None:
        from . import dependencies

        with slicer.util.tryWithErrorDisplay("Failed to install the Python packages.", waitCursor=True):
            dependencies.installMissing()
            self._fillModelAndDeviceCombos()
            self.ui.statusLabel.text = "Dependencies installed."
            self._updateGui()

    # ------------------------------------------------------------------ run
    def _cancelRunningJob(self) -> bool:
        """A job runs: its button now means Cancel — ask it to stop and return True; else False."""
        if self._job is None:
            return False
        self._cancelJob(wait=False)
        self.ui.statusLabel.text = "Cancelling…"
        return True

    def onApplyButton(self) -> None:
        if self._cancelRunningJob():
            return
        try:
            with slicer.util.tryWithErrorDisplay("Failed to start the segmentation.", waitCursor=True):
                self._startJob()
        except Exception as exc:  # already shown to the user by tryWithErrorDisplay
            self.ui.statusLabel.text = f"Not started: {exc}"
            logging.debug("FossilSegment: start failed", exc_info=True)

    def _startJob(self) -> None:
        from . import dependencies

        if dependencies.missingPackages():
            if not slicer.util.confirmOkCancelDisplay("FossilSegment needs PyTorch and a few Python packages. "
                                                      "Install them now? This can take several minutes."):
                return
            dependencies.installMissing()
            self._fillModelAndDeviceCombos()
        p = self._parameterNode
        args = dict(model=p.model or None, device=p.device or "auto", batchSize=p.batchSize or None)
        self.ui.statusLabel.text = "Loading the model…"
        slicer.app.processEvents()
        classes = self.logic.modelClasses(**args)  # loads the model once, on the main thread
        segmenter = self.logic.getSegmenter(**args)
        contextSlices = getattr(getattr(segmenter, "config", None), "context_slices", None)
        if contextSlices:
            self.ui.modelInfoLabel.text = f"Model uses {contextSlices} neighbouring slice(s) as context."
        overwrite = False
        conflicts = self.logic.conflictingSegmentNames(p.outputSegmentation, [c.name for c in classes])
        if conflicts:
            if not slicer.util.confirmYesNoDisplay(
                    f"'{p.outputSegmentation.GetName()}' already has segment(s) {', '.join(conflicts)}. Replace them?"):
                self.ui.statusLabel.text = "Not started: choose another output segmentation."
                return
            overwrite = True
        roi = self.logic.boxFromROI(p.inputVolume, p.roi) if p.roi else None
        sliceRange = (p.sliceStart, p.sliceStop) if p.useSliceRange else None
        volume = self.logic.prepareInput(p.inputVolume)
        args.update(minIslandVoxels=p.minIslandVoxels, fillHoles=p.fillHoles, sliceRange=sliceRange, roi=roi)
        context = dict(inputVolume=p.inputVolume, outputSegmentation=p.outputSegmentation, classes=classes,
                       overwrite=overwrite)
        # Inference runs on a worker thread (see job.py for why not a subprocess); a QTimer polls it here.
        self._job = InferenceJob(self.logic, volume, args, context)
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.text = "Segmenting…"
        self._updateGui()
        self._job.start()
        self._timer.start()

    def onFitROI(self) -> None:
        """Fit the selected ROI (a new one when none) to the input volume."""
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Cannot fit the region to the volume."):
            roi = p.roi
            if roi is None:
                roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode",
                                                         slicer.mrmlScene.GenerateUniqueName("FossilSegment region"))
                roi.CreateDefaultDisplayNodes()
            self.logic.fitROIToVolume(roi, p.inputVolume)
            p.roi = roi

    def onROIAddedByUser(self, node) -> None:
        """A region created from the selector starts as the whole input volume."""
        if self._parameterNode and self._parameterNode.inputVolume and node is not None:
            with slicer.util.tryWithErrorDisplay("Cannot fit the new region to the volume."):
                node.CreateDefaultDisplayNodes()  # a no-op when the selector made them
                self.logic.fitROIToVolume(node, self._parameterNode.inputVolume)

    def _pollWorker(self) -> None:
        job = self._job
        if job is None:
            self._timer.stop()
            return
        for message in job.poll():
            if message[0] == "progress":
                self._showProgress(job, *message[1:])
            else:
                self._finishJob(job, message)
                return

    def _showProgress(self, job: InferenceJob, done: int, total: int) -> None:
        self.ui.progressBar.setMaximum(max(total, 1))
        self.ui.progressBar.setValue(done)
        left = job.secondsLeft(done, total)
        what = {"runLearning": "Learning from corrections", "runUncertainty": "Computing uncertainty"}
        counted = f"{100 * done // max(total, 1)} %" if job.method != "runEngine" else f"{done}/{total} slices"
        self.ui.statusLabel.text = f"{what.get(job.method, 'Segmenting')}: {counted}" + (
            f", about {left:.0f} s left" if left is not None else "")

    def _finishJob(self, job: InferenceJob, message: tuple) -> None:
        self._timer.stop()
        self._job = None
        self.ui.progressBar.setVisible(False)
        try:
            self._reportResult(job, message)
        finally:
            self._updateGui()

    def _reportResult(self, job: InferenceJob, message: tuple) -> None:
        kind, c = message[0], job.context
        if kind == "cancelled" or job.cancelToken.is_set():
            self.ui.statusLabel.text = "Cancelled: nothing was changed."
        elif kind == "error":
            self.ui.statusLabel.text = f"Failed: {message[1]}"
            logging.error(message[2])
            if not slicer.app.testingEnabled():
                slicer.util.errorDisplay(f"Segmentation failed.\n\n{message[1]}", detailedText=message[2])
        elif job.method == "runLearning":
            self._finishLearning(job, message[1])
        elif job.method == "runUncertainty":
            self._finishUncertainty(message[1])
        else:
            try:
                with slicer.util.tryWithErrorDisplay("Failed to create the segmentation."):
                    segNode = self.logic.applyResult(message[1], c["inputVolume"], c["outputSegmentation"],
                                                     c["classes"], c["overwrite"])
            except Exception as exc:  # already shown to the user by tryWithErrorDisplay
                self.ui.statusLabel.text = f"Failed: {exc}"
                return
            self.lastSegmentation = segNode
            if self._parameterNode:
                self._parameterNode.outputSegmentation = segNode
            seconds = time.monotonic() - job.startTime
            self.ui.statusLabel.text = (f"Done in {seconds:.0f} s: '{segNode.GetName()}'. "
                                        "Check it in Segment Editor, then export STL.")

    def _cancelJob(self, wait: bool) -> None:
        job = self._job
        if job is None:
            return
        job.cancel()
        if wait:
            job.join(timeout=30)
            self._finishJob(job, ("cancelled",))

    def isRunning(self) -> bool:
        """True while a segmentation runs (for tests and scripts)."""
        return self._job is not None

    # ------------------------------------------------------------------ results
    def _resultSegmentation(self):
        return self._parameterNode.outputSegmentation if self._parameterNode else None

    def onEditInSegmentEditor(self) -> None:
        segNode, volume = self._resultSegmentation(), self._parameterNode.inputVolume
        with slicer.util.tryWithErrorDisplay("Failed to open Segment Editor."):
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.util.getModuleWidget("SegmentEditor").editor
            editor.setSegmentationNode(segNode)
            if volume:
                editor.setSourceVolumeNode(volume)

    def onShow3D(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to show the segmentation in 3D.", waitCursor=True):
            self.logic.showIn3D(self._resultSegmentation())

    def onExportStl(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(self.parent, "Folder for the STL files")
        if folder:
            self.exportStlTo(folder)

    def exportStlTo(self, folder: str) -> list[str]:
        """Export the current segmentation's segments as STL into ``folder``; show what was written."""
        paths: list[str] = []
        with slicer.util.tryWithErrorDisplay("Failed to export STL.", waitCursor=True):
            paths = self.logic.exportStl(self._resultSegmentation(), folder)
            self.ui.statusLabel.text = f"Wrote {len(paths)} STL file(s) to {folder}"
        return paths

    # ------------------------------------------------------------------ learn from corrections (issue 5)
    def _refreshSliceList(self) -> None:
        self.ui.correctedSlicesList.clear()
        for k in sorted(self.correctedSlices):
            self.ui.correctedSlicesList.addItem(str(k))
        self._updateGui()

    def _redSliceNode(self):
        return slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()

    def _jumpToSlice(self, k: int) -> None:
        volume = self._parameterNode.inputVolume
        if volume:
            self._redSliceNode().JumpSliceByCentering(*self.logic.sliceCenterRAS(volume, k))

    def onMarkSlice(self) -> None:
        with slicer.util.tryWithErrorDisplay("Cannot mark the slice."):
            m = self._redSliceNode().GetSliceToRAS()
            ras = [m.GetElement(r, 3) for r in range(3)]
            k = self.logic.sliceIndexAtRAS(self._parameterNode.inputVolume, ras)
            self.correctedSlices.add(k)
            self._refreshSliceList()
            self.ui.statusLabel.text = f"Slice {k} marked as corrected."

    def onProposeSlices(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Cannot compare with the model's result.", waitCursor=True):
            classes = self.logic.modelClasses(model=p.model or None, device=p.device or "auto")
            changed = self.logic.changedSlices(p.outputSegmentation, p.inputVolume, classes)
            self.correctedSlices.update(changed)
            self._refreshSliceList()
            self.ui.statusLabel.text = (f"Edited since the model ran: slice(s) {', '.join(map(str, changed))}."
                                        if changed else "No slice was edited since the model ran.")

    def onRemoveSlices(self) -> None:
        for item in self.ui.correctedSlicesList.selectedItems():
            self.correctedSlices.discard(int(item.text()))
        self._refreshSliceList()

    def onSliceDoubleClicked(self, item) -> None:
        self._jumpToSlice(int(item.text()))

    def _startWorker(self, method: str, volume, args: dict, context: dict, status: str) -> None:
        self._job = InferenceJob(self.logic, volume, args, context, method=method)
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.text = status
        self._updateGui()
        self._job.start()
        self._timer.start()

    def onLearnButton(self) -> None:
        if self._cancelRunningJob():
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Failed to start learning.", waitCursor=True):
            args = dict(model=p.model or None, device=p.device or "auto")
            classes = self.logic.modelClasses(**args)
            volume, labels, ks = self.logic.prepareCorrections(p.inputVolume, p.outputSegmentation,
                                                               self.correctedSlices, classes)
            args.update(correctedSlices=ks, maxMinutes=self.ui.maxMinutesSpinBox.value,
                        minIslandVoxels=p.minIslandVoxels, fillHoles=p.fillHoles)
            context = dict(inputVolume=p.inputVolume, outputSegmentation=p.outputSegmentation, classes=classes)
            self._startWorker("runLearning", volume, dict(labels=labels, **args), context,
                              f"Learning from {len(ks)} corrected slice(s)…")

    def _finishLearning(self, job: InferenceJob, merged) -> None:
        c = job.context
        try:
            with slicer.util.tryWithErrorDisplay("Failed to update the segmentation."):
                self.logic.applyLearning(merged, c["inputVolume"], c["outputSegmentation"], c["classes"])
        except Exception as exc:  # already shown to the user by tryWithErrorDisplay
            self.ui.statusLabel.text = f"Failed: {exc}"
            return
        report = merged.meta.get("finetune_report", {})
        held = report.get("holdout_slice")
        score = (f" Held-back slice {held}: Dice {report['holdout_dice_before']:.3f} → "
                 f"{report['holdout_dice_after']:.3f}.") if held is not None else ""
        self.ui.statusLabel.text = (f"Re-segmented all but the {len(report.get('slices', []))} corrected slice(s) in "
                                    f"{time.monotonic() - job.startTime:.0f} s.{score}")

    def onSuggestSlicesButton(self) -> None:
        if self._cancelRunningJob():
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Failed to start the uncertainty computation.", waitCursor=True):
            args = dict(model=p.model or None, device=p.device or "auto",
                        useFinetuned=self.logic.finetuned is not None,  # the region Apply segments, if any
                        roi=self.logic.boxFromROI(p.inputVolume, p.roi) if p.roi else None,
                        sliceRange=(p.sliceStart, p.sliceStop) if p.useSliceRange else None)
            self.logic.getSegmenter(args["model"], args["device"])  # load the model on the main thread
            volume = self.logic.prepareInput(p.inputVolume)
            self._startWorker("runUncertainty", volume, args, dict(inputVolume=p.inputVolume),
                              "Computing uncertainty…")

    def _finishUncertainty(self, uncertainty) -> None:
        volume = self._parameterNode.inputVolume
        with slicer.util.tryWithErrorDisplay("Failed to show the uncertainty."):
            self.uncertaintyNode = self.logic.showUncertainty(uncertainty, volume, self.uncertaintyNode)
            slicer.util.setSliceViewerLayers(background=volume, foreground=self.uncertaintyNode,
                                             foregroundOpacity=0.4)
            ranking = self.logic.suggestSlices(uncertainty, exclude=self.correctedSlices)
            if not ranking:
                self.ui.statusLabel.text = "Every slice is already marked as corrected."
                return
            self._jumpToSlice(ranking[0])
            self.ui.statusLabel.text = ("Most uncertain slices: " + ", ".join(map(str, ranking[:5])) +
                                        f". Showing slice {ranking[0]}; correct it, then mark it.")
