"""Segmentation networks (U-Net, DeepLab v3+ with 1/2 skips), their ``config.json`` and safetensors store.

The architectures and their options are declared once, in :mod:`.archs`.
"""

import importlib
from typing import Any

#: public name → submodule; loaded on first use (PEP 562) so that importing the package (e.g. for the
#: architecture registry in ``fossilsegment train --help``) does not load torch and smp
_HOME = {
    **dict.fromkeys(("ARCHITECTURES", "DEFAULT_ARCH", "Architecture", "ArchOption", "architecture", "create_model",
                     "known_encoder"), "archs"),
    **dict.fromkeys(("build_model", "required_multiple", "unused_parameters"), "build"),
    **dict.fromkeys(("ModelConfig", "default_classes"), "config"),
    **dict.fromkeys(("DeepLabV3PlusSkipsDecoder", "FossilDeepLabV3Plus"), "deeplabv3plus"),
    **dict.fromkeys(("DEFAULT_MODEL", "bundled_models", "load_config", "load_model", "model_hash", "models_dir",
                     "resolve_model_dir", "save_model"), "store"),
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


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
