"""Thorough segmentation: the mean of five passes (three views, two mirrors), and the pass machinery under it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fossilsegment_engine.cli import main
from fossilsegment_engine.errors import FossilSegmentError
from fossilsegment_engine.inference.passes import (AXIAL, CORONAL, MIRROR_I, MIRROR_IJ, MIRROR_J, SAGITTAL, THOROUGH,
                                                   summed_probabilities, usable_passes)
from fossilsegment_engine.inference.predictor import Predictor
from fossilsegment_engine.inference.uncertainty import uncertainty_volume
from fossilsegment_engine.io.segmentation_io import read_seg_nrrd
from fossilsegment_engine.models.config import ModelConfig
from fossilsegment_engine.roi import Box
from fossilsegment_engine.volume import Volume


class LeftEdge(nn.Module):
    """A toy model that depends on orientation: bone where the pixel to the left is brighter than 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0, 1, 0] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv(x) - 0.5
        return torch.cat([-s, s], dim=1) * 4


def _predictor(**kw) -> Predictor:
    config = ModelConfig(name="toy", arch="unet", arch_options={"encoder_depth": 3}, tile_size=64, tile_overlap=8)
    return Predictor.from_module(LeftEdge(), config, device="cpu", **kw)


def _scan(shape=(36, 40, 44), spacing=(0.5, 0.5, 0.6)) -> Volume:
    rng = np.random.default_rng(1)
    k, j, i = np.indices(shape)
    blob = (k - 18) ** 2 / 120 + (j - 20) ** 2 / 90 + (i - 22) ** 2 / 200 < 1
    return Volume((1000 + 900 * blob + rng.normal(0, 150, shape)).astype(np.int16), spacing=spacing)


def _identity(array: np.ndarray, box: Box, progress, cancel) -> np.ndarray:
    """'Probabilities' that are the voxel values themselves inside ``box`` (class 1), so misplacing shows."""
    out = np.zeros((2, *array.shape), np.uint8)
    out[1][box.slices()] = array[box.slices()]
    out[0][box.slices()] = 255 - array[box.slices()]
    if progress:
        progress(box.shape[0], box.shape[0])
    return out


@pytest.mark.parametrize("p", [AXIAL, MIRROR_I, MIRROR_J, MIRROR_IJ, CORONAL, SAGITTAL], ids=lambda p: p.name)
def test_each_pass_puts_the_box_back_where_it_was(p):
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 9)).astype(np.uint8)
    box = Box(1, 4, 2, 7, 0, 5)
    summed = summed_probabilities(_identity, array, [p], box)
    expected = np.zeros_like(array, np.uint16)
    expected[box.slices()] = array[box.slices()]
    assert summed.dtype == np.uint16 and np.array_equal(summed[1], expected)


def test_views_too_small_or_too_anisotropic_are_left_out():
    names = lambda shape, spacing: [p.name for p in usable_passes(THOROUGH, shape, spacing)]  # noqa: E731
    assert len(names((40, 64, 64), (0.1, 0.1, 0.2))) == 5
    assert names((3, 900, 900), (1, 1, 1)) == [AXIAL.name, MIRROR_I.name, MIRROR_J.name]  # a 3-slice stack
    assert CORONAL.name not in names((40, 64, 64), (0.1, 0.1, 0.3))  # k steps 3× i: both views squash 3:1
    assert SAGITTAL.name not in names((40, 64, 64), (0.1, 0.1, 0.3))
    only_j = names((40, 64, 64), (0.1, 0.3, 0.1))  # rows 3× longer: only the sagittal view (k, j) is squashed
    assert CORONAL.name in only_j and SAGITTAL.name not in only_j


def test_thorough_probabilities_are_the_mean_of_the_five_passes_and_labels_their_argmax():
    vol = _scan()
    single, thorough = _predictor(), _predictor(thorough=True)
    expected = np.zeros((2, *vol.shape), np.float64)
    for p in THOROUGH:
        probs = single.predict_probabilities(Volume(np.ascontiguousarray(p.forward(vol.array))), postprocess=None)
        expected += p.back(np.stack([q.array for q in probs.probabilities]))
    got = thorough.predict_probabilities(vol, postprocess=None)
    assert thorough.passes == [p.name for p in THOROUGH]
    mean = np.stack([q.array for q in got.probabilities]).astype(np.float64)
    assert np.abs(mean - expected / 5).max() <= 0.5 + 1e-9  # rounded to uint8
    assert np.array_equal(got.labels.array, (expected[1] > expected[0]).astype(np.uint8))
    one = single.predict_labels(vol, postprocess=None).array
    assert (one != got.labels.array).sum() > 100  # the toy model's passes do disagree (at the edges)
    assert np.array_equal(thorough.predict_labels(vol, postprocess=None, thorough=False).array, one)
    assert thorough.passes == [AXIAL.name]


def test_thorough_progress_counts_every_pass_and_nothing_outside_the_box():
    vol, box = _scan(), Box(1, 35, 2, 38, 4, 42)  # each side ≥ 32 px: every view is used
    seen: list[tuple[int, int]] = []
    labels = _predictor(thorough=True).predict_labels(vol, roi=box, progress=lambda d, t: seen.append((d, t)))
    total = 34 + 36 + 38 + 34 + 34  # the box's slices along k, j, i, then k twice (mirrors)
    assert seen[-1] == (total, total) and all(t == total for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    outside = np.ones(vol.shape, bool)
    outside[box.slices()] = False
    assert labels.array[outside].max() == 0 and labels.array[box.slices()].any()


def test_uncertainty_of_a_thorough_predictor_uses_single_passes():
    vol = _scan()
    thorough = _predictor(thorough=True)
    unc = uncertainty_volume(thorough, vol, "tta")
    assert np.array_equal(unc.array, uncertainty_volume(_predictor(), vol, "tta").array)
    assert thorough.passes == [AXIAL.name]


def test_thorough_must_be_a_boolean():
    with pytest.raises(FossilSegmentError, match="thorough must be True or False"):
        _predictor(thorough="yes")
    with pytest.raises(FossilSegmentError, match="thorough must be True or False"):
        _predictor().predict_labels(_scan(), thorough="yes")  # per call too


def test_segment_command_thorough(tmp_path: Path, tiny_model_dir: Path, capsys):
    import SimpleITK as sitk

    src = tmp_path / "scan.nrrd"
    image = sitk.GetImageFromArray(_scan().array)
    image.SetSpacing((0.5, 0.5, 0.6))
    sitk.WriteImage(image, str(src))
    out, seg = tmp_path / "lm.nrrd", tmp_path / "out.seg.nrrd"
    assert main(["segment", str(src), "--model", str(tiny_model_dir), "--labelmap", str(out), "-o", str(seg),
                 "--device", "cpu", "--thorough"]) == 0
    assert "thorough: mean of 5 passes (axial, coronal, sagittal" in capsys.readouterr().out
    assert sitk.ReadImage(str(out)).GetSize() == image.GetSize()
    provenance = read_seg_nrrd(seg)[0].meta["provenance"]
    assert provenance["parameters"]["thorough"] is True
    assert provenance["inference"]["passes"] == [p.name for p in THOROUGH]


@pytest.mark.parametrize("thorough", [False, True])
def test_the_panel_s_segment_command_asks_for_thorough_only_when_ticked(thorough):
    from fossilsegment_engine.cli import build_parser
    from FossilSegmentLib import engine_jobs

    (command,) = engine_jobs.segmentCommands(thorough=thorough)
    assert build_parser().parse_args(command).thorough is thorough


def test_a_box_too_thin_for_the_views_gets_the_mirrors_only():
    seg = _predictor(thorough=True)
    seg.predict_labels(_scan(), slice_range=(10, 20))  # coronal and sagittal slices of the box: 10 rows
    assert seg.passes == [AXIAL.name, MIRROR_I.name, MIRROR_J.name]


def test_tune_threshold_offers_no_thorough(tmp_path: Path, tiny_model_dir: Path):
    with pytest.raises(SystemExit):  # its offset is applied to each pass's logits: tuned on one pass only
        main(["tune-threshold", "--model", str(tiny_model_dir), "--data", str(tmp_path), "-o", str(tmp_path / "m"),
              "--thorough"])
