"""How the network runs (``backend=``): eager, ``torch.compile``d, or int8-quantized and compiled.

- ``eager``: the module under autocast to the precision's dtype (plain fp32 when it has none).
- ``compiled``: ``torch.compile`` (inductor with freezing), one graph per input shape; a short last batch
  is padded to the compiled batch size. If compiling fails, a warning and eager from then on.
- ``int8`` (opt-in, CPU, needs torchao): static PT2E quantization calibrated on slices of the volume being
  segmented (:func:`calibration_stack`), stem and head kept in floating point, then compiled.
- ``auto``: compiled for large CPU jobs in bf16/fp16 where a C++ compiler exists (:func:`auto_compiles`),
  else eager. Never int8.

Measurements behind these rules: docs/benchmarks/speed_scale.md.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import logging
import os
import shutil
import sys
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import DeviceError
from .device import autocast

log = logging.getLogger(__name__)

BACKENDS = ("auto", "eager", "compiled", "int8")
#: how to get the int8 backend's quantizer
TORCHAO_HINT = "pip install torchao==0.18.0"
#: slices of the volume that calibrate the int8 backend, and their largest side (a centre crop)
CALIBRATION_SLICES = 8
CALIBRATION_SIZE = 512
#: ``auto`` compiles on the CPU only for jobs of at least this many pixels (slices × rows × columns), where
#: the first compile is won back (docs/benchmarks/speed_scale.md, "What auto does")
COMPILE_MIN_PIXELS = 256 * 512 * 512

Forward = Callable[[torch.Tensor], torch.Tensor]


def check_backend(backend: str) -> str:
    """The canonical backend name; an unknown one → :class:`DeviceError` listing the choices."""
    name = str(backend).strip().lower()
    if name not in BACKENDS:
        raise DeviceError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    return name


def can_compile(device: torch.device) -> bool:
    """Whether ``torch.compile`` can be expected to work on ``device``: a C++ compiler (CPU) or Triton (CUDA)."""
    if device.type == "cpu":
        names = [os.environ.get("CXX", ""), "g++", "c++", "clang++"] if sys.platform != "win32" else ["cl"]
        return any(n and shutil.which(n) for n in names)
    if device.type == "cuda":
        return importlib.util.find_spec("triton") is not None
    return False


def auto_compiles(device: torch.device, dtype: torch.dtype | None, pixels: int) -> bool:
    """Backend ``auto``'s choice for a job of ``pixels``: compile on a CPU, in low precision, for a large job."""
    return device.type == "cpu" and dtype is not None and pixels >= COMPILE_MIN_PIXELS and can_compile(device)


def torchao_available() -> bool:
    """Whether ``torchao`` (the int8 backend's quantizer) is installed."""
    return importlib.util.find_spec("torchao") is not None


def check_int8(device: torch.device) -> None:
    """The int8 backend's requirements (CPU, torchao); unmet → :class:`DeviceError` saying what to do."""
    if device.type != "cpu":
        raise DeviceError(f"the int8 backend runs on the CPU only, not on {device}; use --device cpu")
    _pt2e()


def _pt2e() -> tuple:
    """``(prepare_pt2e, convert_pt2e, x86_inductor_quantizer module)``; torchao missing → :class:`DeviceError`."""
    try:
        q = importlib.import_module("torchao.quantization.pt2e.quantize_pt2e")
        x86 = importlib.import_module("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer")
    except ImportError as exc:
        raise DeviceError(f"the int8 backend needs torchao ({exc}); install it with: {TORCHAO_HINT}") from exc
    return q.prepare_pt2e, q.convert_pt2e, x86


def int8_kept_layers(module: nn.Module) -> list[str]:
    """Names of the layers the int8 backend keeps un-quantized: the first convolution (stem) and the
    segmentation head (a top-level child so named)."""
    first = next((n for n, m in module.named_modules() if isinstance(m, nn.Conv2d)), None)
    tops = [n for n, _ in module.named_children() if n == "segmentation_head"]
    return ([first] if first and not any(first.startswith(t + ".") for t in tops) else []) + tops


def quantize_int8(module: nn.Module, samples: torch.Tensor, batch: int = 4) -> nn.Module:
    """A static int8 copy of ``module`` (PT2E, X86InductorQuantizer), calibrated on ``samples`` (N, C, H, W).

    Not compiled; layers from :func:`int8_kept_layers` stay in floating point. ``module`` is left as it was.
    """
    prepare_pt2e, convert_pt2e, x86 = _pt2e()
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    for name in int8_kept_layers(module):
        quantizer.set_module_name_qconfig(name, None)
    dim = torch.export.Dim.AUTO
    samples = samples.float().contiguous()
    with torch.no_grad():
        exported = torch.export.export(copy.deepcopy(module).eval(), (samples[:batch],),
                                       dynamic_shapes=({0: dim, 2: dim, 3: dim},)).module()
        prepared = prepare_pt2e(exported, quantizer)
        for i in range(0, len(samples), batch):
            prepared(samples[i : i + batch])
        return convert_pt2e(prepared)


def calibration_stack(array: np.ndarray, lo: float, hi: float, context: int, multiple: int,
                      count: int = CALIBRATION_SLICES, size: int = CALIBRATION_SIZE) -> torch.Tensor:
    """Network inputs to calibrate int8 on: ``count`` evenly spaced slices of the whole volume ``array``
    (k, j, i) as 2.5D stacks normalised with ``lo``..``hi``, centre-cropped to at most ``size`` and padded
    (edge) or cropped to a multiple of ``multiple``. A region of interest gets the full scan's calibration."""
    from .context import context_slices
    from .normalize import apply_intensity_range

    ks = sorted({int(round(k)) for k in np.linspace(0, array.shape[0] - 1, min(count, array.shape[0]))})
    box = []
    for n in array.shape[1:]:
        side = min(n, size)
        side = side - side % multiple if side >= multiple else side
        box.append(slice((n - side) // 2, (n - side) // 2 + side))
    stack = apply_intensity_range(context_slices(array[:, box[0], box[1]], ks, context), lo, hi)
    pad = [(0, 0), (0, 0)] + [(0, -(-n // multiple) * multiple - n) for n in stack.shape[2:]]
    return torch.from_numpy(np.pad(stack, pad, mode="edge") if any(p[1] for p in pad) else stack)


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` means out of memory (cuDNN/cuBLAS/MPS report it as a plain RuntimeError)."""
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "alloc_failed" in text


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters), for one-line warnings."""
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"


class EagerNetwork:
    """``x (N, C, H, W) → logits``: ``module`` as it is, under autocast to ``dtype`` (None = fp32)."""

    def __init__(self, module: nn.Module, device: torch.device, dtype: torch.dtype | None) -> None:
        self.module, self.device, self.dtype = module, device, dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.dtype):
            return self.module(x)


class CompiledNetwork(EagerNetwork):
    """``module`` through ``torch.compile`` (compiled once, one graph per input shape; freezing: the module must
    not change in place afterwards). A short batch is padded to the batch size compiled for its shape. If the
    first call of a shape fails to compile, one warning and eager from then on (:attr:`failed`)."""

    def __init__(self, module: nn.Module, device: torch.device, dtype: torch.dtype | None) -> None:
        super().__init__(module, device, dtype)
        self._batch: dict[tuple, int] = {}  # input shape without N (+ dtype) → batch size compiled for it
        self.failed = False
        try:
            self._compiled = torch.compile(module, dynamic=False)
        except Exception as exc:  # noqa: BLE001 - e.g. no compiler backend in this torch build
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        log.warning("torch.compile failed on %s (%s); continuing without compilation", self.device, first_line(exc))
        self.failed = True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.failed:
            return super().__call__(x)
        key, n = (*x.shape[1:], x.dtype), x.shape[0]
        fixed = self._batch.get(key, 0)
        if n < fixed:  # repeat the last slice up to the compiled batch size rather than recompile
            x = torch.cat([x, x[-1:].expand(fixed - n, *x.shape[1:])]).contiguous(memory_format=torch.channels_last)
        first = n > fixed
        if first:
            log.info("compiling the model for inputs of %s on %s (once per shape; can take a minute)",
                     "x".join(map(str, x.shape)), self.device)
        try:
            with autocast(self.device, self.dtype), _freezing():
                out = self._compiled(x)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eager instead
            if is_oom(exc):
                self._batch.pop(key, None)  # a smaller batch compiles its own graph, not padded back up
                raise
            if not first:
                raise
            self._fail(exc)
            return super().__call__(x[:n])
        if first:
            self._batch[key] = n
        return out[:n]


def _freezing() -> contextlib.AbstractContextManager:
    """Inductor's freezing for the compile a call may trigger (``torch.compile(options=...)`` does not reach it)."""
    import torch._inductor.config as inductor_config

    return inductor_config.patch(freezing=True)
