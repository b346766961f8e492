"""How the network runs: the forward callable the :class:`~.segmenter.Segmenter` calls on each batch.

Backends (``backend=``):

- ``"eager"`` — the module as it is (channels_last), under autocast to the precision's dtype (bf16/fp16),
  or plain fp32.
- ``"compiled"`` — the same through ``torch.compile`` (inductor with freezing: weights and batch norm folded
  into constants, pre-packed for oneDNN; so the module must not be changed in place once compiled), one
  graph per input shape; a short last batch is padded to the batch size already compiled so it does not
  recompile. If compiling fails (no C++ compiler, no Python headers, an unsupported layer) the runner logs
  a warning and continues eager for good, with the same numbers.
- ``"auto"`` — compiled only where it pays: on the CPU, with a low precision (bf16), a C++ compiler on the
  PATH, and a job of at least :data:`COMPILE_MIN_PIXELS` (slices × rows × columns, about 256 slices of
  512², where the 10–50 s first compile is won back), or for a shape already compiled in this process,
  and not after compiling failed once in this process. Otherwise eager. On CUDA and MPS ``auto`` is eager.

The numeric precision is chosen separately (:func:`.device.resolve_inference_precision`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from typing import Callable

import torch
from torch import nn

from ..errors import DeviceError
from .device import autocast

log = logging.getLogger(__name__)

BACKENDS = ("auto", "eager", "compiled")

#: ``auto`` compiles on the CPU only for jobs of at least this many pixels (slices × rows × columns).
#: Measured on 2 cores (`fossilsegment bench`): compiling takes 10 s (warm kernel cache) to 50 s (cold) and saves
#: about 0.1 s per 512² slice against eager bf16, so it pays from about 100–500 slices of 512².
COMPILE_MIN_PIXELS = 256 * 512 * 512

Forward = Callable[[torch.Tensor], torch.Tensor]

#: device types where compiling failed in this process: ``auto`` does not try there again
_COMPILE_FAILED_ON: set[str] = set()


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
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return True
    return False


def _freezing() -> contextlib.AbstractContextManager:
    """Inductor's freezing for the compile a call may trigger (``torch.compile(options=...)`` does not reach it)."""
    import torch._inductor.config as inductor_config

    return inductor_config.patch(freezing=True)


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "alloc_failed" in text


class Runner:
    """The forward callable ``x (N, C, H, W) → logits (N, classes, H, W)`` for one module on one device.

    ``dtype`` is the autocast dtype (None = fp32). Call :meth:`plan` before a job so ``auto`` can decide
    whether compiling pays; without it ``auto`` stays eager (except for shapes already compiled).
    """

    def __init__(self, module: nn.Module, device: torch.device, dtype: torch.dtype | None,
                 backend: str = "auto") -> None:
        self.backend = check_backend(backend)
        self.device = device
        self.dtype = dtype
        self._module = module
        self._compiled: nn.Module | None = None
        self._compile_failed = False
        self._batch: dict[tuple, int] = {}  # input shape without N (+ dtype) → batch size compiled for it
        self._job_pixels = 0

    @property
    def precision(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def will_compile(self, pixels: int | None = None) -> bool:
        """Whether a job of ``pixels`` (default: the planned job) runs compiled, compile failures aside."""
        if self._compile_failed:
            return False
        if self.backend == "compiled":
            return True
        if self.backend == "eager" or self.device.type != "cpu" or self.dtype is None:
            return False
        pixels = self._job_pixels if pixels is None else pixels
        if pixels < COMPILE_MIN_PIXELS or self.device.type in _COMPILE_FAILED_ON:
            return False
        return can_compile(self.device)

    @property
    def mode(self) -> str:
        """What runs for the planned job, e.g. ``compiled-bf16`` or ``eager-fp32``."""
        return f"{'compiled' if self.will_compile() else 'eager'}-{self.precision}"

    def plan(self, slices: int, rows: int, columns: int) -> None:
        """Tell the runner the size of the coming job (slices of rows × columns)."""
        self._job_pixels = int(slices) * int(rows) * int(columns)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = (*x.shape[1:], x.dtype)
        if key in self._batch and not self._compile_failed:
            return self._run_compiled(x, key)  # already compiled for this shape: free to use
        if self.will_compile():
            return self._run_compiled(x, key)
        return self._eager(x)

    def _eager(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.dtype):
            return self._module(x)

    def _run_compiled(self, x: torch.Tensor, key: tuple) -> torch.Tensor:
        n = x.shape[0]
        fixed = self._batch.get(key, 0)
        if n < fixed:  # pad a short batch (repeat its last slice) to the compiled batch size
            x = torch.cat([x, x[-1:].expand(fixed - n, *x.shape[1:])]).contiguous(memory_format=torch.channels_last)
        first = n > fixed
        if first:
            log.info("compiling the model for %s inputs of %s on %s (once per shape; can take a minute)",
                     self.precision, "x".join(map(str, x.shape)), self.device)
        try:
            if self._compiled is None:
                self._compiled = torch.compile(self._module, dynamic=False)
            with autocast(self.device, self.dtype), _freezing():
                out = self._compiled(x)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eager instead
            if _is_oom(exc):
                self._batch.pop(key, None)  # let a smaller batch compile its own graph, not pad back up
                raise
            if not first:
                raise
            log.warning("torch.compile failed on %s (%s: %s); continuing without compilation",
                        self.device, type(exc).__name__, (str(exc).strip().splitlines() or [""])[0][:200])
            _COMPILE_FAILED_ON.add(self.device.type)
            self._compile_failed = True
            self._compiled = None
            self._batch.clear()
            return self._eager(x[:n])
        if first:
            self._batch[key] = n
        return out[:n]
