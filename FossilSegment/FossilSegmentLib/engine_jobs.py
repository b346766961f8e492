"""The engine CLI commands of the panel's three jobs, and how their progress phases share one bar. No MRML.

Each builder returns the argument lists for :class:`.process_job.ProcessJob`; inputs and outputs are file
names inside the job's folder (the commands run there).
"""

from __future__ import annotations

from typing import Optional, Sequence

from fossilsegment_engine.roi import Box

#: file names inside a job's folder
VOLUME_FILE = "volume.nrrd"
LABELS_FILE = "labels.nrrd"
RESULT_FILE = "result.nrrd"
UNCERTAINTY_FILE = "uncertainty.nrrd"
MODEL_FOLDER = "model"

#: bar share of each progress phase the engine reports (``--progress jsonl`` ``phase`` names)
PHASE_WEIGHTS = {
    "segment": {"segmenting": 10, "cleaning up": 1},
    "learn": {"learning": 1},
    "uncertainty": {"segmenting": 10, "cleaning up": 1, "uncertainty": 10},
}


def modelOptions(model: Optional[str], device: str) -> list[str]:
    return (["--model", str(model)] if model else []) + ["--device", device or "auto"]


def regionOptions(sliceRange: Optional[tuple[int, int]], roi: Optional[Box]) -> list[str]:
    out = ["--slices", f"{int(sliceRange[0])}:{int(sliceRange[1])}"] if sliceRange else []
    return out + (["--roi", str(roi)] if roi is not None else [])


def segmentCommands(model: Optional[str] = None, device: str = "auto", batchSize: Optional[int] = None,
                    minIslandVoxels: int = 64, fillHoles: bool = True, sliceRange: Optional[tuple[int, int]] = None,
                    roi: Optional[Box] = None, thorough: bool = False) -> list[list[str]]:
    """``segment`` VOLUME_FILE → RESULT_FILE (class-valued labelmap on the volume's grid); ``thorough``: the mean
    of five passes (the CLI's ``--thorough``)."""
    cmd = ["segment", VOLUME_FILE, "--labelmap", RESULT_FILE, *modelOptions(model, device),
           "--min-island", str(int(minIslandVoxels)), *regionOptions(sliceRange, roi)]
    cmd += ["--batch-size", str(int(batchSize))] if batchSize else []
    cmd += ["--thorough"] if thorough else []
    return [cmd + ([] if fillHoles else ["--no-fill-holes"])]


def learnCommands(correctedSlices: Sequence[tuple[int, int]], model: Optional[str] = None, device: str = "auto",
                  maxMinutes: float = 3.0, minIslandVoxels: int = 64, fillHoles: bool = True) -> list[list[str]]:
    """``learn`` from VOLUME_FILE + LABELS_FILE's corrected slices ``(axis, index)``, axis 0 k / 1 j / 2 i, into
    RESULT_FILE, the corrected slices unchanged; the network it fine-tuned is kept in MODEL_FOLDER (for Suggest
    and later runs)."""
    slices = ",".join(f"{'kji'[int(a)]}{int(n)}" for a, n in sorted(set(correctedSlices)))
    cmd = ["learn", VOLUME_FILE, LABELS_FILE, "--slices", slices, "--labelmap", RESULT_FILE,
           "--save-model", MODEL_FOLDER, "--max-minutes", str(float(maxMinutes)), *modelOptions(model, device),
           "--min-island", str(int(minIslandVoxels))]
    return [cmd + ([] if fillHoles else ["--no-fill-holes"])]


def uncertaintyCommands(model: Optional[str] = None, device: str = "auto", method: Optional[str] = None,
                        sliceRange: Optional[tuple[int, int]] = None, roi: Optional[Box] = None) -> list[list[str]]:
    """Per-voxel uncertainty of VOLUME_FILE into UNCERTAINTY_FILE (float32 0..1), over the region Apply segments."""
    cmd = ["segment", VOLUME_FILE, "--labelmap", RESULT_FILE, "--uncertainty", UNCERTAINTY_FILE,
           *modelOptions(model, device), *regionOptions(sliceRange, roi)]
    return [cmd + (["--uncertainty-method", method] if method else [])]


class JobBar:
    """One forward-only bar (0..``scale``) over the phases of a job, from ``(phase, done, total)`` reports."""

    def __init__(self, kind: str, scale: int = 1000) -> None:
        self.weights = PHASE_WEIGHTS[kind]
        self.scale = scale
        self.value = 0

    def update(self, phase: str, done: int, total: int) -> int:
        name = next((p for p in self.weights if phase.startswith(p)), None)
        fraction = min(max(done / total, 0.0), 1.0) if total > 0 else 1.0
        if name is not None:
            names = list(self.weights)
            before = sum(self.weights[p] for p in names[:names.index(name)])
            fraction = (before + fraction * self.weights[name]) / sum(self.weights.values())
        self.value = max(self.value, int(fraction * self.scale))
        return self.value
