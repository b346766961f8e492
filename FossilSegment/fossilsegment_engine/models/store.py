"""Model folders on disk: ``config.json`` + ``model.safetensors`` (+ ``MODEL_CARD.md``).

Weights are safetensors only (never pickles). A folder is written atomically (temp folder, then rename)
and verified on load: config valid, weights present, SHA-256 matching, keys and shapes matching the
architecture the config describes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .. import __version__
from ..atomic import atomic_dir, check_can_write, normal_mode
from ..errors import ModelError
from ..resources import candidate_resource_dirs
from .build import build_model
from .config import ModelConfig

DEFAULT_MODEL = "fossil-bone-v5"
CONFIG_FILE = "config.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
MODELS_DIR_ENV = "FOSSILSEGMENT_MODELS_DIR"
_MAX_LISTED = 5


def models_dir() -> Path:
    """Where bundled models live, looked up at each call.

    ``$FOSSILSEGMENT_MODELS_DIR`` if set; else ``Models/`` in the first resources folder that has one
    (``<repo>/Resources`` in a source checkout, ``<module dir>/Resources`` in an installed Slicer extension;
    see :mod:`..resources`).
    """
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    candidates = [d / "Models" for d in candidate_resource_dirs()]
    return next((d for d in candidates if d.is_dir()), candidates[0])


def __getattr__(name: str) -> Any:
    """``MODELS_DIR`` is computed on access so the environment variable can change at run time."""
    if name == "MODELS_DIR":
        return models_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def bundled_models() -> list[str]:
    """Names of the model folders (with a ``config.json``) in :func:`models_dir`, sorted."""
    root = models_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file())


def resolve_model_dir(name_or_folder: str | Path | None = None) -> Path:
    """The model folder for ``None`` (the default model), a folder path, a ``config.json`` path, or a bundled name.

    A ``Path`` or a string with a path separator is a folder; a bare name is looked up among the bundled
    models first, then as a folder relative to the working directory. Unknown → ``ModelError``.
    """
    if name_or_folder is None:
        name_or_folder = DEFAULT_MODEL
    is_path = isinstance(name_or_folder, Path) or any(s in str(name_or_folder) for s in ("/", os.sep))
    text = str(name_or_folder)
    if not text.strip():
        raise ModelError("model name is empty")
    if not is_path and text in bundled_models():
        return models_dir() / text
    path = Path(text).expanduser()
    if path.is_file() and path.name == CONFIG_FILE:
        return path.parent
    if path.is_dir():
        return path
    if is_path:
        raise ModelError(f"model folder not found: {path}")
    names = bundled_models()
    listing = ", ".join(names) if names else f"none (no models in {models_dir()})"
    raise ModelError(f"unknown model {text!r}; bundled models: {listing}; or give a model folder")


def file_sha256(path: Path | str) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_hash(name_or_folder: str | Path | None) -> str:
    """SHA-256 of a model's weights file (for provenance, e.g. a fine-tuned model's parent)."""
    folder = resolve_model_dir(name_or_folder)
    config_path = folder / CONFIG_FILE
    weights_file = ModelConfig.load(config_path).weights_file if config_path.is_file() else "model.safetensors"
    weights = folder / weights_file
    if not weights.is_file():
        raise ModelError(f"model weights not found: {weights}")
    return file_sha256(weights)


def _check_state_dict(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], what: str, config: ModelConfig
) -> None:
    """Missing/unexpected keys or shape mismatches between ``state`` and the architecture → ``ModelError``."""
    arch = config.describe_architecture()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:_MAX_LISTED])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:_MAX_LISTED])})")
        raise ModelError(f"{what} do not match the architecture {arch}: {'; '.join(parts)}")
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise ModelError(
            f"{what} do not match the architecture {arch}: {len(wrong)} shape mismatch(es) "
            f"(e.g. {'; '.join(wrong[:_MAX_LISTED])})"
        )


def _expected_state(config: ModelConfig) -> dict[str, torch.Tensor]:
    """The state dict (shapes only, on the meta device) of the architecture ``config`` describes."""
    with torch.device("meta"):
        return build_model(config).state_dict()


def save_model(
    model: nn.Module,
    config: ModelConfig,
    folder: Path | str,
    force: bool = False,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model``'s weights (safetensors) and ``config`` (with ``weights_sha256``) to ``folder`` atomically.

    ``model`` must match the architecture ``config`` describes. ``provenance`` gets ``engine_version`` and
    ``created`` (UTC) when absent. ``extra_files`` maps file names to text (e.g. ``MODEL_CARD.md``).
    An existing ``folder`` is refused unless ``force`` (then replaced whole). Returns ``folder``.
    """
    folder = check_can_write(folder, force)
    config.validate()
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    _check_state_dict(state, _expected_state(config), "model weights", config)
    provenance = {"engine_version": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    provenance.update(config.provenance)
    for name in extra_files or {}:
        if Path(name).name != name or name in (CONFIG_FILE, config.weights_file) or name.startswith("."):
            raise ModelError(f"extra file name must be a plain, new file name, got {name!r}")
    with atomic_dir(folder, force=force) as tmp:
        weights = tmp / config.weights_file
        # One metadata entry only: safetensors writes its metadata map in a per-process random order, so a
        # second entry would give the same tensors a different file (and weights_sha256) on every save.
        save_file(state, str(weights), metadata={"format": "pt"})
        normal_mode(weights)  # safetensors writes 0600
        saved = dataclasses.replace(config, weights_sha256=file_sha256(weights), provenance=provenance)
        saved.save(tmp / CONFIG_FILE)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return folder


def load_config(name_or_folder: str | Path | None = None) -> ModelConfig:
    """Just the validated ``config.json`` of a model (no weights read)."""
    return ModelConfig.load(resolve_model_dir(name_or_folder) / CONFIG_FILE)


def load_model(
    name_or_folder: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelConfig]:
    """Load, verify and return ``(model in eval mode on device, config)``; any problem → ``ModelError``."""
    folder = resolve_model_dir(name_or_folder)
    config = ModelConfig.load(folder / CONFIG_FILE)
    weights = folder / config.weights_file
    if not weights.is_file():
        raise ModelError(f"model weights not found: {weights}")
    if config.weights_sha256 is not None:
        actual = file_sha256(weights)
        if actual != config.weights_sha256:
            raise ModelError(
                f"model weights {weights} do not match config.json (SHA-256 {actual[:12]}… ≠ "
                f"{config.weights_sha256[:12]}…): the file is corrupt or was replaced"
            )
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot read model weights {weights} (corrupt or not safetensors): {exc}") from exc
    model = build_model(config)
    _check_state_dict(state, model.state_dict(), f"model weights {weights}", config)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), config
