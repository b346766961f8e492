"""Build a randomly initialised network from a :class:`ModelConfig`, offline (``encoder_weights=None``)."""

from __future__ import annotations

import segmentation_models_pytorch as smp
import timm
from torch import nn

from ..errors import ModelError
from .config import ModelConfig
from .deeplabv3plus import FossilDeepLabV3Plus

#: DeepLab v3+ runs its encoder at output stride 16 (the deepest stage is dilated).
DEEPLAB_OUTPUT_STRIDE = 16


def known_encoder(name: str) -> bool:
    """True if smp can build ``name`` (an smp encoder, or ``tu-<timm model>``)."""
    if name.startswith("tu-"):
        return timm.is_model(name[3:])
    return name in smp.encoders.get_encoder_names()


def unet_decoder_channels(config: ModelConfig) -> list[int]:
    """The Unet decoder widths: the config's list, ``c`` → ``[c·2^(d-1), …, c]``, or smp's default."""
    dc = config.decoder_channels
    depth = config.encoder_depth
    if dc is None:
        return [256, 128, 64, 32, 16][:depth]
    if isinstance(dc, int):
        return [dc * 2 ** (depth - 1 - i) for i in range(depth)]
    return list(dc)


def required_multiple(config: ModelConfig) -> int:
    """Input height and width must be multiples of this (the inference engine pads to it)."""
    if config.arch == "unet":
        return 2**config.encoder_depth
    return min(2**config.encoder_depth, DEEPLAB_OUTPUT_STRIDE)


def build_model(config: ModelConfig) -> nn.Module:
    """The network ``config`` describes: input ``(N, context_slices, H, W)``, logits ``(N, n_classes, H, W)``.

    Unknown arch/encoder or an encoder that cannot take this layout → ``ModelError``.
    """
    config.validate()
    if not known_encoder(config.encoder):
        raise ModelError(
            f"model config: unknown encoder {config.encoder!r} (use an smp encoder name such as 'resnet18', "
            f"'mobilenet_v2', 'resnet50', or 'tu-<timm model>' such as 'tu-mobilenetv1_100')"
        )
    try:
        if config.arch == "unet":
            return smp.Unet(
                encoder_name=config.encoder,
                encoder_depth=config.encoder_depth,
                encoder_weights=None,
                decoder_channels=unet_decoder_channels(config),
                in_channels=config.in_channels,
                classes=config.n_classes,
            )
        return FossilDeepLabV3Plus(
            encoder_name=config.encoder,
            encoder_depth=config.encoder_depth,
            encoder_weights=None,
            decoder_channels=config.decoder_channels if config.decoder_channels is not None else 256,
            in_channels=config.in_channels,
            classes=config.n_classes,
            decoder_skips=config.decoder_skips,
            aspp_concat=config.aspp_concat,
        )
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError) as exc:
        raise ModelError(
            f"cannot build {config.arch} with encoder {config.encoder!r} "
            f"(depth {config.encoder_depth}): {exc}"
        ) from exc
