"""Dropping a class from a model's head: same labels wherever the full model did not predict that class."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fossilsegment_engine.errors import InputError
from fossilsegment_engine.inference.predictor import Predictor
from fossilsegment_engine.io.volume_io import read_volume
from fossilsegment_engine.models import DEFAULT_MODEL, ModelConfig, build_model, load_model
from fossilsegment_engine.models.config import default_classes
from fossilsegment_engine.models.drop_classes import drop_classes
from fossilsegment_engine.resources import DEMO_SCAN, resource_path

TINY = dict(arch="unet", arch_options={"encoder_depth": 3, "decoder_channels": [16, 8, 4]})


def test_default_model_is_bone_only() -> None:
    _, config = load_model(DEFAULT_MODEL)
    assert config.class_names == ["Background", "Bone"]


def _with_tooth(model: torch.nn.Module, config: ModelConfig) -> tuple[torch.nn.Module, ModelConfig]:
    """``model`` plus a Tooth output: a random head row that wins on some voxels, not all."""
    config3 = dataclasses.replace(config, classes=default_classes(tooth=True), weights_sha256=None)
    model3 = build_model(config3)
    state = model.state_dict()
    w, b = state["segmentation_head.0.weight"], state["segmentation_head.0.bias"]
    g = torch.Generator().manual_seed(0)
    w3 = torch.cat([w, w[1:2] + 0.5 * torch.randn(w[1:2].shape, generator=g)])
    b3 = torch.cat([b, b[1:2]])
    model3.load_state_dict({**state, "segmentation_head.0.weight": w3, "segmentation_head.0.bias": b3})
    return model3.eval(), config3


def test_dropping_tooth_keeps_other_labels_on_demo() -> None:
    volume = read_volume(resource_path(DEMO_SCAN))
    volume = dataclasses.replace(volume, array=volume.array[volume.shape[0] // 2 - 2: volume.shape[0] // 2 + 2])
    bone_only, config = load_model(DEFAULT_MODEL)
    full, full_config = _with_tooth(bone_only, config)
    dropped, dropped_config = drop_classes(full, full_config, ["Tooth"])
    assert dropped_config.class_names == ["Background", "Bone"]
    for key, value in bone_only.state_dict().items():
        assert torch.equal(dropped.state_dict()[key], value), key

    old = Predictor.from_module(full, full_config, device="cpu", precision="fp32").predict_labels(volume, postprocess=None).array
    new = Predictor.from_module(dropped, dropped_config, device="cpu", precision="fp32").predict_labels(
        volume, postprocess=None).array
    assert {0, 1, 2} <= set(np.unique(old).tolist())  # the check below compares something
    assert set(np.unique(new).tolist()) <= {0, 1}
    kept = old != 2
    np.testing.assert_array_equal(new[kept], old[kept])


def test_drop_refuses_bad_classes() -> None:
    config = ModelConfig(name="m", classes=default_classes(tooth=True), **TINY)
    model = build_model(config)
    with pytest.raises(InputError, match="only the last classes"):
        drop_classes(model, config, ["Bone"])
    with pytest.raises(InputError, match="cannot drop"):
        drop_classes(model, config, ["Enamel"])
    two = ModelConfig(name="m2", **TINY)
    with pytest.raises(InputError, match="only the last classes|at least one more"):
        drop_classes(build_model(two), two, ["Bone"])
