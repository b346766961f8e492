"""Slicer .seg.nrrd output: segments, colours, label values, geometry and provenance survive a round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import slicerio

from _helpers_io import OBLIQUE, ORIGIN, SPACING
from fossilsegment_engine.errors import OutputError
from fossilsegment_engine.io import read_seg_nrrd, write_seg_nrrd
from fossilsegment_engine.volume import Volume

CLASSES = [
    {"value": 0, "name": "Matrix", "color": [0.2, 0.2, 0.2]},
    {"value": 1, "name": "Bone", "color": [0.89, 0.85, 0.79]},
    {"value": 2, "name": "Tooth", "color": [255, 255, 204]},
    {"value": 3, "name": "Unused", "color": [0, 1, 0]},
]


def _labels() -> Volume:
    array = np.zeros((8, 9, 10), dtype=np.uint8)
    array[2:6, 3:7, 1:8] = 1
    array[6, 1:3, 2] = 2
    return Volume(array, SPACING, ORIGIN, OBLIQUE)


def test_seg_nrrd_round_trip(tmp_path: Path) -> None:
    labels = _labels()
    path = write_seg_nrrd(labels, CLASSES, tmp_path / "out.seg.nrrd", metadata={"model": "fossil-bone-v1", "version": 1})
    seg = slicerio.read_segmentation(str(path))
    assert slicerio.segment_names(seg) == ["Bone", "Tooth"]  # background and absent classes are not segments
    bone = slicerio.segment_from_name(seg, "Bone")
    assert bone["labelValue"] == 1 and bone["color"] == pytest.approx([0.89, 0.85, 0.79])
    assert slicerio.segment_from_name(seg, "Tooth")["color"] == pytest.approx([1.0, 1.0, 0.8])  # 0-255 scaled
    expected = np.eye(4)
    expected[:3, :3] = np.asarray(OBLIQUE).reshape(3, 3) * SPACING
    expected[:3, 3] = ORIGIN
    np.testing.assert_allclose(seg["ijkToLPS"], expected, atol=1e-12)
    np.testing.assert_array_equal(seg["voxels"], labels.array.transpose(2, 1, 0))

    back, segments = read_seg_nrrd(path)
    np.testing.assert_array_equal(back.array, labels.array)
    assert back.same_geometry(labels, tol=1e-9)
    assert back.meta["provenance"] == {"model": "fossil-bone-v1", "version": 1}
    assert [s["name"] for s in segments] == ["Bone", "Tooth"]


def test_seg_nrrd_refuses_existing_and_bad_name(tmp_path: Path) -> None:
    path = tmp_path / "out.seg.nrrd"
    path.write_bytes(b"old")
    with pytest.raises(OutputError, match="exists"):
        write_seg_nrrd(_labels(), CLASSES, path)
    assert path.read_bytes() == b"old"
    with pytest.raises(OutputError, match=r"\.seg\.nrrd"):
        write_seg_nrrd(_labels(), CLASSES, tmp_path / "out.nrrd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.seg.nrrd"]


def test_slicer_reads_the_segmentation(tmp_path: Path) -> None:
    slicer = pytest.importorskip("slicer")
    path = write_seg_nrrd(_labels(), CLASSES, tmp_path / "out.seg.nrrd")
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    names = [segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())]
    assert names == ["Bone", "Tooth"]
    assert segmentation.GetNthSegment(0).GetColor() == pytest.approx((0.89, 0.85, 0.79))
