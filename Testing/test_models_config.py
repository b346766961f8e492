"""ModelConfig ↔ config.json: round trip, defaults, version 1 read, validation naming the bad field."""

from __future__ import annotations

import json

import pytest

from fossilsegment_engine.errors import ModelError, OutputError
from fossilsegment_engine.inference.normalize import DEFAULT_NORMALIZATION
from fossilsegment_engine.models import ModelConfig, default_classes


def test_defaults_and_derived() -> None:
    c = ModelConfig(name="x")
    assert c.arch == "deeplabv3plus"
    assert c.arch_options == {"encoder": "tu-mobilenetv1_100", "encoder_depth": 5, "decoder_channels": 256,
                              "decoder_skips": 2, "aspp_concat": False}
    assert ModelConfig(name="x", arch="unet", arch_options={"encoder_depth": 4}).arch_options == {
        "encoder": "resnet18", "encoder_depth": 4, "decoder_channels": 16}
    assert c.n_classes == 2 and c.in_channels == 1
    assert c.class_names == ["Background", "Bone"]
    assert c.classes[1]["color"] == [0.89, 0.85, 0.79]
    assert c.normalization == DEFAULT_NORMALIZATION
    assert (c.tile_size, c.tile_overlap, c.weights_file) == (512, 64, "model.safetensors")
    c3 = ModelConfig(name="x", context_slices=3, classes=default_classes(tooth=True))
    assert c3.in_channels == 3 and c3.n_classes == 3 and c3.classes[2]["name"] == "Tooth"


def test_dict_and_file_round_trip(tmp_path) -> None:
    c = ModelConfig(name="x", arch="unet", arch_options={"decoder_channels": [64, 32, 16, 8, 4]},
                    context_slices=5, provenance={"data": "phantoms", "parent_model": None})
    d = c.to_dict()
    assert list(d)[:5] == ["format", "format_version", "name", "arch", "arch_options"]
    assert d["format_version"] == 2 and d["arch_options"]["decoder_channels"] == [64, 32, 16, 8, 4]
    assert not {"encoder", "encoder_depth", "decoder_channels"} & set(d)
    assert ModelConfig.from_dict(json.loads(json.dumps(d))) == c
    path = c.save(tmp_path / "config.json")
    assert ModelConfig.load(path) == c
    with pytest.raises(OutputError):
        c.save(path)
    c.save(path, force=True)


def test_partial_normalization_is_completed() -> None:
    c = ModelConfig.from_dict({"name": "x", "normalization": {"low_percentile": 1.0}})
    assert c.normalization == {**DEFAULT_NORMALIZATION, "low_percentile": 1.0}


def test_version1_flat_fields_are_read_and_saved_as_version2(tmp_path) -> None:
    v1 = {"format": "fossilsegment-model", "format_version": 1, "name": "old", "arch": "unet", "encoder": "tu-resnet18",
          "encoder_depth": 4, "decoder_skips": 2, "aspp_concat": False, "decoder_channels": None, "context_slices": 3}
    c = ModelConfig.from_dict(v1)
    # version 1's unet decoder_channels=None meant smp's widths; now written out
    assert (c.arch, c.arch_options) == ("unet", {"encoder": "tu-resnet18", "encoder_depth": 4,
                                                 "decoder_channels": [256, 128, 64, 32]})
    old_deeplab = ModelConfig.from_dict({"name": "d", "encoder": "resnet50", "decoder_skips": 1})
    assert old_deeplab.arch_options == {"encoder": "resnet50", "encoder_depth": 5, "decoder_channels": 256,
                                        "decoder_skips": 1, "aspp_concat": False}
    saved = json.loads(c.save(tmp_path / "config.json").read_text())
    assert saved["format_version"] == 2 and "encoder" not in saved
    assert ModelConfig.load(tmp_path / "config.json") == c
    with pytest.raises(ModelError, match="unknown field.*encoder"):  # flat fields belong to version 1 only
        ModelConfig.from_dict({**c.to_dict(), "encoder": "resnet18"})
    with pytest.raises(ModelError, match="unknown field.*arch_options"):
        ModelConfig.from_dict({**v1, "arch_options": {}})


BAD = [
    ({"arch": "segformer"}, "arch"),
    ({"format": "other"}, "format"),
    ({"format_version": 3}, "newer"),
    ({"arch_options": {"decoder_skips": 1, "depth": 4}}, "depth not known to deeplabv3plus"),
    ({"arch": "unet", "arch_options": {"decoder_skips": 1}}, "decoder_skips not known to unet"),
    ({"arch_options": {"encoder": ""}}, "encoder"),
    ({"arch_options": []}, "arch_options must be an object"),
    ({"encoder_depth": 7}, "encoder_depth"),
    ({"decoder_skips": 3}, "decoder_skips"),
    ({"aspp_concat": "yes"}, "aspp_concat"),
    ({"arch": "unet", "aspp_concat": True}, "aspp_concat"),
    ({"arch": "unet", "decoder_channels": [16, 8]}, "decoder_channels"),
    ({"decoder_channels": [16, 8]}, "decoder_channels"),
    ({"encoder_depth": 3}, "encoder_depth"),
    ({"context_slices": 2}, "context_slices"),
    ({"context_slices": True}, "context_slices"),
    ({"classes": [{"value": 0, "name": "Background", "color": [0, 0, 0]}]}, "classes"),
    ({"classes": [{"value": 0, "name": "Background", "color": [0, 0, 0]},
                  {"value": 2, "name": "Bone", "color": [1, 1, 1]}]}, "classes[1].value"),
    ({"classes": [{"value": 0, "name": "Rock", "color": [0, 0, 0]},
                  {"value": 1, "name": "Bone", "color": [1, 1, 1]}]}, "classes[0].name"),
    ({"classes": [{"value": 0, "name": "Background", "color": [0, 0, 0]},
                  {"value": 1, "name": "Bone", "color": [1, 2, 1]}]}, "classes[1].color"),
    ({"classes": [{"value": 0, "name": "Background", "color": [0, 0, 0]},
                  {"value": 1, "name": "Background", "color": [1, 1, 1]}]}, "duplicates"),
    ({"normalization": {"method": "zscore"}}, "normalization.method"),
    ({"normalization": {"low_percentile": 99.0, "high_percentile": 1.0}}, "normalization"),
    ({"tile_size": 100}, "tile_size"),
    ({"tile_overlap": 300}, "tile_overlap"),
    ({"weights_file": "../x.safetensors"}, "weights_file"),
    ({"weights_file": "model.pt"}, "weights_file"),
    ({"weights_sha256": "abc"}, "weights_sha256"),
    ({"provenance": []}, "provenance"),
    ({"colour": 1}, "unknown field"),
]


@pytest.mark.parametrize("change, field", BAD)
def test_bad_fields_name_the_field(change, field) -> None:
    with pytest.raises(ModelError, match=rf"{field.replace('[', '.').replace(']', '.')}"):
        ModelConfig.from_dict({"name": "x", **change})


def test_missing_name_and_not_an_object() -> None:
    with pytest.raises(ModelError, match="name"):
        ModelConfig.from_dict({"arch": "unet"})
    with pytest.raises(ModelError, match="JSON object"):
        ModelConfig.from_dict([1, 2])  # type: ignore[arg-type]


def test_load_missing_and_invalid_json(tmp_path) -> None:
    with pytest.raises(ModelError, match="not found"):
        ModelConfig.load(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="config.json"):
        ModelConfig.load(tmp_path / "config.json")
