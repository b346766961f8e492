"""Overlay montage PNG: right layout, class colours on the segment, grey elsewhere, atomic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from _helpers_io import ball
from fossilsegment_engine.errors import OutputError
from fossilsegment_engine.io import write_overlay_png
from fossilsegment_engine.io.overlay import render_overlay
from fossilsegment_engine.volume import Volume

CLASSES = [{"value": 1, "name": "Bone", "color": [1.0, 0.0, 0.0]}]


def _pair() -> tuple[Volume, Volume]:
    labels = ball((24, 32, 32), 9.0)
    rng = np.random.default_rng(0)
    grey = (rng.integers(0, 50, labels.shape) + 150 * labels).astype(np.uint16)
    return Volume(grey, (1.0, 1.0, 2.0)), Volume(labels, (1.0, 1.0, 2.0))


def test_overlay_png_layout_and_colours(tmp_path: Path) -> None:
    vol, labels = _pair()
    path = write_overlay_png(vol, labels, tmp_path / "ov.png", CLASSES, n_slices=4, panel_size=64)
    rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert rgb.dtype == np.uint8 and rgb.shape[2] == 3
    # Row 1: 4 axial panels of 64 px; row 2: coronal/sagittal 48 mm x 32 mm -> 64 x 43 px; gaps of 4 px.
    assert rgb.shape[:2] == (4 + 64 + 4 + 64 + 4, 4 + 4 * (64 + 4))
    red = (rgb[..., 0].astype(int) - rgb[..., 1]) > 60
    assert red[4:68].any() and red[72:136].any()  # the segment shows in both rows
    centre = rgb[4 + 32, 4 + 64 + 4 + 32]  # middle of the second axial panel, inside the ball
    assert centre[0] > centre[1]
    corner = rgb[6, 6]  # outside the ball: grey
    assert corner[0] == corner[1] == corner[2]


def test_overlay_without_views_and_refusing_existing(tmp_path: Path) -> None:
    vol, labels = _pair()
    assert render_overlay(vol, labels, CLASSES, n_slices=3, views=False, panel_size=32).shape == (40, 4 + 3 * 36, 3)
    path = tmp_path / "ov.png"
    path.write_bytes(b"old")
    with pytest.raises(OutputError, match="exists"):
        write_overlay_png(vol, labels, path, CLASSES)
    assert path.read_bytes() == b"old"


def test_overlay_truth_outlined_over_prediction_fill() -> None:
    from fossilsegment_engine.io.overlay import TRUTH_COLOR, display_color
    from fossilsegment_engine.errors import InputError

    vol, labels = _pair()
    truth = Volume(np.roll(labels.array, 6, axis=2), labels.spacing)  # truth shifted: both colours visible
    rgb = render_overlay(vol, labels, CLASSES, n_slices=1, views=False, panel_size=32, truth=truth).astype(int)
    cyan = (np.abs(rgb - np.array(TRUTH_COLOR) * 255).sum(axis=2) == 0)
    fill = display_color(1)
    orange = (rgb[..., 0] - rgb[..., 2] > 60) & (rgb[..., 1] > rgb[..., 2])
    assert cyan.any() and orange.any()
    panel = rgb[4:36, 4:36]
    cy, cx = 16, 16  # ball centre: predicted (filled) and inside the shifted truth (not on its outline)
    assert panel[cy, cx, 0] > panel[cy, cx, 2] + 60 and fill[0] > fill[2]
    plain = render_overlay(vol, labels, CLASSES, n_slices=1, views=False, panel_size=32)
    assert not (np.abs(plain.astype(int) - np.array(TRUTH_COLOR) * 255).sum(axis=2) == 0).any()
    with pytest.raises(InputError, match="truth shape"):
        render_overlay(vol, labels, CLASSES, truth=Volume(labels.array[:-1]))
