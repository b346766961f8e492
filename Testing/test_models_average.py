"""Model soups: the weighted mean of compatible models, refused for incompatible ones; the script's folder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from _helpers_scripts import load_script
from fossilsegment_engine.errors import InputError
from fossilsegment_engine.models import ModelConfig, build_model, load_model, model_hash, save_model
from fossilsegment_engine.models.average import average_models
from fossilsegment_engine.models.config import default_classes

TINY = dict(arch="unet", arch_options={"encoder_depth": 3, "decoder_channels": [16, 8, 4]})


def _tiny(seed: int, name: str = "m", **changes: object) -> tuple[torch.nn.Module, ModelConfig]:
    config = ModelConfig(name=name, **{**TINY, **changes})
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():  # BatchNorm statistics differ between ingredients too
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.randn_like(value).abs() + 0.1 if "running_var" in key else torch.randn_like(value))
            elif "num_batches_tracked" in key:
                value.fill_(seed + 1)
    return model.eval(), config


def test_average_is_the_weighted_mean_of_every_float_tensor() -> None:
    a, b, c = _tiny(0), _tiny(1), _tiny(2)
    soup, config = average_models([a, b, c], [1.0, 1.0, 2.0])
    sa, sb, sc, ss = (m.state_dict() for m in (a[0], b[0], c[0], soup))
    assert config.weights_sha256 is None and config.arch_options == a[1].arch_options
    for key, value in ss.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (sa[key] + sb[key] + 2 * sc[key]) / 4, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(value, sa[key]), key  # num_batches_tracked from the first ingredient
    assert not torch.equal(ss["segmentation_head.0.weight"], sa["segmentation_head.0.weight"])


def test_equal_weights_by_default_and_soup_of_identical_models_is_the_model() -> None:
    a = _tiny(0)
    same, _ = average_models([a, a])
    for key, value in same.state_dict().items():
        torch.testing.assert_close(value, a[0].state_dict()[key])
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(same(x), a[0](x))


@pytest.mark.parametrize(
    "other, message",
    [
        (dict(arch_options={"encoder_depth": 3, "decoder_channels": [16, 8, 8]}), "arch_options differ"),
        (dict(context_slices=3), "context_slices differ"),
        (dict(tile_size=256), "tile_size differ"),
        (dict(classes=default_classes(tooth=True)), "classes differ"),
    ],
)
def test_incompatible_models_are_refused_naming_the_difference(other: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        average_models([_tiny(0), _tiny(1, name="other", **other)])


@pytest.mark.parametrize("weights, message", [([1.0], "1 weights for 2 models"), ([1.0, 0.0], "positive"),
                                              ([1.0, float("nan")], "positive")])
def test_bad_weights_are_refused(weights: list[float], message: str) -> None:
    with pytest.raises(InputError, match=message):
        average_models([_tiny(0), _tiny(1)], weights)


def test_one_model_is_not_a_soup() -> None:
    with pytest.raises(InputError, match="at least two"):
        average_models([_tiny(0)])


def _script():
    return load_script("average_models")


def test_script_writes_a_loadable_folder_with_provenance_and_never_overwrites(tmp_path: Path, capsys) -> None:
    folders = []
    for seed in (0, 1):
        model, config = _tiny(seed, name=f"run{seed}")
        config = dataclasses.replace(config, provenance={"training_command": f"fossilsegment train --seed {seed}"})
        folders.append(save_model(model, config, tmp_path / f"run{seed}"))
    card = tmp_path / "card.md"
    card.write_text("# soup\n", encoding="utf-8")
    out = tmp_path / "soup"
    argv = ["--models", *map(str, folders), "--weights", "1", "3", "--name", "soup", "--card", str(card),
            "--out", str(out)]
    assert _script().main(argv) == 0
    soup, config = load_model(out)
    assert config.name == "soup" and (out / "MODEL_CARD.md").read_text(encoding="utf-8") == "# soup\n"
    ingredients = json.loads((out / "config.json").read_text())["provenance"]["averaged_from"]
    assert [i["weights_sha256"] for i in ingredients] == [model_hash(f) for f in folders]
    assert [i["weight"] for i in ingredients] == [1.0, 3.0]
    assert ingredients[1]["training_command"] == "fossilsegment train --seed 1"
    expected, _ = average_models([load_model(f) for f in folders], [1, 3])
    for key, value in soup.state_dict().items():
        assert torch.equal(value, expected.state_dict()[key]), key

    before = (out / "model.safetensors").read_bytes()
    assert _script().main(argv[:-1] + [str(out)]) == 2  # the folder exists: refused, left as it was
    assert "exists" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before

