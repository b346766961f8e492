"""The module panel: Qt only, thin. All computation is in :mod:`.logic`."""

from __future__ import annotations

import importlib
import logging
import os

import qt
import vtk

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from .corrections import sliceRefName, toSliceRefs
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
        self._timer = None
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
        self._timer.connect("timeout()", self._pollJob)
        self.ui.progressBar.setVisible(False)
        self.ui.progressBar.setFormat("%p %")  # the job's one bar (several phases), in per mille
        self._fillModelAndDeviceCombos()
        self._fillSliceViewCombo()
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
        self.logic.cancelJob()
        self.logic.removeSceneObservers()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self._fillSliceViewCombo()  # the layout may have changed while away

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelRunningJob()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Reload the FossilSegmentLib files too (Slicer reloads only FossilSegment.py)."""
        for name in ("classes", "geometry", "dependencies", "process_job", "engine_jobs", "job_logic", "corrections",
                     "logic", "widget", "tests"):
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
            self._refreshSliceList()  # corrected slices are kept in the parameter node (a loaded scene has its own)

    def _updateGui(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if not p:
            return
        self._selectComboData(self.ui.modelComboBox, p.model)
        self._selectComboData(self.ui.deviceComboBox, p.device)
        running = self.logic.isRunning()
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
                  self.ui.markSliceButton, self.ui.markViewComboBox, self.ui.proposeSlicesButton,
                  self.ui.removeSliceButton):
            w.enabled = hasResult
        kind = self.logic.job.kind if running else None
        self.ui.learnButton.text = "Cancel" if kind == "learn" else "Learn from corrections"
        self.ui.learnButton.enabled = kind == "learn" or (hasResult and bool(self.logic.correctedSlices()))
        self.ui.suggestSlicesButton.text = "Cancel" if kind == "uncertainty" else "Suggest slices to correct"
        self.ui.suggestSlicesButton.enabled = kind == "uncertainty" or (not running and bool(p.inputVolume))

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

    def onInstallDependencies(self) -> bool:
        """Ask once (no wait cursor under the question), then install; True when everything is there."""
        from . import dependencies

        reason = dependencies.unsupportedReason()
        if reason:
            slicer.util.errorDisplay(reason)
            return False
        if not slicer.util.confirmOkCancelDisplay("FossilSegment needs PyTorch and a few Python packages. "
                                                  "Install them now? This can take several minutes."):
            return False
        try:
            with slicer.util.tryWithErrorDisplay("Failed to install the Python packages.", waitCursor=True):
                dependencies.installMissing()
        except Exception:  # already shown to the user by tryWithErrorDisplay
            return False
        self._fillModelAndDeviceCombos()
        self.ui.statusLabel.text = "Dependencies installed."
        self._updateGui()
        return True

    # ------------------------------------------------------------------ run
    def _cancelRunningJob(self) -> bool:
        """A job runs: its button now means Cancel — stop it and return True; else False."""
        if not self.logic.isRunning():
            return False
        self._showOutcome(self.logic.cancelJob())
        return True

    def _ensureDependencies(self) -> bool:
        """True when the engine's packages are there (installed now after one confirmation)."""
        from . import dependencies

        if not dependencies.missingPackages() and not dependencies.unsupportedReason():
            return True
        return self.onInstallDependencies()

    def _start(self, status: str, start) -> None:
        """Run ``start()`` (a logic.start* call) with errors shown; then poll the job from the timer."""
        if not self._ensureDependencies():
            return
        try:
            with slicer.util.tryWithErrorDisplay("Failed to start.", waitCursor=True):
                start()
        except Exception as exc:  # already shown to the user by tryWithErrorDisplay
            self.ui.statusLabel.text = f"Not started: {exc}"
            logging.debug("FossilSegment: start failed", exc_info=True)
            return
        self.ui.progressBar.setMaximum(1000)
        self.ui.progressBar.setValue(0)
        self.ui.progressBar.setVisible(True)
        self.ui.statusLabel.text = status
        self._updateGui()
        self._timer.start()

    def onApplyButton(self) -> None:
        if self._cancelRunningJob():
            return
        p = self._parameterNode
        overwrite = False
        if p.outputSegmentation is not None and self._ensureDependencies():
            conflicts = self.logic.conflictingSegmentNames(
                p.outputSegmentation, [c.name for c in self.logic.classesOf(p.model or None)])
            if conflicts:
                if not slicer.util.confirmYesNoDisplay(f"'{p.outputSegmentation.GetName()}' already has segment(s) "
                                                       f"{', '.join(conflicts)}. Replace them?"):
                    self.ui.statusLabel.text = "Not started: choose another output segmentation."
                    return
                overwrite = True
        self._start("Segmenting…", lambda: self.logic.startSegmentation(
            p.inputVolume, p.outputSegmentation, model=p.model or None, device=p.device or "auto",
            batchSize=p.batchSize or None, minIslandVoxels=p.minIslandVoxels, fillHoles=p.fillHoles,
            sliceRange=(p.sliceStart, p.sliceStop) if p.useSliceRange else None, overwrite=overwrite,
            roiNode=p.roi, thorough=p.thorough))

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

    def _pollJob(self) -> None:
        """QTimer tick: show the logic's job messages (the logic has already updated the scene on success)."""
        messages = self.logic.pollJob()
        progress = [m for m in messages if m[0] == "progress"]
        if progress:
            self._showProgress(*progress[-1][1:])
        final = [m for m in messages if m[0] != "progress"]
        if final or not self.logic.isRunning():
            self._showOutcome(final)

    def _showProgress(self, phase: str, done: int, total: int) -> None:
        self.ui.progressBar.setMaximum(max(total, 1))
        self.ui.progressBar.setValue(done)
        left = self.logic.job.process.secondsLeft(done, total) if self.logic.job else None
        self.ui.statusLabel.text = f"{phase.capitalize()}: {100 * done // max(total, 1)} %" + (
            f", about {left:.0f} s left" if left is not None else "")

    def _showOutcome(self, final: list) -> None:
        self._timer.stop()
        self.ui.progressBar.setVisible(False)
        try:
            message = final[-1] if final else ("cancelled",)
            if message[0] == "cancelled":
                self.ui.statusLabel.text = "Cancelled: nothing was changed."
            elif message[0] == "error":
                self.ui.statusLabel.text = f"Failed: {message[1]}"
                if not slicer.app.testingEnabled():
                    slicer.util.errorDisplay(f"FossilSegment failed.\n\n{message[1]}")
            else:
                self._showResult(message[1], message[2])
        finally:
            self._updateGui()

    def _showResult(self, kind: str, node) -> None:
        if kind == "segment":
            self._parameterNode.outputSegmentation = node
            self.ui.statusLabel.text = f"Done: '{node.GetName()}'. Check it in Segment Editor, then export STL."
        elif kind == "learn":
            self.ui.statusLabel.text = (f"Re-segmented all but the {len(self.logic.correctedSlices())} corrected "
                                        "slice(s) with the fine-tuned model.")
        else:
            self._showUncertainty(node)

    def isRunning(self) -> bool:
        """True while a job runs (for tests and scripts)."""
        return self.logic.isRunning()

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

    # ------------------------------------------------------------------ learn from corrections (issues 5, 13)
    def _refreshSliceList(self) -> None:
        self.ui.correctedSlicesList.clear()
        for ref in self.logic.correctedSlices():
            self.ui.correctedSlicesList.addItem(sliceRefName(ref))  # "k10", "j40": as `fossilsegment learn --slices`
        self._updateGui()

    def _addCorrectedSlices(self, slices) -> None:
        self.logic.setCorrectedSlices(set(self.logic.correctedSlices()) | set(slices))
        self._refreshSliceList()

    def _fillSliceViewCombo(self) -> None:
        """The slice views of the layout (Red, Yellow, Green, …), keeping the chosen one."""
        combo, chosen = self.ui.markViewComboBox, self.ui.markViewComboBox.currentText
        combo.clear()
        layout = slicer.app.layoutManager()  # None without a main window
        names = list(layout.sliceViewNames()) if layout is not None else []
        combo.addItems(names)
        combo.currentIndex = names.index(chosen) if chosen in names else 0

    def _jumpToSlice(self, ref) -> None:
        """Show slice ``ref`` in the slice view closest to its orientation, and choose that view for marking."""
        volume = self._parameterNode.inputVolume
        if not volume:
            return
        axis = toSliceRefs([ref])[0][0]
        layout = slicer.app.layoutManager()
        names = list(layout.sliceViewNames())
        nodes = [layout.sliceWidget(name).mrmlSliceNode() for name in names]
        sliceNode = self.logic.alignedSliceNode(nodes, self.logic.sliceNormalRAS(volume, axis))
        self.logic.showSliceInView(sliceNode, volume, ref)
        self._fillSliceViewCombo()
        self.ui.markViewComboBox.currentIndex = nodes.index(sliceNode)

    def onMarkSlice(self) -> None:
        with slicer.util.tryWithErrorDisplay("Cannot mark the slice."):
            name = self.ui.markViewComboBox.currentText or "Red"
            sliceNode = slicer.app.layoutManager().sliceWidget(name).mrmlSliceNode()
            ref = self.logic.sliceRefInView(self._parameterNode.inputVolume,
                                            slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS()))
            self._addCorrectedSlices([ref])
            self.ui.statusLabel.text = f"Slice {sliceRefName(ref)} ({name} view) marked as corrected."

    def onProposeSlices(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Cannot compare with the model's result.", waitCursor=True):
            changed = self.logic.changedSlices(p.outputSegmentation, p.inputVolume, self.logic.classesOf(p.model or None))
            self._addCorrectedSlices(changed)
            names = ", ".join(map(sliceRefName, changed))
            self.ui.statusLabel.text = (f"Edited since the model ran: slice(s) {names}." if changed
                                        else "No slice was edited since the model ran.")

    def onRemoveSlices(self) -> None:
        gone = set(toSliceRefs(item.text() for item in self.ui.correctedSlicesList.selectedItems()))
        self.logic.setCorrectedSlices(set(self.logic.correctedSlices()) - gone)
        self._refreshSliceList()

    def onSliceDoubleClicked(self, item) -> None:
        self._jumpToSlice(item.text())

    def onLearnButton(self) -> None:
        if self._cancelRunningJob():
            return
        p = self._parameterNode
        self._start(f"Learning from {len(self.logic.correctedSlices())} corrected slice(s)…",
                    lambda: self.logic.startLearning(p.inputVolume, p.outputSegmentation, model=p.model or None,
                                                     device=p.device or "auto",
                                                     maxMinutes=self.ui.maxMinutesSpinBox.value,
                                                     minIslandVoxels=p.minIslandVoxels, fillHoles=p.fillHoles))

    def onSuggestSlicesButton(self) -> None:
        if self._cancelRunningJob():
            return
        p = self._parameterNode
        self._start("Computing uncertainty…", lambda: self.logic.startUncertainty(
            p.inputVolume, model=p.model or None, device=p.device or "auto",
            useFinetuned=True,  # the model of the last "learn from corrections", when there is one
            sliceRange=(p.sliceStart, p.sliceStop) if p.useSliceRange else None, roiNode=p.roi,
            uncertaintyNode=self.uncertaintyNode))

    def _showUncertainty(self, node) -> None:
        volume = self._parameterNode.inputVolume
        self.uncertaintyNode = node
        slicer.util.setSliceViewerLayers(background=volume, foreground=node, foregroundOpacity=0.4)
        ranking = self.logic.suggestSlices(node, exclude=self.logic.correctedSlices())
        if not ranking:
            self.ui.statusLabel.text = "No slice to suggest: every slice is corrected or next to a corrected one."
            return
        self._jumpToSlice(ranking[0])
        self.ui.statusLabel.text = ("Most uncertain slices: " + ", ".join(map(sliceRefName, ranking)) +
                                    f". Showing slice {sliceRefName(ranking[0])}; correct it, then mark it.")
