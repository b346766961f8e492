"""Segmentation networks (U-Net, DeepLab v3+ with 1/2 skips), their ``config.json`` and safetensors store.

The architectures and their options are declared once, in :mod:`.archs`.
"""

from .archs import ARCHITECTURES, DEFAULT_ARCH, Architecture, ArchOption, architecture, create_model
from .build import build_model, known_encoder, required_multiple, unused_parameters
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
    "ARCHITECTURES",
    "ArchOption",
    "Architecture",
    "DEFAULT_ARCH",
    "DEFAULT_MODEL",
    "DeepLabV3PlusSkipsDecoder",
    "FossilDeepLabV3Plus",
    "ModelConfig",
    "architecture",
    "build_model",
    "bundled_models",
    "create_model",
    "default_classes",
    "known_encoder",
    "load_config",
    "load_model",
    "model_hash",
    "models_dir",
    "required_multiple",
    "resolve_model_dir",
    "save_model",
    "unused_parameters",
]
