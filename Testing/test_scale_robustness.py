"""``scripts/scale_robustness.py`` (issue 14): up-sampled specimens, scored on the slices it segments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from _helpers_scripts import load_script
from fossilsegment_engine.io import write_volume
from fossilsegment_engine.training.data import find_specimens
from fossilsegment_engine.volume import Volume

scale = load_script("scale_robustness")


class ThresholdPredictor:
    """Bone = image above ``level`` inside ``slice_range``; records the ranges and shapes it was given."""

    def __init__(self, level: float) -> None:
        self.level, self.calls = level, []

    def predict_labels(self, volume: Volume, slice_range: tuple[int, int] | None = None) -> Volume:
        self.calls.append((volume.shape, slice_range))
        k0, k1 = slice_range or (0, volume.shape[0])
        out = np.zeros(volume.shape, np.uint8)
        out[k0:k1] = volume.array[k0:k1] > self.level
        return volume.with_array(out)


def _specimen(root: Path, name: str, thick: int) -> None:
    labels = np.zeros((30, 16, 16), np.uint8)
    labels[:, 4:4 + thick, 4:12] = 1
    write_volume(Volume(labels.astype(np.float32)), root / name / "volume.nrrd")
    write_volume(Volume(labels), root / name / "labels.nrrd")


def test_upsample_grows_bone_by_the_factor_squared() -> None:
    labels = np.zeros((2, 10, 10), np.uint8)
    labels[:, 2:5, 2:6] = 1
    image, up = scale.upsample(labels.astype(np.float32), labels, 3)
    assert image.shape == up.shape == (2, 30, 30)
    assert up.sum() == 9 * labels.sum() and set(np.unique(up)) == {0, 1}


def test_scores_per_factor_and_family_on_the_middle_slices(tmp_path: Path) -> None:
    _specimen(tmp_path, "plates_s1", 3)
    _specimen(tmp_path, "skull_s2", 6)
    specimens = find_specimens([tmp_path])
    good = ThresholdPredictor(0.5)
    scores = scale.scale_scores(good, specimens, [1, 2], n_slices=8)
    assert scores["x1"] == {"all": 1.0, "plates": 1.0, "skull": 1.0} and scores["x2"]["all"] == 1.0
    assert ((30, 16, 16), (0, 30)) in good.calls and ((30, 32, 32), (11, 19)) in good.calls
    blind = ThresholdPredictor(2.0)  # finds nothing: Dice 0 on every slice holding bone
    assert scale.scale_scores(blind, specimens, [2], n_slices=8)["x2"]["all"] == 0.0


def test_refuses_bad_factors_and_missing_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        scale.main(["--data", str(tmp_path), "--factors", "0.5"])
    assert exc.value.code == 2
    assert scale.main(["--data", str(tmp_path / "missing")]) == 1
    assert "data folder not found" in capsys.readouterr().err
