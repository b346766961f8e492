"""Every architecture builds offline and maps (1, C, H, W) to (1, n_classes, H, W)."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch

from fossilsegment_engine.errors import ModelError
from fossilsegment_engine.models import (
    DeepLabV3PlusSkipsDecoder,
    ModelConfig,
    build_model,
    default_classes,
    required_multiple,
)

TINY_UNET = dict(arch="unet", arch_options={"encoder_depth": 3, "decoder_channels": [32, 16, 8]})


def _dl(**options) -> dict:
    """A DeepLab v3+ MobileNet v1 config's keyword arguments (decoder width 32) with ``options``."""
    return dict(arch="deeplabv3plus", arch_options={"encoder": "tu-mobilenetv1_100", "decoder_channels": 32, **options})


MOBILENET_V1 = _dl()


def _forward(config: ModelConfig, size: int = 64) -> torch.Tensor:
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():
        return model(torch.rand(1, config.in_channels, size, size))


@pytest.mark.parametrize(
    "kwargs",
    [
        TINY_UNET,
        _dl(decoder_skips=1),
        _dl(decoder_skips=2),
        _dl(decoder_skips=2, aspp_concat=True),
        _dl(decoder_skips=1, aspp_concat=True),
        _dl(decoder_skips=2, encoder_depth=4),
    ],
    ids=["unet-resnet18", "dlv3p-mnv1-1skip", "dlv3p-mnv1-2skip", "dlv3p-2skip-asppcat", "dlv3p-1skip-asppcat",
         "dlv3p-2skip-depth4"],
)
def test_forward_shape(kwargs) -> None:
    config = ModelConfig(name="t", **kwargs)
    out = _forward(config)
    assert out.shape == (1, 2, 64, 64)
    assert torch.isfinite(out).all()


def test_resnet50_deeplab_three_classes_five_slices() -> None:
    config = ModelConfig(name="t", arch_options={"encoder": "resnet50"}, context_slices=5,
                         classes=default_classes(tooth=True))
    assert _forward(config).shape == (1, 3, 64, 64)


def test_context_slices_sets_input_channels() -> None:
    config = ModelConfig(name="t", context_slices=3, **TINY_UNET)
    model = build_model(config)
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert config.in_channels == 3 and first_conv.in_channels == 3
    assert _forward(config).shape == (1, 2, 64, 64)


def test_one_skip_is_smp_layout() -> None:
    config = ModelConfig(name="t", **_dl(decoder_skips=1))
    ours = build_model(config).state_dict()
    ref = smp.DeepLabV3Plus("tu-mobilenetv1_100", encoder_weights=None, in_channels=1, classes=2,
                            decoder_channels=32).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}


def _stride8_sensitivity(config: ModelConfig) -> float:
    """Largest output change when only the encoder's stride-8 feature map is perturbed."""
    torch.manual_seed(0)
    model = build_model(config).eval()
    x = torch.rand(1, 1, 64, 64)
    perturb = {"on": False}

    def hook(_module, _inputs, features):
        if perturb["on"]:
            features = list(features)
            assert features[3].shape[-1] == 64 // 8
            features[3] = features[3] + 10.0 * torch.randn_like(features[3])
        return features

    model.encoder.register_forward_hook(hook)
    with torch.no_grad():
        base = model(x)
        perturb["on"] = True
        changed = model(x)
    return float((changed - base).abs().max())


@pytest.mark.slow
def test_two_skip_decoder_uses_stride8_features() -> None:
    two = ModelConfig(name="t", **_dl(decoder_skips=2))
    one = ModelConfig(name="t", **_dl(decoder_skips=1))
    decoder = build_model(two).decoder
    assert isinstance(decoder, DeepLabV3PlusSkipsDecoder) and decoder.skips == 2
    assert decoder.block_s8[0].in_channels == 256  # mobilenetv1 stride-8 features
    assert decoder.block1[0].in_channels == 128  # mobilenetv1 stride-4 features
    assert _stride8_sensitivity(two) > 1e-4
    assert _stride8_sensitivity(one) == 0.0  # control: smp's one-skip decoder ignores stride 8


def test_aspp_concat_widens_post_aspp_conv() -> None:
    decoder = build_model(ModelConfig(name="t", **_dl(aspp_concat=True))).decoder
    assert decoder.aspp[1][0].in_channels == 32 + 1024  # ASPP output + deepest mobilenetv1 features


def test_required_multiple_and_non_square_input() -> None:
    unet = ModelConfig(name="t", **TINY_UNET)
    dl = ModelConfig(name="t", **MOBILENET_V1)
    assert required_multiple(unet) == 8
    assert required_multiple(ModelConfig(name="t", arch="unet")) == 32
    assert required_multiple(dl) == 16
    model = build_model(dl).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 48, 80)).shape == (1, 2, 48, 80)


@pytest.mark.parametrize("encoder", ["resnet9000", "tu-not_a_timm_model"])
def test_unknown_encoder(encoder) -> None:
    with pytest.raises(ModelError, match="unknown encoder"):
        build_model(ModelConfig(name="t", arch_options={"encoder": encoder}))


def test_unknown_arch() -> None:
    with pytest.raises(ModelError, match="arch"):
        ModelConfig(name="t", arch="fcn")
