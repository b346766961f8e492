"""The architecture registry: options declared once and read by config, build, store, training and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fossilsegment_engine.cli import build_parser, main
from fossilsegment_engine.errors import InputError, ModelError
from fossilsegment_engine.models import (ARCHITECTURES, Architecture, ArchOption, ModelConfig, build_model,
                                         create_model, load_model, required_multiple, save_model, unused_parameters)
from fossilsegment_engine.training.train import TrainOptions


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_defaults_pass_their_own_checks_and_bad_values_name_the_option(arch: str) -> None:
    entry = ARCHITECTURES[arch]
    assert entry.resolve({}) == entry.defaults()
    for option in entry.options:
        with pytest.raises(ModelError, match=rf"{option.name} must be .* for {arch}"):
            entry.resolve({option.name: object()})


def test_create_model_fills_defaults_and_refuses_unknown_options() -> None:
    model = create_model("unet", 1, 2, encoder="tu-resnet10t", encoder_depth=3)
    assert model(torch.rand(1, 1, 32, 32)).shape == (1, 2, 32, 32)
    with pytest.raises(ModelError, match="skips not known to unet"):
        create_model("unet", 1, 2, skips=2)
    with pytest.raises(ModelError, match="arch must be one of deeplabv3plus, unet"):
        create_model("segformer", 1, 2)


@pytest.mark.parametrize("encoder, unused", [("resnet18", True), ("tu-resnet10t", False)])
def test_unused_parameters_matches_the_network(encoder: str, unused: bool) -> None:
    config = ModelConfig(name="t", arch="unet", arch_options={"encoder": encoder, "encoder_depth": 3,
                                                              "decoder_channels": 4})
    model = build_model(config)
    model(torch.rand(2, 1, 32, 32)).sum().backward()
    assert unused_parameters(config) == any(p.grad is None for p in model.parameters())


class _Toy(nn.Module):
    def __init__(self, in_channels: int, classes: int, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


TOY = Architecture(
    name="toy", summary="two convolutions",
    options=(ArchOption("width", 4, lambda v: isinstance(v, int) and v > 0, "a positive int", "hidden channels"),),
    build=lambda in_channels, classes, **o: _Toy(in_channels, classes, o["width"]),
    multiple=lambda o: 1, rules=lambda o: None, from_v1=lambda fields: {}, unused_parameters=lambda o: False,
)


def _train_help(capsys) -> str:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_a_new_architecture_is_one_registry_entry(monkeypatch, tmp_path: Path, capsys) -> None:
    """Config, build, store, training options and the train command all pick up an entry added to the registry."""
    monkeypatch.setitem(ARCHITECTURES, "toy", TOY)
    config = ModelConfig(name="t", arch="toy", arch_options={"width": 6}, context_slices=3)
    assert required_multiple(config) == 1 and config.describe_architecture() == "toy(width=6)"
    folder = save_model(build_model(config), config, tmp_path / "toy")
    model, loaded = load_model(folder)
    assert isinstance(model, _Toy) and model.body[0].weight.shape == (6, 3, 3, 3)
    assert (loaded.arch, loaded.arch_options) == ("toy", {"width": 6})
    options = TrainOptions(data_dirs=[], out_dir=tmp_path / "out", arch="toy", arch_options={"width": 5})
    assert options.model_config().arch_options == {"width": 5}
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--arch", "toy", "--width", "7"])
    assert (args.arch, args.arch_option_width) == ("toy", 7)
    train_help = _train_help(capsys)
    assert "--width WIDTH hidden channels (toy only; default 4)" in train_help


def test_train_help_shows_every_option_once_with_its_defaults(capsys) -> None:
    train_help = _train_help(capsys)
    assert "--skips {1,2} decoder skip connections (2: the paper's best) (deeplabv3plus only; default 2)" in train_help
    assert "(default deeplabv3plus tu-mobilenetv1_100, unet resnet18)" in train_help
    assert "--encoder-depth {3,4,5} encoder stages used (default 5)" in train_help
    assert train_help.count("--decoder-channels DECODER_CHANNELS") == 2  # usage line and option list


def test_init_from_is_checked_against_the_parent(tiny_model_dir: Path, tmp_path: Path) -> None:
    def config(**kw) -> ModelConfig:
        return TrainOptions(data_dirs=[], out_dir=tmp_path / "child", init_from=str(tiny_model_dir), **kw).model_config()

    parent = ModelConfig.load(tiny_model_dir / "config.json")
    same = config(arch="unet", arch_options={"encoder_depth": 3}, context_slices=1)
    assert (same.arch, same.arch_options, same.classes, same.tile_size) == \
        (parent.arch, parent.arch_options, parent.classes, parent.tile_size)
    assert same.name == "child"
    for kw, message in [({"arch_options": {"encoder_depth": 4}}, "encoder_depth 4 conflicts"),
                        ({"arch": "deeplabv3plus"}, "arch deeplabv3plus conflicts"),
                        ({"arch_options": {"decoder_skips": 1}}, "has no decoder_skips"),
                        ({"context_slices": 3}, "context_slices 3 conflicts"),
                        ({"teeth": True}, "teeth True conflicts")]:
        with pytest.raises(InputError, match=message):
            config(**kw)
