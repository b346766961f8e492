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
  bf16: 99.93 %), so ``auto`` uses it only where a check on the volume itself passes (below).
- ``"auto"`` — compiled only where it pays: on the CPU, with a low precision (bf16), a C++ compiler on the
  PATH, and a job of at least :data:`COMPILE_MIN_PIXELS` (slices × rows × columns, about 256 slices of
  512², where the 10–50 s first compile is won back), or for a shape already compiled in this process,
  and not after compiling failed once in this process. Otherwise eager. On CUDA and MPS ``auto`` is eager.
  Where it compiles and ``torchao`` is installed, ``auto`` first tries int8 with a self-check at the job's
  first batch: it quantizes on the calibration slices, runs them through the int8 model (not compiled,
  same autocast) and through the plain fp32 module, and keeps int8 for the job only when at least
  :data:`INT8_MIN_AGREEMENT` of their pixels get the same label; else (or if quantizing fails) compiled.
  The check costs one quantization (about 5–8 s on 2 cores) plus two passes over the calibration slices
  (about 2–5 s each), once per volume; :attr:`Runner.int8_agreement` holds the measured agreement.

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

#: share of calibration pixels whose int8 label must equal the fp32 one for ``auto`` to use int8. The target is
#: 99.9 % of the whole volume; the sample is only CALIBRATION_SLICES slices, so its agreement scatters from the
#: volume's: on the six medium phantom families and the bench input (2026-11-29) the sample read between 0.023 %
#: above (skull) and 0.024 % below the whole volume. The threshold is 99.9 % plus a 0.025 % margin for that scatter; it
#: refuses int8 on fine trabecular bone (sample 99.85 %, volume 99.84 %) and accepts it where the whole volume
#: stays ≥ 99.91 %. A new kind of scan could scatter more: `fossilsegment bench` prints the figures to check.
INT8_MIN_AGREEMENT = 0.99925

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
        #: ``auto``: share of calibration pixels int8 labels as fp32 does, for the current volume (None: not checked)
        self.int8_agreement: float | None = None
        self._int8_broken = False  # ``auto``: quantizing failed once; do not try again with this runner

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

    def checks_int8(self, pixels: int | None = None) -> bool:
        """Whether ``auto`` tries int8 (with its agreement check) for a job of ``pixels`` (default: the planned job)."""
        return (self.backend == "auto" and not self._int8_broken and self.will_compile(pixels)
                and torchao_available())

    @property
    def mode(self) -> str:
        """What runs for the planned job, e.g. ``compiled-bf16`` or ``eager-fp32``. For ``auto`` the int8 check runs
        at the job's first batch: until then a job that :meth:`checks_int8` reports ``compiled``."""
        int8 = self.backend == "int8" or (self.backend == "auto" and self._target is not self._module)
        if int8 and self.will_compile():
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

    def _new_samples(self, x: torch.Tensor) -> torch.Tensor | None:
        """The coming job's calibration inputs (else ``x``), or None when they are those already calibrated on."""
        samples = self._calibration() if self._calibration is not None else x
        self._calibration = None
        if self._calibrated_on is not None and torch.equal(samples, self._calibrated_on):
            return None
        log.info("calibrating int8 on %d slices of %s (once per volume)", len(samples),
                 "x".join(map(str, samples.shape[2:])))
        return samples

    def _use(self, target: nn.Module) -> None:
        """Run ``target`` (the module or an int8 copy) from now on; graphs compiled for another target are dropped."""
        if target is not self._target:
            self._target = target
            self._compiled = None
            self._batch.clear()

    def _quantize(self, x: torch.Tensor) -> None:
        """(Re)quantize for the coming job unless its calibration inputs are those of the current int8 model."""
        samples = self._new_samples(x)
        if samples is not None:
            self._use(quantize_int8(self._module, samples.to(self.device)))
            self._calibrated_on = samples

    def _agreement(self, quantized: nn.Module, samples: torch.Tensor, batch: int = 4) -> float:
        """Share of pixels of ``samples`` that ``quantized`` (in the autocast precision) labels as the plain fp32
        module does."""
        same = 0
        with torch.no_grad():
            for i in range(0, len(samples), batch):
                x = samples[i : i + batch].to(self.device)
                reference = self._module(x).argmax(1)
                with autocast(self.device, self.dtype):
                    same += int((quantized(x).argmax(1) == reference).sum())
        return same / (samples.numel() // samples.shape[1])

    def _auto_int8(self, x: torch.Tensor) -> None:
        """``auto`` on a job that compiles: int8 if it passes the agreement check on the volume's calibration slices
        (done once per volume), else the module itself (compiled as before)."""
        if not self.checks_int8():
            self._calibrated_on = None  # a small job, or no torchao: no int8, and a later job checks afresh
            self.int8_agreement = None
            self._use(self._module)
            return
        if self._calibration is None and self._calibrated_on is not None:
            return  # same job or volume: same decision
        samples = self._new_samples(x)
        if samples is None:
            return
        try:
            quantized = quantize_int8(self._module, samples.to(self.device))
            agreement = self._agreement(quantized, samples)
        except Exception as exc:  # noqa: BLE001 - missing/broken torchao, a layer PT2E cannot export: no int8
            log.warning("int8 check failed (%s: %s); continuing compiled-%s", type(exc).__name__,
                        (str(exc).strip().splitlines() or [""])[0][:200], self.precision)
            self._int8_broken = True
            self._calibrated_on, self.int8_agreement = None, None
            self._use(self._module)
            return
        self._calibrated_on, self.int8_agreement = samples, agreement
        passed = agreement >= INT8_MIN_AGREEMENT
        log.info("int8 agrees with fp32 on %.3f %% of the calibration pixels (needs %.3f %%): running %s",
                 100 * agreement, 100 * INT8_MIN_AGREEMENT, f"{'int8' if passed else 'compiled'}-{self.precision}")
        self._use(quantized if passed else self._module)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "auto":
            self._auto_int8(x)
        elif self.backend == "int8" and not self._compile_failed and (
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
