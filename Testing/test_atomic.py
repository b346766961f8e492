"""Atomic outputs: never overwrite without force, nothing left behind on error, normal file modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fossilsegment_engine.atomic import atomic_dir, atomic_path
from fossilsegment_engine.errors import OutputError


def test_refuses_existing_file_and_keeps_it(tmp_path: Path) -> None:
    target = tmp_path / "out.seg.nrrd"
    target.write_text("mine")
    with pytest.raises(OutputError, match="exists"):
        with atomic_path(target):
            pass
    assert target.read_text() == "mine"


def test_error_inside_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.nrrd") as tmp:
            assert tmp.name.endswith(".nrrd")  # the writer still sees the final suffix
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "stl") as d:
            (d / "Bone.stl").write_text("half")
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []


def test_outputs_get_umask_modes_not_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "d") as d:
            (d / "g.txt").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_force_replaces(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old.stl").write_text("old")
    with atomic_dir(tmp_path / "d", force=True) as d:
        (d / "new.stl").write_text("new")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["new.stl"]


def test_saved_model_files_are_readable_by_others(tmp_path: Path) -> None:
    from fossilsegment_engine.models import ModelConfig, build_model, save_model

    config = ModelConfig(name="m", arch="unet",
                         arch_options={"encoder": "tu-resnet10t", "encoder_depth": 3, "decoder_channels": 8})
    old = os.umask(0o022)
    try:
        folder = save_model(build_model(config), config, tmp_path / "m")
    finally:
        os.umask(old)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {
        "model.safetensors": 0o644, "config.json": 0o644}
