"""The logic's jobs on a real MRML scene (slicer-core), through the panel's code path: the engine in its own
process, learn-from-corrections, Cancel within one batch, and progress while the main thread holds the GIL."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _slicer_fixture import FAST, OBLIQUE, scene  # noqa: E402,F401 (scene: a fixture)
from test_process_job import hold_gil  # noqa: E402

slicer = pytest.importorskip("slicer")

from fossilsegment_engine.errors import InputError  # noqa: E402
from FossilSegmentLib import job_logic  # noqa: E402
from FossilSegmentLib.logic import FossilSegmentLogic  # noqa: E402



@pytest.fixture
def folders(tmp_path, monkeypatch):
    """Job folders made under tmp_path, to check what is left behind."""
    made = []

    def new():
        made.append(str(tmp_path / f"job{len(made)}"))
        os.makedirs(made[-1])
        return made[-1]

    monkeypatch.setattr(job_logic, "newJobFolder", new)
    return made


def ct(shape=(8, 32, 40)) -> np.ndarray:
    rng = np.random.default_rng(3)
    a = rng.normal(1000, 150, shape)
    a[2:6, 8:22, 10:30] += 2500
    return a.astype(np.int16)


def colour_tables(scene) -> int:
    return scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")


@pytest.mark.slow
def test_learn_job_keeps_corrected_slices_and_the_model_in_the_parameter_node(scene, tiny_model_dir, folders):
    logic = FossilSegmentLogic()
    volumeNode = slicer.util.addVolumeFromArray(ct(), OBLIQUE, name="ct")
    tables = colour_tables(scene)
    segNode = logic.process(volumeNode, model=str(tiny_model_dir), **FAST)
    classes = logic.lastClasses
    labels = logic.segmentationLabelArray(segNode, volumeNode, classes)
    labels[2, 5:25, 5:35] = classes[0].value  # the user's corrections
    labels[5, 10:12, 10:12] = 0
    logic._importLabelmap(labels, volumeNode, segNode, classes)
    logic.setCorrectedSlices([5, "k2", (1, 12)])  # axial ints, texts and (axis, index) pairs
    assert logic.correctedSlices() == [(0, 2), (0, 5), (1, 12)]  # kept in the parameter node (saved with the scene)
    assert logic.parameterMRMLNode().GetParameter(job_logic.CORRECTED_SLICES) == "k2,k5,j12"
    before = logic.segmentationLabelArray(segNode, volumeNode, classes)
    calls = []
    job = logic.startLearning(volumeNode, segNode, model=str(tiny_model_dir), device="cpu", maxMinutes=0.05,
                              minIslandVoxels=0, fillHoles=False)
    assert [c[0] for c in job.process.commands] == ["learn"]
    command = job.process.commands[0]
    assert command[command.index("--slices") + 1] == "k2,k5,j12"
    assert logic.waitJob(progress=lambda d, t: calls.append((d, t))) is segNode
    after = logic.segmentationLabelArray(segNode, volumeNode, classes)
    assert np.array_equal(after[[2, 5]], before[[2, 5]])  # bit-identical
    assert np.array_equal(after[:, 12], before[:, 12])
    assert calls and [d for d, _ in calls] == sorted(d for d, _ in calls) and calls[-1] == (1000, 1000)
    model = logic.finetunedModel()
    assert model and os.path.isfile(os.path.join(model, "config.json"))
    assert logic.parameterMRMLNode().GetParameter(job_logic.FINETUNED_MODEL) == model
    assert colour_tables(scene) == tables  # no "…_ColorTable" left by reading segments back
    assert len(folders) == 2 and not any(os.path.exists(f) for f in folders)

    unc = logic.startUncertainty(volumeNode, device="cpu", useFinetuned=True)
    assert model in unc.process.commands[0]
    node = logic.waitJob()
    assert node.IsA("vtkMRMLScalarVolumeNode") and slicer.util.arrayFromVolume(node).shape == ct().shape


def test_corrected_slices_in_the_parameter_node_and_the_learn_command(scene):
    from fossilsegment_engine.finetune.annotations import parse_slice_refs
    from FossilSegmentLib import engine_jobs

    logic = FossilSegmentLogic()
    node = logic.parameterMRMLNode()
    assert logic.correctedSlices() == []
    node.SetParameter(job_logic.CORRECTED_SLICES, "3,10")  # a scene saved when only axial slices were kept
    assert logic.correctedSlices() == [(0, 3), (0, 10)]
    logic.setCorrectedSlices([*logic.correctedSlices(), "i120", (1, 40), (0, 3)])
    assert node.GetParameter(job_logic.CORRECTED_SLICES) == "k3,k10,j40,i120"
    logic.setCorrectedSlices(set(logic.correctedSlices()) - {(1, 40)})  # Remove
    assert logic.correctedSlices() == [(0, 3), (0, 10), (2, 120)]
    node.SetParameter(job_logic.CORRECTED_SLICES, "k3,x4")
    with pytest.raises(InputError, match="got 'x4'"):
        logic.correctedSlices()
    command = engine_jobs.learnCommands([(2, 7), (0, 3), (1, 40), (0, 3)])[0]
    slices = command[command.index("--slices") + 1]
    assert slices == "k3,j40,i7" and parse_slice_refs(slices) == [(0, 3), (1, 40), (2, 7)]  # the CLI reads it back


@pytest.mark.slow
def test_engine_errors_come_back_as_one_line_and_nothing_is_left(scene, tiny_model_dir, folders):
    logic = FossilSegmentLogic()
    volumeNode = slicer.util.addVolumeFromArray(np.zeros((4, 16, 16), np.int16), OBLIQUE, name="flat")
    nodes = scene.GetNumberOfNodes()
    logic.startSegmentation(volumeNode, model=str(tiny_model_dir), **FAST)
    messages = []
    while logic.isRunning():
        messages += logic.pollJob()
        time.sleep(0.05)
    assert messages[-1] == ("error", "volume.nrrd is constant (every voxel is 0); nothing to segment")
    assert scene.GetNumberOfNodes() == nodes and not os.path.exists(folders[0])


@pytest.mark.slow
def test_cancel_ends_the_engine_process_within_one_batch(scene, tiny_model_dir, folders):
    logic = FossilSegmentLogic()
    volumeNode = slicer.util.addVolumeFromArray(ct((20, 192, 192)), OBLIQUE, name="ct")
    nodes = scene.GetNumberOfNodes()
    job = logic.startSegmentation(volumeNode, model=str(tiny_model_dir), batchSize=1, **FAST)
    seen = []
    while len(seen) < 3:  # two batch times
        seen += [time.monotonic() for m in logic.pollJob() if m[0] == "progress"]
        time.sleep(0.002)
    batch = (seen[-1] - seen[0]) / (len(seen) - 1)
    process = job.process._process
    start = time.monotonic()
    assert logic.cancelJob() == [("cancelled",)]
    latency = time.monotonic() - start
    assert process.poll() is not None and not logic.isRunning()
    assert latency < max(batch, 0.5), (latency, batch)
    assert not os.path.exists(folders[0]) and scene.GetNumberOfNodes() == nodes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="usleep through ctypes.PyDLL(None)")
@pytest.mark.slow
def test_engine_job_runs_at_normal_speed_while_the_main_thread_holds_the_gil(scene, tiny_model_dir, folders):
    """The panel's QTimer ticks every 100 ms; between ticks PythonQt's main thread keeps the GIL."""
    logic = FossilSegmentLogic()
    volumeNode = slicer.util.addVolumeFromArray(ct((16, 96, 96)), OBLIQUE, name="ct")

    def run(wait) -> float:
        logic.startSegmentation(volumeNode, model=str(tiny_model_dir), batchSize=2, **FAST)
        start, last = time.monotonic(), 0
        while logic.isRunning():
            for m in logic.pollJob():
                assert m[0] in ("progress", "done"), m
                if m[0] == "progress":
                    assert m[2] >= last
                    last = m[2]
            wait()
        assert last == 1000
        return time.monotonic() - start

    normal = run(lambda: time.sleep(0.1))
    held = run(lambda: hold_gil(0.1))
    assert held < 1.5 * normal + 0.3, (normal, held)


@pytest.mark.slow
def test_thorough_segmentation_job_on_a_real_scene(scene, tiny_model_dir, folders):
    """The panel's Thorough box reaches the engine process, and its result comes back into the scene."""
    logic = FossilSegmentLogic()
    volumeNode = slicer.util.addVolumeFromArray(ct((36, 40, 40)), OBLIQUE, name="ct")
    job = logic.startSegmentation(volumeNode, model=str(tiny_model_dir), thorough=True, **FAST)
    assert "--thorough" in job.process.commands[0]
    node = logic.waitJob()
    assert node.IsA("vtkMRMLSegmentationNode") and not any(os.path.exists(f) for f in folders)
