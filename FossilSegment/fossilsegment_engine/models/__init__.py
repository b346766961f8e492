"""Segmentation networks (U-Net, DeepLab v3+ with 1/2 skips), their ``config.json`` and safetensors store."""

from .build import build_model, known_encoder, required_multiple
from .config import ModelConfig, default_classes
from .deeplabv3plus import DeepLabV3PlusSkipsDecoder, FossilDeepLabV3Plus
from .store import (
    DEFAULT_MODEL,
    bundled_models,
    load_config,
    load_model,
    model_hash,
    models_dir,
    resolve_model_dir,
    save_model,
)

__all__ = [
    "DEFAULT_MODEL",
    "DeepLabV3PlusSkipsDecoder",
    "FossilDeepLabV3Plus",
    "ModelConfig",
    "build_model",
    "bundled_models",
    "default_classes",
    "known_encoder",
    "load_config",
    "load_model",
    "model_hash",
    "models_dir",
    "required_multiple",
    "resolve_model_dir",
    "save_model",
]
