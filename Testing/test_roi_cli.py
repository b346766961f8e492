"""``fossilsegment segment --roi / --roi-mm`` end to end with a tiny model: labels outside the box are 0,
inside they are the engine's, the labelmap keeps the input's geometry, the provenance records the box."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fossilsegment_engine.cli import main
from fossilsegment_engine.roi import Box, box_from_lps_bounds

SHAPE = (12, 40, 48)  # k, j, i
OBLIQUE = tuple(sitk.VersorTransform((0.3, -0.2, 0.9), 0.7).GetMatrix())
FAST = ["--device", "cpu", "--min-island", "0", "--no-fill-holes"]


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    k, j, i = np.indices(SHAPE)
    ball = (k - 6) ** 2 / 25 + (j - 20) ** 2 / 150 + (i - 24) ** 2 / 200 < 1
    img = sitk.GetImageFromArray((1000 + 800 * ball + rng.normal(0, 30, SHAPE)).astype(np.uint16))
    img.SetSpacing((0.5, 0.6, 0.7))
    img.SetOrigin((1.0, -2.0, 3.0))
    img.SetDirection(OBLIQUE)
    path = tmp_path_factory.mktemp("scan") / "scan.nrrd"
    sitk.WriteImage(img, str(path))
    return path


def segment(scan: Path, model: Path, out: Path, *options: str) -> tuple[int, np.ndarray | None, dict]:
    """Exit code, labelmap array and provenance of one ``segment`` run into ``out`` (a new folder)."""
    from fossilsegment_engine.io.segmentation_io import read_seg_nrrd

    out.mkdir()
    rc = main(["segment", str(scan), "--model", str(model), "--labelmap", str(out / "lm.nrrd"),
               "-o", str(out / "out.seg.nrrd"), *FAST, *options])
    if rc != 0:
        assert not any(out.iterdir()), "a failed run wrote something"
        return rc, None, {}
    labels, image = sitk.ReadImage(str(out / "lm.nrrd")), sitk.ReadImage(str(scan))
    assert labels.GetSize() == image.GetSize()
    np.testing.assert_allclose(labels.GetSpacing(), image.GetSpacing(), rtol=1e-12)
    np.testing.assert_allclose(labels.GetOrigin(), image.GetOrigin(), atol=1e-12)
    np.testing.assert_allclose(labels.GetDirection(), image.GetDirection(), atol=1e-12)
    provenance = read_seg_nrrd(out / "out.seg.nrrd")[0].meta["provenance"]
    return rc, sitk.GetArrayFromImage(labels), provenance


def engine_labels(scan: Path, model: Path, box: Box) -> np.ndarray:
    from fossilsegment_engine.inference.postprocess import PostprocessOptions
    from fossilsegment_engine.inference.predictor import Predictor
    from fossilsegment_engine.io.volume_io import read_volume

    segmenter = Predictor.load(model, device="cpu")
    return segmenter.predict_labels(read_volume(scan), roi=box, postprocess=PostprocessOptions(0, False)).array


def outside(box: Box) -> np.ndarray:
    mask = np.ones(SHAPE, bool)
    mask[box.slices()] = False
    return mask


def test_voxel_roi(scan, tiny_model_dir, tmp_path):
    rc, labels, provenance = segment(scan, tiny_model_dir, tmp_path / "a", "--roi", "5:30,8:25,2:9")
    assert rc == 0
    box = Box(k0=2, k1=9, j0=8, j1=25, i0=5, i1=30)  # given as i, j, k
    assert not labels[outside(box)].any()
    assert labels[box.slices()].any(), "the tiny model found nothing: the test would prove nothing"
    assert np.array_equal(labels, engine_labels(scan, tiny_model_dir, box))
    assert provenance["parameters"]["roi_ijk"] == [[5, 30], [8, 25], [2, 9]]
    assert "roi_mm_lps" not in provenance["parameters"]
    # what actually ran is recorded (a small CPU job: eager, one pass)
    assert provenance["inference"] == {"mode": provenance["inference"]["mode"], "passes": ["axial"]}
    assert provenance["inference"]["mode"] in {"eager-fp32", "eager-bf16"}
    assert provenance["parameters"]["thorough"] is False


def test_mm_roi_on_oblique_scan(scan, tiny_model_dir, tmp_path):
    image = sitk.ReadImage(str(scan))
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint((24.0, 20.0, 6.0)))
    bounds = tuple((float(c - 6), float(c + 6)) for c in centre)
    text = ",".join(f"{lo}:{hi}" for lo, hi in bounds)
    rc, labels, provenance = segment(scan, tiny_model_dir, tmp_path / "a", f"--roi-mm={text}")
    assert rc == 0
    m = np.eye(4)
    m[:3, :3] = np.asarray(OBLIQUE).reshape(3, 3) @ np.diag(image.GetSpacing())
    m[:3, 3] = image.GetOrigin()
    box = box_from_lps_bounds(bounds, m, SHAPE)
    assert box != Box.whole(SHAPE)
    # every voxel whose centre is inside the mm box may be labelled; nothing outside the voxel box is
    k, j, i = np.indices(SHAPE).reshape(3, -1)
    centres = np.array([image.TransformIndexToPhysicalPoint((int(a), int(b), int(c))) for a, b, c in zip(i, j, k)])
    inside_mm = np.all((centres >= [lo for lo, _ in bounds]) & (centres <= [hi for _, hi in bounds]), axis=1)
    assert not outside(box).ravel()[inside_mm].any()
    assert not labels[outside(box)].any()
    assert np.array_equal(labels, engine_labels(scan, tiny_model_dir, box))
    assert provenance["parameters"]["roi_ijk"] == box.ijk_ranges()
    np.testing.assert_allclose(provenance["parameters"]["roi_mm_lps"], bounds)


def test_whole_slice_roi_equals_slices_option(scan, tiny_model_dir, tmp_path):
    _, by_roi, _ = segment(scan, tiny_model_dir, tmp_path / "a", "--roi", ":,:,3:8")
    _, by_slices, _ = segment(scan, tiny_model_dir, tmp_path / "b", "--slices", "3:8")
    assert by_roi[3:8].any() and np.array_equal(by_roi, by_slices)
    _, both, provenance = segment(scan, tiny_model_dir, tmp_path / "c", "--roi", ":,:,3:8", "--slices", "6:12")
    assert not both[:6].any() and np.array_equal(both[6:8], by_slices[6:8]) and not both[8:].any()
    assert provenance["parameters"]["roi_ijk"] == [[0, 48], [0, 40], [6, 8]]


@pytest.mark.parametrize("options, message", [
    (["--roi", ":,:,3:8", "--slices", "8:12"], "share no slice"),
    (["--roi", "60:70,:,:"], r"\(48, 40, 12\)"),
    (["--roi", "1:2,3:4"], "three START:STOP"),
    (["--roi-mm=500:600,0:1,0:1"], "lies entirely outside the volume, which spans"),
])
def test_bad_roi_exits_2_and_writes_nothing(scan, tiny_model_dir, tmp_path, capsys, options, message):
    rc, _, _ = segment(scan, tiny_model_dir, tmp_path / "a", *options)
    assert rc == 2
    assert re.search(message, capsys.readouterr().err)


def test_roi_syntax_checked_before_reading(tmp_path, capsys):
    rc = main(["segment", str(tmp_path / "missing.nrrd"), "--labelmap", str(tmp_path / "lm.nrrd"),
               "--roi-mm", "1:x,0:1,0:1"])
    assert rc == 2 and "--roi-mm" in capsys.readouterr().err


def test_roi_and_roi_mm_are_exclusive(scan, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["segment", str(scan), "--labelmap", str(tmp_path / "lm.nrrd"), "--roi", "1:2,1:2,1:2",
              "--roi-mm", "0:1,0:1,0:1"])
    assert exc.value.code == 2
