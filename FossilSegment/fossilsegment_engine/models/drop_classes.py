"""Drop output classes from a trained model (e.g. a class it never learnt) without retraining.

The final conv's rows for the dropped classes are removed, so argmax over the remaining logits is
unchanged wherever the full model did not predict a dropped class. Dropped classes must be the last
ones (label values stay 0..n-1 and unchanged for the kept classes).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from ..errors import InputError
from .build import build_model
from .config import ModelConfig


def _head_conv(model: nn.Module) -> nn.Conv2d:
    """The final conv (the first Conv2d of smp's ``segmentation_head``)."""
    head = getattr(model, "segmentation_head", None)
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)] if head is not None else []
    if not convs:
        raise InputError("model has no segmentation_head conv to drop classes from")
    return convs[0]


def drop_classes(model: nn.Module, config: ModelConfig, names: Sequence[str]) -> tuple[nn.Module, ModelConfig]:
    """A copy of ``(model, config)`` without the classes ``names`` (which must be the last classes)."""
    unknown = [n for n in names if n not in config.class_names[1:]]
    if unknown or not names:
        raise InputError(f"cannot drop {list(names)!r}: foreground classes of {config.name!r} are "
                         f"{config.class_names[1:]}")
    keep = config.n_classes - len(names)
    if sorted(config.class_names[keep:]) != sorted(names):
        raise InputError(f"only the last classes can be dropped (label values must stay 0..n-1); "
                         f"the last {len(names)} of {config.class_names} are {config.class_names[keep:]}")
    if keep < 2:
        raise InputError("a model needs Background and at least one more class")
    new_config = dataclasses.replace(config, classes=[dict(c) for c in config.classes[:keep]], weights_sha256=None)
    new_model = build_model(new_config)
    state = model.state_dict()
    conv = _head_conv(new_model)
    head_keys = {k for k, v in new_model.state_dict().items() if v.data_ptr() in
                 {conv.weight.data_ptr(), conv.bias.data_ptr() if conv.bias is not None else -1}}
    new_state = {k: (v[:keep] if k in head_keys else v) for k, v in state.items()}
    new_model.load_state_dict(new_state, strict=True)
    return new_model.eval(), new_config
