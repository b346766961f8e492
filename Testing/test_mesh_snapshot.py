"""3D snapshot: a non-blank PNG of the requested size, or a logged skip when VTK cannot render offscreen."""

from __future__ import annotations

import logging
import subprocess
import sys
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


def test_snapshot_skips_with_warning_when_renderer_cannot_start(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(snapshot, "_child_command", lambda job: [sys.executable, "-c", "import sys; sys.exit(3)"])
    with caplog.at_level(logging.WARNING):
        assert snapshot.write_snapshot_png(_meshes(), tmp_path / "snap.png") is None
    assert "cannot render offscreen" in caplog.text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_torch_imports_fine_after_a_snapshot(tmp_path: Path) -> None:
    """Mesa's LLVM in the same process as triton crashes; the snapshot must keep OpenGL out of this process."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from test_mesh_snapshot import _meshes; "
            "from fossilsegment_engine.io import snapshot; "
            "snapshot.write_snapshot_png(_meshes(), sys.argv[2]); import torch._dynamo; print('ok')")
    done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(tmp_path / "s.png")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
