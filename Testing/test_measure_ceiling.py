"""``scripts/measure_ceiling.py`` (issue 14): it picks one specimen per family and scores the slices it says."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from _helpers_scripts import load_script
from fossilsegment_engine.io import write_volume
from fossilsegment_engine.volume import Volume

ceiling = load_script("measure_ceiling")


def test_mean_dice_scores_only_the_given_slices() -> None:
    truth = np.zeros((4, 8, 8), np.uint8)
    truth[:, 2:6, 2:6] = 1
    pred = truth.copy()
    pred[1] = 0          # slice 1 entirely missed
    pred[3, 2:6, 2:4] = 0  # slice 3 half found: Dice 2·8/(16+8)
    assert ceiling.mean_dice(truth, pred, [0, 2]) == 1.0
    assert ceiling.mean_dice(truth, pred, [1]) == 0.0
    assert abs(ceiling.mean_dice(truth, pred, [3]) - 2 * 8 / 24) < 1e-6


def test_one_specimen_per_family(tmp_path: Path) -> None:
    vol = Volume(np.zeros((2, 4, 4), np.uint16))
    for name in ("skull_s5001", "skull_s5000", "plates_s5021", "vertebra_s9000"):
        write_volume(vol, tmp_path / name / "volume.nrrd")
        write_volume(vol.with_array(np.zeros((2, 4, 4), np.uint8)), tmp_path / name / "labels.nrrd")
    picked = [s.folder.name for s in ceiling.one_per_family([tmp_path])]
    assert picked == ["plates_s5021", "skull_s5000", "vertebra_s9000"]
