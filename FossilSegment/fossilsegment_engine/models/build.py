"""Build a randomly initialised network from a :class:`ModelConfig`, offline (``encoder_weights=None``)."""

from __future__ import annotations

from torch import nn

from ..errors import ModelError
from .archs import architecture, create_model, known_encoder
from .config import ModelConfig

__all__ = ["build_model", "known_encoder", "required_multiple", "unused_parameters"]


def required_multiple(config: ModelConfig) -> int:
    """Input height and width must be multiples of this (the inference engine pads to it)."""
    return architecture(config.arch).multiple(config.arch_options)


def unused_parameters(config: ModelConfig) -> bool:
    """Whether the network has parameters its forward pass never uses (DistributedDataParallel must know)."""
    return architecture(config.arch).unused_parameters(config.arch_options)


def build_model(config: ModelConfig) -> nn.Module:
    """The network ``config`` describes: input ``(N, context_slices, H, W)``, logits ``(N, n_classes, H, W)``.

    Unknown arch/encoder or an encoder that cannot take this layout → ``ModelError``.
    """
    config.validate()
    try:
        return create_model(config.arch, config.in_channels, config.n_classes, **config.arch_options)
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError) as exc:
        raise ModelError(f"cannot build {config.describe_architecture()}: {exc}") from exc
