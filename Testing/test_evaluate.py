"""Metrics on hand-made arrays, the classical baselines, and the evaluation report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _helpers_training import write_dataset, write_specimen
from fossilsegment_engine.errors import InputError
from fossilsegment_engine.training.baselines import otsu_baseline, region_growing_baseline
from fossilsegment_engine.training.metrics import ClassScores, segmentation_metrics, slice_scores

CLASSES = [{"value": 0, "name": "Background", "color": [0, 0, 0]}, {"value": 1, "name": "Bone", "color": [1, 1, 1]}]


def test_slice_mean_excludes_empty_slices_and_differs_from_volume() -> None:
    truth = np.zeros((3, 4, 4), np.uint8)
    pred = np.zeros_like(truth)
    truth[1, 0, :4] = 1            # 4 px
    pred[1, 0, 2:4] = 1            # 2 px inside → Dice 2·2/(4+2) = 2/3
    pred[1, 1, 0:2] = 1            # 2 px outside → slice 1: 2·2/(4+4) = 0.5, IoU 2/6
    truth[2, 3, 0:2] = 1           # missed: Dice 0      (slice 0 empty in both: excluded)
    dice, iou = slice_scores(truth, pred, 1)
    assert dice.tolist() == pytest.approx([0.5, 0.0]) and iou.tolist() == pytest.approx([1 / 3, 0.0])
    m = segmentation_metrics(truth, pred, CLASSES)["Bone"]
    assert m["mean_dice"] == pytest.approx(0.25) and m["slices"] == 2
    assert m["volume_dice"] == pytest.approx(2 * 2 / (6 + 4)) and m["volume_iou"] == pytest.approx(2 / 8)
    pooled = ClassScores().add(truth, pred, 1).merge(ClassScores().add(truth, truth, 1)).summary()
    assert pooled["mean_dice"] == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    assert segmentation_metrics(np.zeros_like(truth), np.zeros_like(truth), CLASSES)["Bone"]["mean_dice"] is None


def test_otsu_and_region_growing() -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((8, 32, 32), np.uint8)
    truth[:, 4:14, 4:14] = 1
    image = (100 + 900 * truth.astype(np.float32) + rng.normal(0, 20, truth.shape)).astype(np.float32)
    image[:, 20:28, 20:28] = 1000  # a bright blob that is not bone, not connected to it
    otsu = otsu_baseline(image)
    assert otsu[truth == 1].all() and otsu[:, 20:28, 20:28].all()  # thresholding takes both
    grown = region_growing_baseline(image, truth)
    assert grown[truth == 1].mean() > 0.95 and not grown[:, 20:28, 20:28].any()
    assert not region_growing_baseline(image, np.zeros_like(truth)).any()


def test_evaluate_writes_report_and_figure(tmp_path: Path, tiny_model_dir: Path) -> None:
    from fossilsegment_engine.training.evaluate import evaluate

    write_dataset(tmp_path / "seen", n=2)
    write_dataset(tmp_path / "heldout", n=1)
    out = tmp_path / "report"
    report = evaluate(tiny_model_dir, [tmp_path / "seen", tmp_path / "heldout"], out_dir=out, device="cpu")
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "figure.png"}
    saved = json.loads((out / "report.json").read_text())
    assert set(saved["overall"]) == {"model", "otsu", "region_growing"} and len(saved["by_data_dir"]) == 2
    assert saved["overall"]["otsu"]["Bone"]["mean_dice"] > 0.9  # easy bright discs
    assert "| Otsu (global) |" in (out / "report.md").read_text()
    assert report["specimens"][0]["metrics"]["model"]["Bone"]["slices"] >= 0


@pytest.mark.parametrize("case", ["geometry", "empty"])
def test_evaluate_bad_input_writes_nothing(tmp_path: Path, tiny_model_dir: Path, case: str) -> None:
    from fossilsegment_engine.training.evaluate import evaluate

    data = tmp_path / "data"
    if case == "geometry":
        write_specimen(data, 1, label_spacing=(0.5, 0.7, 1.0))
    else:
        data.mkdir()
    with pytest.raises(InputError):
        evaluate(tiny_model_dir, [data], out_dir=tmp_path / "report", device="cpu")
    assert not (tmp_path / "report").exists()


def test_evaluate_bone_only_model_on_specimen_with_teeth(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Teeth in the truth count as background for a bone-only model: Bone is scored on label 1 alone."""
    import SimpleITK as sitk

    from fossilsegment_engine.training.evaluate import evaluate

    folder = write_specimen(tmp_path / "data" / "s1", 1, teeth=True)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labels.nrrd")))
    assert (truth == 2).any()
    report = evaluate(tiny_model_dir, [tmp_path / "data"], device="cpu")
    bone = report["specimens"][0]["metrics"]["model"]["Bone"]
    assert bone["truth_voxels"] == int((truth == 1).sum())
