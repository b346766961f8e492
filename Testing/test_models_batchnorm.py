"""BatchNorm statistics measured again: the batches' mean and variance, nothing else touched, nothing on failure."""

from __future__ import annotations

import pytest
import torch

from fossilsegment_engine.errors import InputError
from fossilsegment_engine.models import ModelConfig, build_model
from fossilsegment_engine.models.batchnorm import recompute_batchnorm

TINY = dict(arch="unet", arch_options={"encoder_depth": 3, "decoder_channels": [16, 8, 4]})


def _tiny(seed: int) -> tuple[torch.nn.Module, ModelConfig]:
    config = ModelConfig(name="m", **TINY)
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():  # statistics that differ from any batch's
        for key, value in model.state_dict().items():
            if "running_mean" in key:
                value.copy_(torch.randn_like(value))
            elif "running_var" in key:
                value.copy_(torch.rand_like(value) + 0.5)
    return model.eval(), config


def _first_norm_inputs(model: torch.nn.Module, batches: list[torch.Tensor]) -> torch.Tensor:
    """What the first BatchNorm layer sees on ``batches`` (the layers before it have no running statistics)."""
    norm = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    handle = norm.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    model.eval()
    with torch.no_grad():
        for b in batches:
            model(b)
    handle.remove()
    return torch.cat([x.transpose(0, 1).reshape(x.shape[1], -1) for x in seen], dim=1)


def test_recompute_batchnorm_measures_the_mean_and_variance_of_the_batches_and_keeps_weights() -> None:
    model, _ = _tiny(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    batches = [0.5 + 0.2 * torch.randn(2, 1, 32, 32, generator=g) for _ in range(3)]
    x = _first_norm_inputs(model, batches)
    assert recompute_batchnorm(model, iter(batches)) == 3
    norm = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    torch.testing.assert_close(norm.running_mean, x.mean(dim=1), rtol=1e-4, atol=1e-5)
    # each batch's unbiased variance, averaged (what a cumulative BatchNorm keeps)
    per_batch = x.reshape(x.shape[0], 3, -1).var(dim=2, unbiased=True).mean(dim=1)
    torch.testing.assert_close(norm.running_var, per_batch, rtol=1e-3, atol=1e-5)
    assert norm.momentum == 0.1 and not model.training
    after = model.state_dict()
    for key, value in before.items():
        if "running_" not in key and "num_batches" not in key:
            assert torch.equal(after[key], value), key
    changed = [k for k in before if "running_mean" in k and not torch.equal(after[k], before[k])]
    assert len(changed) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_recompute_batchnorm_without_batches_or_on_error_leaves_the_statistics() -> None:
    model, _ = _tiny(4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputError, match="no batches"):
        recompute_batchnorm(model, iter([]))

    def broken():
        yield torch.rand(2, 1, 32, 32)
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        recompute_batchnorm(model, broken())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not model.training
