"""``scripts/speckle_report.py``: counts 2D pieces below the size limit per slice, and builds a montage."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from fossilsegment_engine.volume import Volume

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "speckle_report.py"
spec = importlib.util.spec_from_file_location("speckle_report", SCRIPT)
speckle = importlib.util.module_from_spec(spec)
spec.loader.exec_module(speckle)


def test_small_pieces_per_slice_and_figure() -> None:
    labels = np.zeros((2, 64, 64), np.uint8)
    labels[0, 5:10, 5:10] = 1  # 25 px: a speck
    labels[0, 20:30, 20:30] = 1  # 100 px: kept
    labels[1, 40, 40] = labels[1, 41, 41] = 1  # diagonal neighbours: one 2-px piece (8-connected)
    labels[1, 50:56, 50:55] = 1  # 30 px: not below the limit
    count, mask = speckle.small_pieces(labels, 30)
    assert count == 2
    assert mask.sum() == 25 + 2 and not mask[0, 25, 25]
    fig = speckle.speckle_figure(labels, 30)
    assert fig["pieces"] == 2
    assert np.isclose(fig["per_million_matrix"], 2e6 / int((labels == 0).sum()))


def test_montage_has_whole_slice_and_one_to_one_crops() -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 1000, (1, 300, 600)).astype(np.uint16)
    labels = (rng.random((1, 300, 600)) > 0.995).astype(np.uint8)  # scattered 1-px specks
    classes = [{"value": 0, "name": "Background", "color": [0, 0, 0]}, {"value": 1, "name": "Bone", "color": [1, 1, 1]}]
    rgb = speckle.montage(Volume(grey), Volume(labels), classes, 0, 30, crops=2, crop=100)
    # whole slice: 512 x 256 panel + 4 px gaps each side; two 100 px crops shown 1:1 (+ gaps)
    assert rgb.shape == (4 + 256 + 4, (4 + 512 + 4) + 2 * (4 + 100 + 4), 3)
