"""Average the weights of models fine-tuned from one parent (a "model soup", Wortsman et al. 2022).

Checkpoints that share an initialisation lie in one basin of the loss, so their weighted mean is itself a
model: as fast and as large as each of them, often better on data none of them was selected on. Every
ingredient must have the same architecture, input (context slices, normalisation, tiles) and classes.
Floating-point tensors (weights, BatchNorm statistics) are averaged; integer ones (``num_batches_tracked``)
are taken from the first ingredient.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from ..errors import InputError
from .build import build_model
from .config import ModelConfig

#: config fields that must agree between ingredients (everything that shapes or feeds the network)
_SAME = ("arch", "arch_options", "context_slices", "classes", "normalization", "tile_size", "tile_overlap")


def _check_compatible(configs: Sequence[ModelConfig]) -> None:
    first = configs[0]
    for other in configs[1:]:
        for field in _SAME:
            if getattr(other, field) != getattr(first, field):
                raise InputError(f"cannot average {first.name!r} and {other.name!r}: their {field} differ "
                                 f"({getattr(first, field)!r} vs {getattr(other, field)!r})")


def average_models(
    models: Sequence[tuple[nn.Module, ModelConfig]], weights: Sequence[float] | None = None
) -> tuple[nn.Module, ModelConfig]:
    """The weighted mean of ``models`` (``(module, config)`` pairs, equal weights by default) as a new
    ``(module in eval mode, config)``; the config is the first ingredient's, without a weights hash."""
    if len(models) < 2:
        raise InputError(f"averaging needs at least two models, got {len(models)}")
    weights = [1.0] * len(models) if weights is None else [float(w) for w in weights]
    if len(weights) != len(models):
        raise InputError(f"{len(weights)} weights for {len(models)} models")
    if any(not w > 0 for w in weights):  # also refuses NaN
        raise InputError(f"model weights must be positive numbers, got {weights}")
    configs = [config for _, config in models]
    _check_compatible(configs)
    total = sum(weights)
    states = [module.state_dict() for module, _ in models]
    mean = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            acc = sum((w / total) * state[key].detach().to("cpu", torch.float64) for w, state in zip(weights, states))
            mean[key] = acc.to(first.dtype)
        else:
            mean[key] = first.detach().to("cpu").clone()
    config = dataclasses.replace(configs[0], weights_sha256=None)
    model = build_model(config)
    model.load_state_dict(mean, strict=True)
    return model.eval(), config
