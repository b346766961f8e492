"""The logic owns the panel's job: start it (main thread, MRML → files), poll it, cancel it, and apply
its result to the scene (main thread, after success). No Qt: the widget calls :meth:`pollJob` from a
QTimer; scripts and tests use the blocking :meth:`waitJob` (``process`` does). Mixed into the logic.

Corrected slices and the current fine-tuned model are kept in the module's parameter node (saved with
the scene).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from fossilsegment_engine.errors import Cancelled, FossilSegmentError, InputError, OutputError
from fossilsegment_engine.progress import CancelToken, ProgressCallback

from . import engine_jobs
from .classes import SegmentClass, segmentClasses
from .corrections import SliceRef, sliceRefName, toSliceRefs
from .process_job import ProcessJob, newJobFolder

CORRECTED_SLICES = "CorrectedSlices"  # parameter: "k3,j40,i120" (the CLI's --slices; older scenes: "3,10" axial)
FINETUNED_MODEL = "FinetunedModel"  # parameter: folder of the current fine-tuned model ("" = none)
FINETUNED_PREFIX = "fossilsegment-finetuned-"  # such folders in the temporary folder are the logic's own


@dataclass
class LogicJob:
    """A running job and what the main thread needs to apply its result."""

    kind: str  # "segment", "learn" or "uncertainty"
    process: ProcessJob
    bar: engine_jobs.JobBar
    context: dict = field(default_factory=dict)
    phase: str = ""


class JobLogicMixin:
    """Start / poll / cancel one engine process at a time; apply its result on success."""

    job: Optional[LogicJob] = None
    #: ``[python, -m, fossilsegment_engine, --progress, jsonl]`` by default; tests may replace it
    launcher: Optional[Sequence[str]] = None

    # ------------------------------------------------------------------ state kept in the parameter node
    def correctedSlices(self) -> list[SliceRef]:
        """The corrected slices ``(axis, index)`` kept in the parameter node, sorted."""
        text = self.parameterMRMLNode().GetParameter(CORRECTED_SLICES) or ""
        return toSliceRefs([text]) if text.strip() else []

    def setCorrectedSlices(self, slices: Iterable[Union[int, str, SliceRef]]) -> None:
        """Keep ``slices`` (pairs, texts like ``"j40"``, or axial ints) as ``"k3,j40"``."""
        self.parameterMRMLNode().SetParameter(CORRECTED_SLICES, ",".join(map(sliceRefName, toSliceRefs(slices))))

    def finetunedModel(self) -> Optional[str]:
        """The folder of the last fine-tuned model, when it still exists."""
        folder = self.parameterMRMLNode().GetParameter(FINETUNED_MODEL) or ""
        return folder if folder and os.path.isdir(folder) else None

    # ------------------------------------------------------------------ start (main thread)
    def isRunning(self) -> bool:
        return self.job is not None

    def _checkConflicts(self, outputSegmentation, classes: Sequence[SegmentClass], overwrite: bool) -> None:
        """The one place that refuses to replace existing segments without ``overwrite``."""
        conflicts = self.conflictingSegmentNames(outputSegmentation, [c.name for c in classes])
        if conflicts and not overwrite:
            raise OutputError(f"segmentation '{outputSegmentation.GetName()}' already has segment(s) "
                              f"{', '.join(conflicts)}; choose another output or allow replacing them")

    @staticmethod
    def classesOf(model: Optional[str]) -> list[SegmentClass]:
        """Non-background classes from the model's config.json (no weights loaded)."""
        from fossilsegment_engine.models.store import load_config

        return segmentClasses(load_config(model or None).classes)

    def _launch(self, kind: str, commands: list[list[str]], folder: str, context: dict) -> LogicJob:
        if self.job is not None:
            shutil.rmtree(folder, ignore_errors=True)
            raise InputError("a job is already running; wait for it or cancel it")
        try:
            process = ProcessJob(commands, folder, launcher=self.launcher).start()
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise OutputError(f"cannot start the engine process: {exc}") from exc
        self.job = LogicJob(kind, process, engine_jobs.JobBar(kind), context)
        return self.job

    def _writeInput(self, folder: str, name: str, volume) -> None:
        from fossilsegment_engine.io.volume_io import write_volume

        try:
            write_volume(volume, os.path.join(folder, name))
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def startSegmentation(self, inputVolume, outputSegmentation=None, model: Optional[str] = None,
                          device: str = "auto", batchSize: Optional[int] = None, minIslandVoxels: int = 64,
                          fillHoles: bool = True, sliceRange: Optional[tuple[int, int]] = None,
                          overwrite: bool = False, roiNode=None, thorough: bool = False) -> LogicJob:
        """Check the inputs, write the scan to a job folder and start ``segment`` in its own process
        (``thorough``: the mean of five passes, about 5× the time)."""
        classes = self.classesOf(model)
        self._checkConflicts(outputSegmentation, classes, overwrite)  # fail before the slow part
        roi = self.boxFromROI(inputVolume, roiNode) if roiNode is not None else None
        volume = self.prepareInput(inputVolume)
        from fossilsegment_engine.roi import region_box

        region_box(volume.shape, sliceRange, roi)  # a bad range is an error here, not in the process
        folder = newJobFolder()
        self._writeInput(folder, engine_jobs.VOLUME_FILE, volume)
        commands = engine_jobs.segmentCommands(model, device, batchSize, minIslandVoxels, fillHoles, sliceRange, roi,
                                               thorough)
        return self._launch("segment", commands, folder, dict(inputVolume=inputVolume, volume=volume,
                             outputSegmentation=outputSegmentation, classes=classes, overwrite=overwrite))

    def startLearning(self, inputVolume, segmentationNode,
                      correctedSlices: Optional[Iterable[Union[int, str, SliceRef]]] = None,
                      model: Optional[str] = None, device: str = "auto", maxMinutes: float = 3.0,
                      minIslandVoxels: int = 64, fillHoles: bool = True) -> LogicJob:
        """Fine-tune on the corrected slices (default: those in the parameter node) and re-segment."""
        classes = self.classesOf(model)
        slices = self.correctedSlices() if correctedSlices is None else correctedSlices
        volume, labels, refs = self.prepareCorrections(inputVolume, segmentationNode, slices, classes)
        folder = newJobFolder()
        self._writeInput(folder, engine_jobs.VOLUME_FILE, volume)
        self._writeInput(folder, engine_jobs.LABELS_FILE, labels)
        commands = engine_jobs.learnCommands(refs, model, device, maxMinutes, minIslandVoxels, fillHoles)
        return self._launch("learn", commands, folder, dict(inputVolume=inputVolume, volume=volume, labels=labels,
                            slices=refs, outputSegmentation=segmentationNode, classes=classes, overwrite=True))

    def startUncertainty(self, inputVolume, model: Optional[str] = None, device: str = "auto",
                         method: Optional[str] = None, useFinetuned: bool = False,
                         sliceRange: Optional[tuple[int, int]] = None, roiNode=None, uncertaintyNode=None
                         ) -> LogicJob:
        """Per-voxel uncertainty of the region Apply segments (with the fine-tuned model when asked and kept)."""
        roi = self.boxFromROI(inputVolume, roiNode) if roiNode is not None else None
        volume = self.prepareInput(inputVolume)
        model = (self.finetunedModel() or model) if useFinetuned else model
        folder = newJobFolder()
        self._writeInput(folder, engine_jobs.VOLUME_FILE, volume)
        commands = engine_jobs.uncertaintyCommands(model, device, method, sliceRange, roi)
        return self._launch("uncertainty", commands, folder, dict(inputVolume=inputVolume, volume=volume,
                                                                   uncertaintyNode=uncertaintyNode))

    # ------------------------------------------------------------------ poll / cancel (main thread)
    def pollJob(self) -> list[tuple]:
        """Never blocks. Messages: ``("progress", phase, done, total)`` with ``done``/``total`` on the job's
        one bar, then one of ``("done", kind, result)`` (the scene already updated), ``("error", message)``,
        ``("cancelled",)``. After the final message no job runs."""
        job = self.job
        if job is None:
            return []
        out = []
        for message in job.process.poll():
            if message[0] == "progress":
                job.phase = message[1]
                out.append(("progress", message[1], job.bar.update(*message[1:]), job.bar.scale))
            elif message[0] == "done":
                final = self._finish(job)
                if final[0] == "done" and job.bar.value < job.bar.scale:  # a skipped last phase: the bar ends full
                    job.bar.value = job.bar.scale
                    out.append(("progress", job.phase, job.bar.scale, job.bar.scale))
                out.append(final)
            else:
                self.job = None
                out.append(message)
        return out

    def cancelJob(self) -> list[tuple]:
        """Terminate the process and delete its files; the scene is not touched."""
        job, self.job = self.job, None
        return job.process.cancel() if job is not None else []

    def waitJob(self, progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
                interval: float = 0.05) -> Any:
        """Block until the job ends (scripts, tests): its result; ``Cancelled`` on cancel, the engine's error
        as :class:`FossilSegmentError`."""
        while True:
            if cancel is not None and cancel.is_set():
                self.cancelJob()
                raise Cancelled("cancelled")
            for message in self.pollJob():
                if message[0] == "progress" and progress is not None:
                    progress(message[2], message[3])
                elif message[0] == "done":
                    return message[2]
                elif message[0] == "error":
                    raise FossilSegmentError(message[1])
                elif message[0] == "cancelled":
                    raise Cancelled("cancelled")
            time.sleep(interval)

    # ------------------------------------------------------------------ results (main thread, after success)
    def _finish(self, job: LogicJob) -> tuple:
        self.job = None
        try:
            result = {"segment": self._applySegmentation, "learn": self._applyLearned,
                      "uncertainty": self._applyUncertainty}[job.kind](job)
        except Exception as exc:  # the scene is unchanged (applyResult cleans up after itself)
            return ("error", str(exc))
        finally:
            job.process.cleanup()
        return ("done", job.kind, result)

    def _readResult(self, job: LogicJob, name: str):
        from fossilsegment_engine.io.volume_io import read_labelmap, read_volume

        path = job.process.path(name)
        volume = job.context["volume"]
        out = read_labelmap(path, like=volume) if name == engine_jobs.RESULT_FILE else read_volume(path)
        if not out.same_geometry(volume, tol=1e-4):
            raise OutputError(f"the engine's {name} does not have the scan's geometry")
        return out

    def _applySegmentation(self, job: LogicJob):
        c = job.context
        labelmap = self._readResult(job, engine_jobs.RESULT_FILE)
        return self.applyResult(labelmap, c["inputVolume"], c["outputSegmentation"], c["classes"], c["overwrite"])

    def _applyLearned(self, job: LogicJob):
        c = job.context
        merged = np.array(self._readResult(job, engine_jobs.RESULT_FILE).array, copy=True)
        for axis, index in c["slices"]:  # the user's slices are never changed by the model
            plane = (slice(None),) * axis + (index,)
            merged[plane] = c["labels"].array[plane]
        segNode = self.applyResult(c["volume"].with_array(merged), c["inputVolume"], c["outputSegmentation"],
                                   c["classes"], overwrite=True)
        kept = tempfile.mkdtemp(prefix=FINETUNED_PREFIX)
        shutil.rmtree(kept)
        shutil.move(job.process.path(engine_jobs.MODEL_FOLDER), kept)  # outlives the job folder
        previous = self.finetunedModel()
        self.parameterMRMLNode().SetParameter(FINETUNED_MODEL, kept)
        if previous and os.path.basename(previous).startswith(FINETUNED_PREFIX):  # ours, replaced: not left behind
            shutil.rmtree(previous, ignore_errors=True)
        return segNode

    def _applyUncertainty(self, job: LogicJob):
        c = job.context
        uncertainty = self._readResult(job, engine_jobs.UNCERTAINTY_FILE)
        return self.showUncertainty(uncertainty, c["inputVolume"], c.get("uncertaintyNode"))

