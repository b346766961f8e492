"""Resumable training state in ``OUTDIR/.train_state/``: safetensors + JSON only (no pickles).

Files: ``model.safetensors`` (last weights), ``optimizer.safetensors`` (optimizer tensors, keys
``state.<param index>.<name>``), ``state.json`` (epoch, best score, optimizer scalars and param groups,
options). ``state.json`` is written last, so a crash mid-save leaves the previous state usable.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import InputError

STATE_DIR = ".train_state"
STATE_JSON = "state.json"


def _replace_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_state(
    state_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, info: dict[str, Any]
) -> None:
    """Write the last training state (model, optimizer, ``info``) atomically file by file."""
    state_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in opt["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    _replace_write(state_dir / "model.safetensors", lambda p: save_file(weights, str(p)))
    _replace_write(state_dir / "optimizer.safetensors", lambda p: save_file(tensors, str(p)))
    payload = {**info, "optimizer_scalars": scalars, "param_groups": opt["param_groups"]}
    _replace_write(state_dir / STATE_JSON, lambda p: p.write_text(json.dumps(payload, indent=1), encoding="utf-8"))


def load_state(
    state_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> dict[str, Any]:
    """Restore model and optimizer from ``state_dir``; returns the saved ``info``. Missing → ``InputError``."""
    path = state_dir / STATE_JSON
    if not path.is_file():
        raise InputError(f"nothing to resume: {path} not found (train without --resume first)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        weights = load_file(str(state_dir / "model.safetensors"), device="cpu")
        tensors = load_file(str(state_dir / "optimizer.safetensors"), device="cpu")
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the training state in {state_dir}: {exc}") from exc
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise InputError(f"the training state in {state_dir} does not fit this model (changed options?): {exc}") from exc
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        opt_state.setdefault(int(idx), {})[name] = value.to(device) if value.ndim else value
    for idx, sc in info.pop("optimizer_scalars", {}).items():
        opt_state.setdefault(int(idx), {}).update(sc)
    optimizer.load_state_dict({"state": opt_state, "param_groups": info.pop("param_groups")})
    return info


def install_best(best_dir: Path, out_dir: Path, files: tuple[str, ...] = ("model.safetensors", "config.json")) -> None:
    """Copy the best model's files into ``out_dir`` (weights first, config last, each by rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in files:
        tmp = out_dir / f".{name}.tmp"
        shutil.copy2(best_dir / name, tmp)
        os.replace(tmp, out_dir / name)
