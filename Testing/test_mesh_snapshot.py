"""3D snapshot: a non-blank PNG of the requested size, or a logged skip when VTK cannot render offscreen."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from _helpers_io import ball
from fossilsegment_engine.io import snapshot
from fossilsegment_engine.io.mesh_io import build_meshes
from fossilsegment_engine.volume import Volume

CLASSES = [{"value": 1, "name": "Bone", "color": [0.89, 0.85, 0.79]}]


def _meshes() -> list:
    mesh = build_meshes(Volume(ball((24, 24, 24), 8.0), (0.5, 0.5, 1.0)), CLASSES)[0]
    return [(mesh.polydata, mesh.color)]


def test_snapshot_png_is_not_blank(tmp_path: Path) -> None:
    if not snapshot.can_render_offscreen():
        pytest.skip("VTK cannot render offscreen in this environment (no EGL/OSMesa)")
    path = snapshot.write_snapshot_png(_meshes(), tmp_path / "snap.png", size=(160, 120))
    assert path == tmp_path / "snap.png"
    rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert rgb.shape == (120, 160, 3)
    background = np.round(np.array(snapshot._BACKGROUND) * 255)
    differs = np.abs(rgb.astype(float) - background).sum(axis=2) > 30
    assert 0.05 < differs.mean() < 0.95, "the mesh should fill part of the picture"
    centre = differs[40:80, 60:100].mean()
    assert centre > 0.9, "the mesh should be centred"


def test_snapshot_skips_with_warning_when_rendering_unavailable(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("FOSSILSEGMENT_NO_SNAPSHOT", "1")
    with caplog.at_level(logging.WARNING):
        assert snapshot.write_snapshot_png(_meshes(), tmp_path / "snap.png") is None
    assert "3D snapshot skipped" in caplog.text
    assert list(tmp_path.iterdir()) == []
