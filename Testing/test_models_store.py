"""Model folders: safetensors save/load round trip, verification errors, bundled-model discovery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fossilsegment_engine.errors import ModelError, OutputError
from fossilsegment_engine.models import (
    DEFAULT_MODEL,
    ModelConfig,
    build_model,
    bundled_models,
    load_config,
    load_model,
    model_hash,
    models_dir,
    resolve_model_dir,
    save_model,
)
from fossilsegment_engine.models import store

TINY_UNET = dict(arch="unet", arch_options={"encoder_depth": 3, "decoder_channels": [16, 8, 4]})
TINY_DEEPLAB = dict(arch="deeplabv3plus", arch_options={"decoder_channels": 16, "decoder_skips": 2})


def _saved(tmp_path: Path, name: str = "m", **kwargs) -> tuple[Path, torch.nn.Module, ModelConfig]:
    config = ModelConfig(name=name, **(kwargs or TINY_UNET))
    torch.manual_seed(1)
    model = build_model(config)
    folder = save_model(model, config, tmp_path / name, extra_files={"MODEL_CARD.md": "# card\n"})
    return folder, model, config


@pytest.mark.parametrize("kwargs", [TINY_UNET, TINY_DEEPLAB], ids=["unet", "deeplab-2skip"])
def test_round_trip_identical_outputs(tmp_path, kwargs) -> None:
    folder, model, config = _saved(tmp_path, **kwargs)
    assert sorted(p.name for p in folder.iterdir()) == ["MODEL_CARD.md", "config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    loaded, loaded_config = load_model(folder)
    assert not loaded.training
    assert loaded_config.weights_sha256 == model_hash(folder)
    assert loaded_config.provenance["engine_version"] and loaded_config.provenance["created"]
    assert {k: v for k, v in loaded_config.to_dict().items() if k not in ("weights_sha256", "provenance")} == {
        k: v for k, v in config.to_dict().items() if k not in ("weights_sha256", "provenance")
    }
    x = torch.rand(2, config.in_channels, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_existing_folder_refused_and_unchanged(tmp_path) -> None:
    folder, model, config = _saved(tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    other = build_model(config)
    with pytest.raises(OutputError, match="exists"):
        save_model(other, config, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    save_model(other, config, folder, force=True)
    assert not (folder / "MODEL_CARD.md").exists()  # replaced whole
    assert load_config(folder).weights_sha256 == model_hash(folder)


def test_save_refuses_model_of_another_arch(tmp_path) -> None:
    config = ModelConfig(name="m", **TINY_UNET)
    wrong = build_model(ModelConfig(name="m", arch="unet", arch_options={"encoder_depth": 3, "decoder_channels": [32, 16, 8]}))
    with pytest.raises(ModelError, match="shape mismatch"):
        save_model(wrong, config, tmp_path / "m")
    assert not list(tmp_path.iterdir())


def test_missing_config(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="config.json"):
        load_model(tmp_path / "empty")


def test_missing_weights_file(tmp_path) -> None:
    folder, _, _ = _saved(tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="weights not found.*model.safetensors"):
        load_model(folder)


def test_sha_mismatch(tmp_path) -> None:
    folder, _, config = _saved(tmp_path)
    data = json.loads((folder / "config.json").read_text())
    data["weights_sha256"] = "0" * 64
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match="SHA-256"):
        load_model(folder)


def _unpin_sha(folder: Path) -> None:
    data = json.loads((folder / "config.json").read_text())
    data["weights_sha256"] = None
    (folder / "config.json").write_text(json.dumps(data))


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors(tmp_path, damage) -> None:
    folder, _, _ = _saved(tmp_path)
    weights = folder / "model.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"\x80\x04not a safetensors file")
    with pytest.raises(ModelError, match="SHA-256"):
        load_model(folder)
    _unpin_sha(folder)  # without the hash pin, the reader itself must refuse it
    with pytest.raises(ModelError, match="corrupt or not safetensors"):
        load_model(folder)


def test_weights_from_another_arch(tmp_path) -> None:
    folder, _, _ = _saved(tmp_path)
    other = build_model(ModelConfig(name="x", **TINY_DEEPLAB))
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(folder / "model.safetensors"))
    _unpin_sha(folder)
    with pytest.raises(ModelError, match="missing key"):
        load_model(folder)


def test_shape_mismatch(tmp_path) -> None:
    folder, _, _ = _saved(tmp_path)
    other = build_model(ModelConfig(name="x", arch="unet", arch_options={"encoder_depth": 3, "decoder_channels": [32, 16, 8]}))
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(folder / "model.safetensors"))
    _unpin_sha(folder)
    with pytest.raises(ModelError, match="shape mismatch"):
        load_model(folder)


def test_wrong_class_layout_in_folder(tmp_path) -> None:
    folder, _, _ = _saved(tmp_path)
    data = json.loads((folder / "config.json").read_text())
    data["classes"] = [{"value": 1, "name": "Bone", "color": [1, 1, 1]}, {"value": 0, "name": "Background",
                                                                          "color": [0, 0, 0]}]
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"config.json.*classes\[0\]\.value"):
        load_model(folder)


def test_bundled_discovery_and_resolution(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FOSSILSEGMENT_MODELS_DIR", str(tmp_path))
    assert models_dir() == tmp_path and store.MODELS_DIR == tmp_path
    assert bundled_models() == []
    _saved(tmp_path, name=DEFAULT_MODEL)
    _saved(tmp_path, name="other")
    (tmp_path / "not-a-model").mkdir()
    assert bundled_models() == [DEFAULT_MODEL, "other"]
    assert resolve_model_dir(None) == tmp_path / DEFAULT_MODEL
    assert resolve_model_dir("other") == tmp_path / "other"
    assert resolve_model_dir(tmp_path / "other") == tmp_path / "other"
    assert resolve_model_dir(tmp_path / "other" / "config.json") == tmp_path / "other"
    model, config = load_model()
    assert config.name == DEFAULT_MODEL
    with pytest.raises(ModelError, match=f"unknown model 'nope'.*{DEFAULT_MODEL}, other"):
        resolve_model_dir("nope")
    with pytest.raises(ModelError, match="model folder not found"):
        resolve_model_dir(tmp_path / "nope")


def test_default_discovery_without_env(monkeypatch) -> None:
    monkeypatch.delenv("FOSSILSEGMENT_MODELS_DIR", raising=False)
    repo = Path(store.__file__).resolve().parents[3]
    expected = repo / "Resources" / "Models"
    if not expected.is_dir():
        expected = repo / "FossilSegment" / "Resources" / "Models"
    assert models_dir() == expected


@pytest.mark.slow  # four fresh interpreters importing torch
def test_same_weights_give_the_same_file_in_every_process(tmp_path) -> None:
    """The weights hash pins a model, so saving the same tensors must give the same bytes; each save runs
    in a fresh interpreter because the order of a safetensors metadata map changes from process to process."""
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "from fossilsegment_engine.models import ModelConfig, build_model, save_model\n"
        f"config = ModelConfig(name='m', **{TINY_UNET!r})\n"
        "torch.manual_seed(1)\n"
        "save_model(build_model(config), config, sys.argv[1])\n"
    )
    hashes = set()
    for i in range(4):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / f"m{i}")], check=True)
        hashes.add(model_hash(tmp_path / f"m{i}"))
    assert len(hashes) == 1
