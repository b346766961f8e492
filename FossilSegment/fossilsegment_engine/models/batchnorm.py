"""BatchNorm statistics measured again on new inputs (for a model whose statistics no longer fit its inputs)."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..errors import InputError


def recompute_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every BatchNorm layer's running mean and variance by their average over ``batches`` (network
    inputs, forwarded in training mode without gradients); the model is left in eval mode with its momenta
    restored. Returns the number of batches. No batches (``InputError``) or any error on the way leaves the
    statistics as they were. Weights are not touched."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    count = 0
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: every batch counts the same
        model.train()
        with torch.no_grad():
            for batch in batches:
                model(batch)
                count += 1
        if count == 0:
            raise InputError("no batches to recompute the BatchNorm statistics on")
    except BaseException:
        for m, state in zip(norms, saved):
            m.load_state_dict(state)
        raise
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return count
