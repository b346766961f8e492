"""Choosing the compute device and numeric precision.

Precision ``"auto"`` (:func:`resolve_precision`, the same for inference, training and fine-tuning): bf16 autocast
on CUDA (fp16 where the GPU lacks bf16); on the CPU bf16 where it has native bf16 instructions (AVX512-BF16 or AMX),
else fp32; fp32 on MPS. Without native bf16 the CPU emulates it, slower than fp32 (measurements:
docs/benchmarks/speed_scale.md; training: docs/TRAINING.md).
"""

from __future__ import annotations

import contextlib
import platform
import re
from pathlib import Path
from typing import ContextManager

import torch

from ..errors import DeviceError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_PRECISION_ALIASES = {
    "auto": "auto", "fp32": "fp32", "float32": "fp32", "float": "fp32",
    "bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "half": "fp16",
}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def describe_devices() -> list[str]:
    """Human-readable list of usable devices, e.g. ``["cpu (2 threads)", "cuda:0 NVIDIA H200 (139 GiB)"]``."""
    found = [f"cpu ({torch.get_num_threads()} threads)"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            found.append(f"cuda:{i} {props.name} ({props.total_memory / 2**30:.0f} GiB)")
    if _mps_available():
        found.append("mps (Apple GPU)")
    return found


def cpu_name(device: torch.device) -> str:
    """The GPU name on CUDA, else the CPU model name (/proc/cpuinfo, or platform's guess)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def choose_device(requested: str | torch.device | None = "auto") -> torch.device:
    """The torch device for ``requested``: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``/``gpu``,
    ``cuda:N``/``gpu:N`` or ``mps``. Unknown or unavailable → :class:`DeviceError` listing what was found."""
    text = "auto" if requested is None else str(requested).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    m = re.fullmatch(r"(cpu|cuda|gpu|mps)(?::(\d+))?", text)
    if m is None:
        raise DeviceError(f"unknown device {requested!r}; use auto, cpu, cuda, cuda:N, gpu or mps")
    kind, index = m.group(1), m.group(2)
    found = ", ".join(describe_devices())
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise DeviceError(f"device {requested!r} requested but no Apple MPS GPU is available (found: {found})")
        return torch.device("mps")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    i = int(index) if index is not None else 0
    if n == 0:
        raise DeviceError(f"device {requested!r} requested but no CUDA GPU is available (found: {found})")
    if i >= n:
        raise DeviceError(f"device {requested!r} requested but there is no CUDA GPU {i} (found: {found})")
    return torch.device("cuda", i)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; ``None`` means plain fp32."""
    name = _PRECISION_ALIASES.get(str(precision).strip().lower())
    if name is None:
        raise DeviceError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
    if name == "fp32":
        return None
    if name == "fp16" and device.type == "cpu":
        raise DeviceError("precision fp16 is for GPUs; on CPU use bf16 or fp32")
    return torch.bfloat16 if name == "bf16" else torch.float16


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles), where bf16 autocast pays."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # older torch or a non-x86 build
        return False


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """Autocast to ``dtype`` on ``device`` (a no-op context for fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
