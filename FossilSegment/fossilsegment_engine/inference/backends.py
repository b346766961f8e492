"""How the network runs: the forward callable the :class:`~.segmenter.Segmenter` calls on each batch.

Backends (``backend=``):

- ``"eager"`` — the module as it is (channels_last), under autocast to the precision's dtype (bf16/fp16),
  or plain fp32.
- ``"compiled"`` — the same through ``torch.compile`` (inductor with freezing: weights and batch norm folded
  into constants, pre-packed for oneDNN; so the module must not be changed in place once compiled), one
  graph per input shape; a short last batch is padded to the batch size already compiled so it does not
  recompile. If compiling fails (no C++ compiler, no Python headers, an unsupported layer) the runner logs
  a warning and continues eager for good, with the same numbers.
- ``"int8"`` (CPU only, opt-in; needs ``torchao``) — static post-training int8 quantization (PT2E with
  ``X86InductorQuantizer``: weights per channel, activations per tensor), then compiled as above. The stem
  (first convolution) and the segmentation head stay out of int8 (in the autocast precision); keeping the
  whole decoder out as well gains little agreement and fails to compile under bf16 autocast (torch 2.14).
  Calibrated on the volume being segmented (:func:`calibration_stack`: a few evenly spaced slices of the
  whole scan, centre crop), not on a fixed set: its own intensity distribution brought the worst phantom
  family (skull) from 99.81 % to 99.91 % of voxels equal to fp32; a new volume means a new calibration
  and a new compile (the same volume reuses both). Still below 99.9 % on fine trabecular bone (99.84 %;
  bf16: 99.93 %), so ``auto`` never picks it.
- ``"auto"`` — compiled only where it pays: on the CPU, with a low precision (bf16), a C++ compiler on the
  PATH, and a job of at least :data:`COMPILE_MIN_PIXELS` (slices × rows × columns, about 256 slices of
  512², where the 10–50 s first compile is won back), or for a shape already compiled in this process,
  and not after compiling failed once in this process. Otherwise eager. On CUDA and MPS ``auto`` is eager.

The numeric precision is chosen separately (:func:`.device.resolve_inference_precision`).
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


def torchao_available() -> bool:
    """Whether ``torchao`` (the int8 backend's quantizer) is installed."""
    return importlib.util.find_spec("torchao") is not None


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
    (edge) or cropped to a multiple of ``multiple``. Whole-volume sampling: a region of interest gets the
    same calibration as the full scan."""
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
        if self.backend == "int8":
            if device.type != "cpu":
                raise DeviceError(f"the int8 backend runs on the CPU only, not on {device}; use --device cpu")
            _pt2e()  # torchao missing: say so now, not at the first batch
        self.device = device
        self.dtype = dtype
        self._module = module
        self._target = module  # what is compiled: the module, or its int8 copy
        self._calibration: Callable[[], torch.Tensor] | None = None
        self._calibrated_on: torch.Tensor | None = None
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
        if self.backend in ("compiled", "int8"):
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
        if self.backend == "int8" and not self._compile_failed:
            return f"int8-{self.precision}"
        return f"{'compiled' if self.will_compile() else 'eager'}-{self.precision}"

    def plan(self, slices: int, rows: int, columns: int) -> None:
        """Tell the runner the size of the coming job (slices of rows × columns)."""
        self._job_pixels = int(slices) * int(rows) * int(columns)

    def calibrate(self, samples: Callable[[], torch.Tensor]) -> None:
        """Where the int8 backend takes its calibration inputs for the coming job (called only if it needs them).

        Without it, int8 calibrates on its first batch. Other backends ignore it.
        """
        self._calibration = samples

    def _quantize(self, x: torch.Tensor) -> None:
        """(Re)quantize for the coming job unless its calibration inputs are those of the current int8 model."""
        samples = self._calibration() if self._calibration is not None else x
        self._calibration = None
        if self._calibrated_on is not None and torch.equal(samples, self._calibrated_on):
            return
        log.info("calibrating int8 on %d slices of %s (once per volume)", len(samples),
                 "x".join(map(str, samples.shape[2:])))
        self._target = quantize_int8(self._module, samples.to(self.device))
        self._calibrated_on = samples
        self._compiled = None
        self._batch.clear()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "int8" and not self._compile_failed and (
                self._calibration is not None or self._calibrated_on is None):
            try:
                self._quantize(x)
            except DeviceError:
                raise
            except Exception as exc:  # noqa: BLE001 - a layer PT2E cannot export or quantize: run eager
                log.warning("int8 quantization failed (%s: %s); continuing without it", type(exc).__name__,
                            (str(exc).strip().splitlines() or [""])[0][:200])
                self._compile_failed = True
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
                self._compiled = torch.compile(self._target, dynamic=False)
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
