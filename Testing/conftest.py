"""Shared pytest set-up: CPU only, few threads, and a tiny model folder for fast end-to-end tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: small real scans without labels, beside the project root (``../shared/data``); tests using them skip without
SHARED_DATA = Path(os.environ.get("FOSSILSEGMENT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests are about behaviour, run them on CPU everywhere
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> None:
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny U-Net (random but fixed weights) saved as a model folder: fast, for plumbing tests only."""
    import torch

    from fossilsegment_engine.models import ModelConfig, build_model, save_model

    torch.manual_seed(0)
    config = ModelConfig(name="tiny-test-unet", arch="unet",
                         arch_options={"encoder": "tu-resnet10t", "encoder_depth": 3, "decoder_channels": 8}, tile_size=64, tile_overlap=16)
    model = build_model(config)
    return save_model(model, config, tmp_path_factory.mktemp("models") / "tiny-test-unet")
