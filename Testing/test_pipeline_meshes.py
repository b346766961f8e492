"""The shared pipeline's mesh, QC and provenance outputs, and the `segment` CLI's mesh options."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from _helpers_io import ball
from fossilsegment_engine import __version__
from fossilsegment_engine.cli import main
from fossilsegment_engine.io.mesh_io import MeshOptions, MeshTooLargeError
from fossilsegment_engine.io.segmentation_io import read_seg_nrrd
from fossilsegment_engine.io.snapshot import can_render_offscreen
from fossilsegment_engine.pipeline import Outputs, segment_and_write, segment_tags
from fossilsegment_engine.volume import Volume

CLASSES = [{"value": 0, "name": "Background", "color": [0, 0, 0]}, {"value": 1, "name": "Bone", "color": [0.9, 0.85, 0.8]}]


class FakeSegmenter:
    """Returns a fixed labelmap: the pipeline without a network."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels
        self.config = SimpleNamespace(name="fake-model", weights_sha256="ab" * 32)
        self.classes = CLASSES
        self.device = "cpu"

    def predict_labels(self, volume: Volume, progress=None, cancel=None, **_: object) -> Volume:
        return volume.with_array(self.labels)


def _volume(shape=(20, 24, 24)) -> Volume:
    rng = np.random.default_rng(0)
    return Volume(rng.normal(1000, 50, shape).astype(np.float32), (0.5, 0.5, 0.8), (1.0, 2.0, 3.0),
                  meta={"source_path": "/data/scan.nrrd"})


def test_meshes_qc_and_provenance(tmp_path: Path) -> None:
    vol = _volume()
    seg = FakeSegmenter(ball(vol.shape, 6.0).astype(np.uint8))
    outputs = Outputs(seg_nrrd=tmp_path / "s.seg.nrrd", stl_dir=tmp_path / "meshes", qc_dir=tmp_path / "qc",
                      mesh=MeshOptions(formats=("stl", "ply")))
    record = segment_and_write(vol, seg, outputs, {"device": "cpu"}, corrected_slices=[7, 3, 7])
    assert sorted(p.name for p in (tmp_path / "meshes").iterdir()) == [
        "Bone.ply", "Bone.report.json", "Bone.stl", "provenance.json"]
    sidecar = json.loads((tmp_path / "meshes" / "provenance.json").read_text())
    assert sidecar["model"] == "fake-model" and sidecar["model_weights_sha256"] == "ab" * 32
    assert sidecar["engine_version"] == __version__ and sidecar["corrected_slices"] == [3, 7]
    assert sidecar["input"] == "/data/scan.nrrd"
    assert sidecar["parameters"]["mesh"]["formats"] == ["stl", "ply"]
    assert sidecar["meshes"][0]["watertight"] and record.mesh_reports == sidecar["meshes"]
    _, segments = read_seg_nrrd(tmp_path / "s.seg.nrrd")
    labels, _ = read_seg_nrrd(tmp_path / "s.seg.nrrd")
    assert labels.meta["provenance"]["corrected_slices"] == [3, 7]
    qc = sorted(p.name for p in (tmp_path / "qc").iterdir())
    assert qc == (["montage.png", "snapshot.png"] if can_render_offscreen() else ["montage.png"])
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_segment_tags_are_short_and_safe() -> None:
    tags = segment_tags({"software": "FossilSegment 0.1.0", "model": "a|b", "corrected_slices": [1, 2],
                         "parameters": {"x": 1}, "date": "2026-01-01T00:00:00+00:00"})
    assert tags == {"FossilSegment.software": "FossilSegment 0.1.0", "FossilSegment.model": "a/b",
                    "FossilSegment.corrected_slices": "1,2", "FossilSegment.date": "2026-01-01T00:00:00+00:00"}


def test_segment_tags_in_seg_nrrd_when_writer_supports_them(tmp_path: Path) -> None:
    import inspect

    from fossilsegment_engine.io.segmentation_io import write_seg_nrrd

    if "segment_tags" not in inspect.signature(write_seg_nrrd).parameters:
        pytest.skip("write_seg_nrrd has no segment_tags parameter yet (segmentation_io patch pending)")
    vol = _volume()
    segment_and_write(vol, FakeSegmenter(ball(vol.shape, 6.0).astype(np.uint8)), Outputs(seg_nrrd=tmp_path / "s.seg.nrrd"))
    _, segments = read_seg_nrrd(tmp_path / "s.seg.nrrd")
    assert segments[0]["tags"]["FossilSegment.model"] == "fake-model"


def test_no_foreground_writes_no_mesh(tmp_path: Path) -> None:
    vol = _volume()
    outputs = Outputs(labelmap=tmp_path / "lm.nrrd", stl_dir=tmp_path / "meshes", qc_dir=tmp_path / "qc")
    record = segment_and_write(vol, FakeSegmenter(np.zeros(vol.shape, np.uint8)), outputs)
    assert not (tmp_path / "meshes").exists()
    assert [p.name for p in (tmp_path / "qc").iterdir()] == ["montage.png"]
    assert record.notes == ["no bone found: no mesh or 3D snapshot written"]


def test_mesh_over_limit_writes_nothing_at_all(tmp_path: Path) -> None:
    vol = _volume()
    outputs = Outputs(seg_nrrd=tmp_path / "s.seg.nrrd", labelmap=tmp_path / "lm.nrrd", stl_dir=tmp_path / "meshes",
                      qc_dir=tmp_path / "qc", mesh=MeshOptions(max_triangles=50))
    with pytest.raises(MeshTooLargeError, match="limit of 50"):
        segment_and_write(vol, FakeSegmenter(ball(vol.shape, 6.0).astype(np.uint8)), outputs)
    assert list(tmp_path.iterdir()) == []


def _scan_file(tmp_path: Path) -> Path:
    k, j, i = np.indices((12, 40, 48))
    blob = (k - 6) ** 2 / 25 + (j - 20) ** 2 / 150 + (i - 24) ** 2 / 200 < 1
    img = sitk.GetImageFromArray((1000 + 800 * blob + np.random.default_rng(0).normal(0, 30, blob.shape)).astype(np.uint16))
    img.SetSpacing((0.5, 0.6, 0.7))
    sitk.WriteImage(img, str(tmp_path / "scan.nrrd"))
    return tmp_path / "scan.nrrd"


def test_cli_segment_mesh_options(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    src = _scan_file(tmp_path)
    rc = main(["segment", str(src), "--model", str(tiny_model_dir), "--device", "cpu", "--stl", str(tmp_path / "m"),
               "--mesh-format", "ply,obj", "--mesh-format", "stl", "--mesh-coordinates", "ras", "--smoothing", "0.2",
               "--decimation", "0.3", "--qc", str(tmp_path / "qc"), "-o", str(tmp_path / "s.seg.nrrd")])
    assert rc == 0
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["Bone.obj", "Bone.ply", "Bone.report.json", "Bone.stl", "provenance.json"]
    assert (tmp_path / "m" / "Bone.stl").read_bytes().startswith(b"SPACE=RAS")
    options = json.loads((tmp_path / "m" / "provenance.json").read_text())["mesh_options"]
    assert options == {"formats": ["ply", "obj", "stl"], "coordinates": "RAS", "smoothing": 0.2, "decimation": 0.3,
                       "max_triangles": None}
    assert (tmp_path / "qc" / "montage.png").is_file()
    assert "watertight" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [(["--mesh-format", "gltf"], "mesh format"),
                                            (["--smoothing", "2"], "smoothing"),
                                            (["--max-mesh-triangles", "10"], "more than the limit of 10")])
def test_cli_segment_bad_mesh_options(tmp_path: Path, tiny_model_dir: Path, capsys, extra, message) -> None:
    src = _scan_file(tmp_path)
    rc = main(["segment", str(src), "--model", str(tiny_model_dir), "--device", "cpu", "--stl", str(tmp_path / "m"),
               "-o", str(tmp_path / "s.seg.nrrd"), *extra])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nrrd"]
