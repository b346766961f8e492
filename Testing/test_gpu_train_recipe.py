"""scripts/gpu_train_recipe.py: its data round trip, model export and refusals, and (slow) the --smoke run end to
end where SimpleITK, pynrrd, slicerio and VTK cannot be imported, as on the device machine."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _helpers_scripts import load_script
from fossilsegment_engine import phantom
from fossilsegment_engine.errors import InputError
from fossilsegment_engine.training.data import find_specimens

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_train_recipe.py"
ABSENT_ON_DEVICE = ("SimpleITK", "nrrd", "slicerio", "vtk", "itk")


def _script():
    return load_script("gpu_train_recipe")


def _device_like_env(tmp_path: Path) -> dict[str, str]:
    """Environment whose Python cannot import the packages the device machine lacks."""
    block = tmp_path / "absent"
    block.mkdir()
    for name in ABSENT_ON_DEVICE:
        (block / f"{name}.py").write_text(f"raise ImportError('{name} is absent on the device machine')\n")
    path = os.pathsep.join([str(block), str(ROOT / "FossilSegment"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def test_recipe_path_imports_without_simpleitk(tmp_path: Path) -> None:
    code = ("import runpy; runpy.run_path(%r); "
            "import fossilsegment_engine.training.train, fossilsegment_engine.inference.predictor; "
            "from fossilsegment_engine import phantom; print(phantom.generate(3, size='small')[0].shape)") % str(SCRIPT)
    done = subprocess.run([sys.executable, "-c", code], env=_device_like_env(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(48, 96, 96)" in done.stdout


def test_specimen_round_trip_keeps_arrays_and_geometry(tmp_path: Path) -> None:
    recipe = _script()
    assert recipe.make_specimen(("train", "skull", 1000, "small", tmp_path)) == "skull_s1000"
    paths = find_specimens([tmp_path / "train"])[0]
    volume, labels = recipe.read_npy_pair(paths, 2)
    ref_volume, ref_labels, _ = phantom.generate(1000, size="small", family="skull", teeth=False)
    assert np.array_equal(volume.array, ref_volume.array) and np.array_equal(labels.array, ref_labels.array)
    assert volume.same_geometry(ref_volume, tol=0) and labels.same_geometry(ref_volume, tol=0)
    info = json.loads((paths.folder / "phantom.json").read_text())
    assert (info["family"], info["seed"]) == ("skull", 1000)
    assert not list(tmp_path.glob(".tmp.*"))  # the scratch folder was renamed into place
    np.save(paths.labels, np.full(volume.shape, 2, np.uint8))
    with pytest.raises(InputError, match="outside the model's classes"):
        recipe.read_npy_pair(paths, 2)


@pytest.mark.parametrize("size, parts", [(2500, 3), (900, 1)])
def test_export_splits_large_weights_into_parts_that_join(tmp_path: Path, monkeypatch, size: int, parts: int) -> None:
    recipe = _script()
    monkeypatch.setattr(recipe, "PART_BYTES", 1000)
    model, out = tmp_path / "model", tmp_path / "out"
    model.mkdir()
    out.mkdir()
    weights = np.random.default_rng(0).bytes(size)
    (model / "model.safetensors").write_bytes(weights)
    for name in recipe.MODEL_FILES:
        (model / name).write_text(name)
    facts = recipe.export(model, out)
    assert len(facts["weights_files"]) == parts and facts["weights_bytes"] == size
    joined = b"".join((out / name).read_bytes() for name in facts["weights_files"])
    assert joined == weights and facts["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    assert all((out / name).read_text() == name for name in recipe.MODEL_FILES)


def test_refuses_an_output_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep")
    assert _script().main(["--smoke", "--out", str(tmp_path)]) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


@pytest.mark.slow
def test_smoke_run_end_to_end_without_simpleitk(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--arch", "unet32", "--out", str(out)],
                          env=_device_like_env(tmp_path), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["train"] == 2 and report["training"]["finished_epochs"] == 2
    for split in ("test_seen", "test_heldout", "all"):
        assert 0.0 <= report["evaluation"]["pooled"][split]["Bone"]["mean_dice"] <= 1.0
        assert 0.0 <= report["evaluation_thorough"]["pooled"][split]["Bone"]["mean_dice"] <= 1.0
    model = tmp_path / "model"
    model.mkdir()
    weights = b"".join((out / name).read_bytes() for name in report["model"]["weights_files"])
    assert hashlib.sha256(weights).hexdigest() == report["model"]["weights_sha256"]
    (model / "model.safetensors").write_bytes(weights)
    (model / "config.json").write_text((out / "config.json").read_text())
    from fossilsegment_engine.models import load_model

    _, config = load_model(model)
    assert config.arch_options["decoder_channels"] == 32 and config.context_slices == 3
    assert "gpu_train_recipe.py" in config.provenance["training"]["commands"][0]
    assert "done in" in (out / "recipe.log").read_text()
