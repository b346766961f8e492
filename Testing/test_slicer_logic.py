"""FossilSegmentLogic on a real MRML scene (slicer-core wheel) with a tiny saved model.

The segmentation the logic builds must equal the engine's labelmap voxel for voxel, in the
volume's exact geometry, for identity and oblique/flipped/anisotropic IJK-to-RAS matrices.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _slicer_fixture import FAST, scene  # noqa: E402,F401 (scene: a fixture)

slicer = pytest.importorskip("slicer")
import vtk  # noqa: E402
import vtk.util.numpy_support  # noqa: E402

from fossilsegment_engine.errors import Cancelled, InputError, OutputError  # noqa: E402
from FossilSegmentLib.logic import FossilSegmentLogic, defaultSegmenterFactory  # noqa: E402

SHAPE = (10, 36, 44)  # k, j, i
_ROT = np.array([[np.cos(0.5236), -np.sin(0.5236), 0], [np.sin(0.5236), np.cos(0.5236), 0], [0, 0, 1]])
_PERMUTE_FLIP = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]])
OBLIQUE = np.eye(4)  # rotated 30° about S, axes permuted and flipped, anisotropic, off-origin
OBLIQUE[:3, :3] = _ROT @ _PERMUTE_FLIP @ np.diag([0.7, 1.1, 2.5])
OBLIQUE[:3, 3] = [12.5, -7.0, 40.0]
GEOMETRIES = {"identity": np.eye(4), "oblique": OBLIQUE}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """A tiny 3-class U-Net with random (fixed) weights saved as a model folder."""
    import torch

    from fossilsegment_engine.models import ModelConfig, build_model, save_model
    from fossilsegment_engine.models.config import default_classes

    torch.manual_seed(0)
    config = ModelConfig(name="tiny-slicer-test", arch="unet",
                         arch_options={"encoder": "tu-resnet10t", "encoder_depth": 3, "decoder_channels": 8}, tile_size=64, tile_overlap=16, classes=default_classes(tooth=True))
    return str(save_model(build_model(config), config, tmp_path_factory.mktemp("m") / "tiny"))


@pytest.fixture(scope="module")
def logic() -> FossilSegmentLogic:
    return FossilSegmentLogic()


def ct_array(seed: int = 0) -> np.ndarray:
    """Phantom-like CT: noisy matrix with a dense, asymmetric 'bone' blob."""
    rng = np.random.default_rng(seed)
    a = rng.normal(1000, 150, SHAPE)
    k, j, i = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    a[((j - 12) / 8.0) ** 2 + ((i - 14) / 11.0) ** 2 + ((k - 4) / 4.0) ** 2 < 1] += 2500
    a[2:5, 25:33, 30:40] += 1800
    return a.astype(np.int16)


def add_volume(matrix: np.ndarray, name: str = "ct"):
    return slicer.util.addVolumeFromArray(ct_array(), matrix, name=name)


def ijk_to_ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


def segment_array(segNode, segmentId: str, reference):
    """A segment as a 0/1 array resampled into ``reference``'s geometry (through a temporary labelmap node)."""
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segmentId)
    labelNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    try:
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segNode, ids, labelNode, reference)
        assert ok
        np.testing.assert_allclose(ijk_to_ras(labelNode), ijk_to_ras(reference), atol=1e-9)
        return np.array(slicer.util.arrayFromVolume(labelNode)) > 0
    finally:
        slicer.mrmlScene.RemoveNode(labelNode)


def assert_equals_engine(segNode, volumeNode, labelmap, classes) -> None:
    segmentation = segNode.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(classes)
    for c in classes:
        segmentId = segmentation.GetSegmentIdBySegmentName(c["name"])
        assert segmentId, f"no segment named {c['name']}"
        np.testing.assert_allclose(segmentation.GetSegment(segmentId).GetColor(), c["color"], atol=1e-6)
        got = segment_array(segNode, segmentId, volumeNode)
        want = labelmap.array == c["value"]
        assert got.shape == want.shape
        assert np.array_equal(got, want), f"{c['name']}: {np.count_nonzero(got != want)} voxels differ"


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.slow
def test_process_equals_engine_voxel_for_voxel(scene, logic, model_dir, geometry):
    from fossilsegment_engine.inference.predictor import Predictor

    volumeNode = add_volume(GEOMETRIES[geometry])
    volume = logic.prepareInput(volumeNode)
    np.testing.assert_allclose(np.diag([-1, -1, 1, 1]) @ volume.ijk_to_lps(), GEOMETRIES[geometry], atol=1e-12)
    assert np.array_equal(volume.array, ct_array())

    segNode = logic.process(volumeNode, model=model_dir, **FAST)

    engine = Predictor.load(model_dir, device="cpu")
    from fossilsegment_engine.inference.postprocess import PostprocessOptions

    expected = engine.predict_labels(volume, postprocess=PostprocessOptions(min_island_voxels=0, fill_holes=False))
    classes = [c for c in engine.classes if c["value"] > 0]
    present = [c["name"] for c in classes if np.any(expected.array == c["value"])]
    assert len(present) >= 2, "test model too degenerate to compare segments"
    assert_equals_engine(segNode, volumeNode, expected, classes)
    # geometry of the segmentation = the volume's
    assert segNode.GetNodeReferenceID(segNode.GetReferenceImageGeometryReferenceRole()) == volumeNode.GetID()
    assert segNode.GetParentTransformNode() is None


@pytest.mark.slow
def test_default_postprocess_and_parent_transform(scene, logic, model_dir):
    from fossilsegment_engine.inference.postprocess import PostprocessOptions

    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(
        np.array([[0, -1, 0, 5], [1, 0, 0, -3], [0, 0, 1, 8], [0, 0, 0, 1.0]])))
    volumeNode = add_volume(OBLIQUE)
    volumeNode.SetAndObserveTransformNodeID(transform.GetID())
    segNode = logic.process(volumeNode, model=model_dir, device="cpu")  # default clean-up options
    assert segNode.GetTransformNodeID() == transform.GetID()
    engine = logic.getSegmenter(model_dir, "cpu")
    expected = engine.predict_labels(logic.prepareInput(volumeNode), postprocess=PostprocessOptions())
    assert_equals_engine(segNode, volumeNode, expected, [c for c in engine.classes if c["value"] > 0])


@pytest.mark.slow
def test_cancel_leaves_scene_unchanged(scene, logic, model_dir, tmp_path, monkeypatch):
    import threading

    import FossilSegmentLib.job_logic as job_logic

    folders = []
    monkeypatch.setattr(job_logic, "newJobFolder", lambda: folders.append(str(tmp_path / "job")) or
                        os.makedirs(folders[-1]) or folders[-1])
    volumeNode = add_volume(OBLIQUE)
    before = scene.GetNumberOfNodes()
    ids = [scene.GetNthNode(n).GetID() for n in range(before)]
    token = threading.Event()
    calls = []

    def progress(done, total):
        calls.append((done, total))
        token.set()

    with pytest.raises(Cancelled):
        logic.process(volumeNode, model=model_dir, progress=progress, cancel=token, batchSize=2, **FAST)
    assert calls, "progress was never reported"
    assert folders and not os.path.exists(folders[0])  # the job's files are gone
    assert not logic.isRunning()
    assert scene.GetNumberOfNodes() == before
    assert [scene.GetNthNode(n).GetID() for n in range(before)] == ids


@pytest.mark.slow
def test_existing_segments_need_overwrite(scene, logic, model_dir):
    volumeNode = add_volume(np.eye(4))
    segNode = logic.process(volumeNode, model=model_dir, **FAST)
    ids_before = list(segNode.GetSegmentation().GetSegmentIDs())
    user = segNode.GetSegmentation().AddEmptySegment("", "My notes", [0.1, 0.2, 0.3])
    nodes = scene.GetNumberOfNodes()
    with pytest.raises(OutputError, match="Bone"):
        logic.process(volumeNode, segNode, model=model_dir, **FAST)
    assert list(segNode.GetSegmentation().GetSegmentIDs()) == ids_before + [user]
    assert scene.GetNumberOfNodes() == nodes

    again = logic.process(volumeNode, segNode, model=model_dir, overwrite=True, **FAST)
    assert again is segNode
    names = [segNode.GetSegmentation().GetSegment(i).GetName() for i in segNode.GetSegmentation().GetSegmentIDs()]
    assert sorted(names) == sorted(["Bone", "Tooth", "My notes"])
    assert set(ids_before) <= set(segNode.GetSegmentation().GetSegmentIDs())  # same IDs reused
    engine = logic.getSegmenter(model_dir, "cpu")
    from fossilsegment_engine.inference.postprocess import PostprocessOptions

    expected = engine.predict_labels(logic.prepareInput(volumeNode), postprocess=PostprocessOptions(0, False))
    for c in (c for c in engine.classes if c["value"] > 0):
        got = segment_array(segNode, segNode.GetSegmentation().GetSegmentIdBySegmentName(c["name"]), volumeNode)
        assert np.array_equal(got, expected.array == c["value"])


def test_slice_range_and_roi(scene, logic, model_dir):
    volumeNode = add_volume(OBLIQUE)
    volume = logic.prepareInput(volumeNode)
    labels = logic.runEngine(volume, model=model_dir, sliceRange=(3, 6), **FAST)
    assert not labels.array[:3].any() and not labels.array[6:].any()

    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetCenter((OBLIQUE @ np.array([20.0, 18.0, 5.0, 1.0]))[:3].tolist())  # voxel (i, j, k) = (20, 18, 5)
    roi.SetSize([1.0, 1.0, 1.0])
    box = logic.boxFromROI(volumeNode, roi)
    assert (box.k0, box.k1) == (5, 6)
    roi.SetSize([200.0, 200.0, 200.0])
    box = logic.boxFromROI(volumeNode, roi)
    assert (box.k0, box.k1) == (0, SHAPE[0])
    roi.SetCenter([0.0, 0.0, 1000.0])
    roi.SetSize([1.0, 1.0, 1.0])
    with pytest.raises(InputError):
        logic.boxFromROI(volumeNode, roi)


@pytest.mark.slow
def test_progress_covers_segmenting_and_cleanup_on_one_bar(scene, logic, model_dir):
    volumeNode = add_volume(np.eye(4))
    calls = []
    logic.process(volumeNode, model=model_dir, progress=lambda d, t: calls.append((d, t)), batchSize=2,
                  **{**FAST, "minIslandVoxels": 8, "fillHoles": True})
    done = [d for d, _ in calls]
    assert {t for _, t in calls} == {1000} and done == sorted(done) and done[-1] == 1000
    assert any(d <= 909 for d in done) and any(909 < d < 1000 for d in done)  # the clean-up's tenth moves too
    calls.clear()
    logic.process(volumeNode, model=model_dir, progress=lambda d, t: calls.append((d, t)), batchSize=2, **FAST)
    assert calls[-1] == (1000, 1000)  # no clean-up asked for: the bar still ends full


@pytest.mark.slow
def test_process_runs_the_engine_in_another_process(scene, model_dir):
    calls = []

    def factory(model, device, batchSize):
        calls.append((model, device, batchSize))
        return defaultSegmenterFactory(model, device, batchSize)

    logic = FossilSegmentLogic(segmenterFactory=factory)
    volumeNode = add_volume(np.eye(4))
    segNode = logic.process(volumeNode, model=model_dir, **FAST)
    assert segNode.GetSegmentation().GetNumberOfSegments() == 2
    assert calls == [] and logic._segmenters == {}  # no model (and no GPU memory) held by this process


def test_bad_inputs(scene, logic, model_dir):
    label = slicer.util.addVolumeFromArray(np.zeros(SHAPE, np.uint8), nodeClassName="vtkMRMLLabelMapVolumeNode")
    with pytest.raises(InputError, match="labelmap"):
        logic.prepareInput(label)
    with pytest.raises(InputError):
        logic.prepareInput(None)
    volumeNode = add_volume(np.eye(4))
    volume = logic.prepareInput(volumeNode)
    wrong = volume.with_array(np.zeros(SHAPE, np.uint8))
    other = slicer.util.addVolumeFromArray(np.zeros((3, 4, 5), np.int16))
    nodes = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="shape"):
        logic.applyResult(wrong, other, classes=logic.modelClasses(model=model_dir, device="cpu"))
    assert scene.GetNumberOfNodes() == nodes


def _read_stl(path: str):
    reader = vtk.vtkSTLReader()
    reader.SetFileName(path)
    reader.Update()
    return reader.GetOutput()


def _open_edges(poly) -> int:
    edges = vtk.vtkFeatureEdges()
    edges.SetInputData(poly)
    edges.BoundaryEdgesOn()
    edges.NonManifoldEdgesOff()  # random-weight labels touch along edges; closed = no boundary edge
    edges.FeatureEdgesOff()
    edges.ManifoldEdgesOff()
    edges.Update()
    return edges.GetOutput().GetNumberOfCells()


@pytest.mark.slow
def test_export_stl(scene, logic, model_dir, tmp_path):
    volumeNode = add_volume(OBLIQUE)
    segNode = logic.process(volumeNode, model=model_dir, **FAST)
    segmentation = segNode.GetSegmentation()
    empty = segmentation.AddEmptySegment("", "Empty", [1.0, 0.0, 0.0])
    folder = tmp_path / "new" / "stl"
    paths = logic.exportStl(segNode, str(folder))

    names = [segmentation.GetSegment(i).GetName() for i in segmentation.GetSegmentIDs() if i != empty]
    assert sorted(os.path.basename(p) for p in paths) == sorted(f"{segNode.GetName()}_{n}.stl" for n in names)
    assert sorted(os.listdir(folder)) == sorted(os.path.basename(p) for p in paths)  # no staging left behind
    # volume bounds in LPS (voxel corners); surface smoothing may bulge a little: 1 mm margin (voxels 0.7-2.5 mm)
    corners = np.array([[i, j, k, 1.0] for i in (-0.5, SHAPE[2] - 0.5) for j in (-0.5, SHAPE[1] - 0.5)
                        for k in (-0.5, SHAPE[0] - 0.5)])
    lps = (np.diag([-1, -1, 1, 1]) @ OBLIQUE @ corners.T).T[:, :3]
    lo, hi = lps.min(axis=0) - 1.0, lps.max(axis=0) + 1.0
    for path in paths:
        poly = _read_stl(path)
        assert poly.GetNumberOfPoints() > 0
        assert _open_edges(poly) == 0, f"{path} is not closed"
        pts = vtk.util.numpy_support.vtk_to_numpy(poly.GetPoints().GetData())
        assert (pts >= lo).all() and (pts <= hi).all(), f"{path} lies outside the volume (LPS)"

    before = {p: Path(p).read_bytes() for p in paths}
    again = logic.exportStl(segNode, str(folder))
    assert not set(again) & set(paths) and len(again) == len(paths)
    assert all(Path(p).read_bytes() == b for p, b in before.items())  # untouched


@pytest.mark.slow
def test_export_stl_same_names_and_slashes(scene, logic, model_dir, tmp_path):
    segNode = logic.process(add_volume(OBLIQUE), model=model_dir, **FAST)
    segmentation = segNode.GetSegmentation()
    twin = slicer.vtkSegment()
    twin.DeepCopy(segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Bone")))
    segmentation.AddSegment(twin)  # a second segment named "Bone"
    toothId = segmentation.GetSegmentIdBySegmentName("Tooth")
    segmentation.GetSegment(toothId).SetName("Tooth/left")
    segNode.SetName("scan 1/2")
    paths = logic.exportStl(segNode, str(tmp_path))
    assert sorted(os.path.basename(p) for p in paths) == ["scan 1_2_Bone.stl", "scan 1_2_Bone_1.stl",
                                                          "scan 1_2_Tooth_left.stl"]
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in paths)
    assert segNode.GetName() == "scan 1/2" and segmentation.GetSegment(toothId).GetName() == "Tooth/left"
    assert Path(paths[0]).read_bytes() != b"" and all(_read_stl(p).GetNumberOfPoints() > 0 for p in paths)


def test_export_stl_refuses_empty(scene, logic):
    segNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    with pytest.raises(InputError):
        logic.exportStl(segNode, "/nonexistent/never-created")
    segNode.GetSegmentation().AddEmptySegment("", "Bone", [1.0, 1.0, 1.0])
    with pytest.raises(InputError, match="empty"):
        logic.exportStl(segNode, "/nonexistent/never-created")
    assert not os.path.exists("/nonexistent/never-created")


def test_failed_import_leaves_scene_unchanged(scene, logic, model_dir, monkeypatch):
    volumeNode = add_volume(np.eye(4))
    labels = logic.runEngine(logic.prepareInput(volumeNode), model=model_dir, **FAST)
    classes = logic.modelClasses(model=model_dir, device="cpu")
    nodes = scene.GetNumberOfNodes()

    def broken(*args):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(FossilSegmentLogic, "_orientedLabelmap", staticmethod(broken))
    with pytest.raises(RuntimeError, match="simulated"):
        logic.applyResult(labels, volumeNode, classes=classes)
    assert scene.GetNumberOfNodes() == nodes
    with pytest.raises(InputError, match="slice range"):
        logic.runEngine(logic.prepareInput(volumeNode), model=model_dir, sliceRange=(0, 0), **FAST)


@pytest.mark.slow
def test_show_in_3d_builds_surfaces(scene, logic, model_dir):
    segNode = logic.process(add_volume(OBLIQUE), model=model_dir, **FAST)
    surface = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
    assert not segNode.GetSegmentation().ContainsRepresentation(surface)
    logic.showIn3D(segNode)
    assert segNode.GetSegmentation().ContainsRepresentation(surface)
    assert segNode.GetDisplayNode().GetVisibility3D()


@pytest.mark.parametrize("seed", range(5))
def test_geometry_round_trip(seed):
    from fossilsegment_engine.volume import Volume
    from FossilSegmentLib.geometry import lpsGeometryFromIJKToRAS

    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # any rotation or reflection
    m = np.eye(4)
    m[:3, :3] = q @ np.diag(rng.uniform(0.05, 3.0, 3))
    m[:3, 3] = rng.uniform(-100, 100, 3)
    spacing, origin, direction = lpsGeometryFromIJKToRAS(m)
    volume = Volume(np.zeros((1, 1, 1), np.uint8), spacing, origin, direction)
    np.testing.assert_allclose(np.diag([-1, -1, 1, 1]) @ volume.ijk_to_lps(), m, atol=1e-12)  # the engine's LPS
    np.testing.assert_allclose(np.linalg.norm(np.reshape(direction, (3, 3)), axis=0), 1.0)
    bad = m.copy()
    bad[:3, 2] = bad[:3, 0]
    with pytest.raises(ValueError):
        lpsGeometryFromIJKToRAS(bad)


def test_parameter_node_is_a_singleton(scene):
    node = FossilSegmentLogic.parameterMRMLNode()
    assert node.GetScene() is scene and node.GetAttribute("ModuleName") == "FossilSegment"
    assert FossilSegmentLogic.parameterMRMLNode() is node
    assert scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode") == 1
