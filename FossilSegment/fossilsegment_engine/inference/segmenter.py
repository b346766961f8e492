"""``Segmenter``: load a model once, then segment volumes axial slice by axial slice (Yu et al. 2022).

Each volume is normalised once (its own percentiles, :mod:`.normalize`), cut into batches of 2.5D
slice stacks (:mod:`.context`), predicted tile by tile with Gaussian blending (:mod:`.tiling`) under
``torch.inference_mode`` with channels_last, autocast (:mod:`.device`) and, for large CPU jobs,
``torch.compile`` (:mod:`.backends`), reduced by argmax on the
device, and cleaned (:mod:`.postprocess`). On CUDA the batches are pipelined (:mod:`.pipelined`: raw slices
copied in, normalised and stacked on the GPU, labels copied out, each on its own stream, overlapping the
next batch's compute). A region of interest (:class:`~fossilsegment_engine.roi.Box`) limits the work to a
box. On a GPU out-of-memory the batch is halved and retried (from the first slice not yet finished);
at one slice per batch the segmenter moves to the CPU for good (logged) and carries on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import FossilSegmentError, InputError
from ..mapped_pages import release_pages
from ..progress import CancelToken, ProgressCallback, check_cancelled
from ..roi import Box, region_box
from ..volume import Volume
from .context import context_slices
from .backends import Runner, calibration_stack, check_backend
from .device import DeviceError, choose_device, resolve_inference_precision
from .normalize import apply_intensity_range, volume_intensity_range
from .pipelined import Sink, run_pipelined
from .postprocess import PostprocessOptions
from .postprocess import postprocess as clean_labels
from .tiling import predict_tiled

log = logging.getLogger(__name__)

CPU_BATCH = 4
GPU_MAX_BATCH = 64
GPU_MEMORY_SHARE = 0.6  # share of free GPU memory the automatic batch size may plan for


class Segmenter:
    """A loaded model ready to segment volumes; construct once, call :meth:`predict` many times."""

    def __init__(
        self,
        model: str | Path | None = None,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        precision: str = "auto",
        backend: str = "auto",
    ) -> None:
        """Load ``model`` (bundled name, folder, or None for the default) onto ``device``.

        ``batch_size`` None → automatic (CPU: 4 slices; GPU: measured from free memory on the first slice).
        ``precision``: auto | fp32 | bf16 | fp16 (see :func:`.device.resolve_inference_precision`).
        ``backend``: auto | eager | compiled (see :mod:`.backends`).
        """
        from ..models.store import load_model

        dev = choose_device(device)
        check_backend(backend)
        module, config = load_model(model, device="cpu")
        self._setup(module, config, dev, batch_size, precision, backend)

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        config: Any,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        precision: str = "auto",
        backend: str = "auto",
    ) -> "Segmenter":
        """A segmenter around an in-memory network (e.g. just trained); it is moved to ``device`` in eval mode."""
        self = cls.__new__(cls)
        self._setup(module, config, choose_device(device), batch_size, precision, backend)
        return self

    def _setup(
        self, module: nn.Module, config: Any, device: torch.device, batch_size: int | None, precision: str,
        backend: str = "auto",
    ) -> None:
        from ..models.build import required_multiple

        bad = isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        if batch_size is not None and bad:
            raise FossilSegmentError(f"batch size must be a positive integer, got {batch_size!r}")
        self._config = config
        self._precision = precision
        self._backend = check_backend(backend)
        self._dtype = resolve_inference_precision(precision, device)
        self._batch_size = batch_size
        self._multiple = required_multiple(config)
        self._module = module
        self._move_to(device)

    def _move_to(self, device: torch.device) -> None:
        """Put the network on ``device`` (channels_last, eval) with a fresh runner at its precision there."""
        if device != getattr(self, "_device", device):  # moving (an out-of-memory fallback): fp16 is GPU-only
            try:
                self._dtype = resolve_inference_precision(self._precision, device)
            except DeviceError:
                self._dtype = None
        self._device = device
        self._module = self._module.to(device=device, memory_format=torch.channels_last).eval()
        self._runner = Runner(self._module, device, self._dtype, self._backend)

    @property
    def config(self) -> Any:
        """The model's :class:`~fossilsegment_engine.models.config.ModelConfig`."""
        return self._config

    @property
    def classes(self) -> list[dict[str, Any]]:
        """``[{value, name, color}, ...]``; value i is output channel i, 0 is Background."""
        return self._config.classes

    @property
    def device(self) -> torch.device:
        """Where the network runs (CPU after an out-of-memory fallback)."""
        return self._device

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype in use (None = fp32)."""
        return self._dtype

    # ------------------------------------------------------------------ prediction
    def predict(
        self,
        volume: Volume,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        slice_range: tuple[int, int] | None = None,
        postprocess: PostprocessOptions | None = PostprocessOptions(),
        return_probabilities: bool = False,
        roi: Box | None = None,
        pipelined: bool | None = None,
        cleanup_progress: ProgressCallback | None = None,
    ) -> Volume | tuple[Volume, list[Volume]]:
        """The uint8 labelmap of ``volume`` (same geometry); voxels outside ``roi`` and ``slice_range`` are 0.

        ``roi``: a :class:`~fossilsegment_engine.roi.Box` of voxels; ``slice_range`` = [k0, k1) is the same as
        a box over whole slices; with both, their intersection. Only the box is normalised and predicted
        (its 2.5D context slices may lie outside it), with the whole volume's intensity range, so a box of
        whole slices gives exactly the full run's labels there. ``progress(done, total)`` after each batch;
        ``cancel`` is checked before each batch and raises :class:`~fossilsegment_engine.errors.Cancelled`.
        ``postprocess`` None → raw argmax (else cleaned inside the box). With ``return_probabilities`` also
        returns one uint8 Volume per class (softmax × 255, before clean-up). ``pipelined`` None → on CUDA
        overlap copies and compute (:mod:`.pipelined`); True/False forces it (same labels either way).
        ``cleanup_progress(done, total)``: progress of the clean-up, which also honours ``cancel``.
        """
        array = _check_volume(volume)
        box = region_box(array.shape, slice_range, roi)
        self._runner.plan(box.k1 - box.k0, box.j1 - box.j0, box.i1 - box.i0)  # lets backend "auto" decide
        lo, hi = volume_intensity_range(array, self._config.normalization)
        self._runner.calibrate(lambda: calibration_stack(array, lo, hi, self._config.context_slices, self._multiple))
        release_pages(array)  # a memory-mapped input: the sampling above touched every page (issue 6)
        labels = np.zeros(array.shape, dtype=np.uint8)
        probs = np.zeros((self._config.n_classes, *array.shape), dtype=np.uint8) if return_probabilities else None
        source = array[:, box.j0 : box.j1, box.i0 : box.i1]  # a view: only the box's columns and rows are read
        inside = (slice(box.j0, box.j1), slice(box.i0, box.i1))
        done = [box.k0]  # every slice before this one is in ``labels``

        def sink(start: int, stop: int, lab: np.ndarray, prob: np.ndarray | None) -> None:
            labels[(slice(start, stop), *inside)] = lab
            if probs is not None and prob is not None:
                probs[(slice(None), slice(start, stop), *inside)] = prob.transpose(1, 0, 2, 3)
            done[0] = stop
            release_pages(array, 0, stop - self._config.context_slices)  # input slices no batch needs again
            if progress is not None:
                progress(stop - box.k0, box.k1 - box.k0)

        probe = self._batch_size is None and self._device.type == "cuda"
        batch = self._batch_size or (1 if probe else CPU_BATCH)
        while done[0] < box.k1:
            check_cancelled(cancel)
            ks = range(done[0], done[0] + 1 if probe else box.k1)
            if probe:
                torch.cuda.reset_peak_memory_stats(self._device)
                base = torch.cuda.memory_allocated(self._device)
            oom = False
            try:
                self._predict_range(source, ks, batch, lo, hi, sink, cancel, probs is not None, pipelined)
            except torch.OutOfMemoryError:
                oom = True
            except RuntimeError as exc:  # cuDNN/cuBLAS/MPS report running out of memory as RuntimeError
                if not _is_oom(exc):
                    raise
                oom = True
            if oom:  # handled outside the except block so the failed batch's tensors are freed
                batch = self._after_oom(batch)
                probe = False
                continue
            if probe:
                batch = self._auto_gpu_batch(torch.cuda.max_memory_allocated(self._device) - base)
                probe = False
        check_cancelled(cancel)

        if postprocess is not None:
            clean_labels(labels[box.slices()], self.classes, postprocess, inplace=True,  # no labelmap-size copy
                         progress=cleanup_progress, cancel=cancel)
        meta = {"model": self._config.name}
        result = volume.with_array(labels, **meta)
        if probs is None:
            return result
        return result, [volume.with_array(p, **meta, cls=c["name"]) for p, c in zip(probs, self.classes)]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._runner(x)

    @property
    def mode(self) -> str:
        """How the last planned job runs (backend-precision), e.g. ``compiled-bf16`` or ``eager-fp32``."""
        return self._runner.mode

    @property
    def int8_agreement(self) -> float | None:
        """Backend ``auto``: the share of calibration pixels int8 labelled as fp32 does (None: no int8 check)."""
        return self._runner.int8_agreement

    def _predict_range(
        self, source: np.ndarray, ks: range, batch: int, lo: float, hi: float, sink: Sink,
        cancel: CancelToken | None, want_probs: bool, pipelined: bool | None,
    ) -> None:
        """Slices ``ks`` of ``source`` in batches of ``batch``, each handed to ``sink`` in order; errors propagate."""
        if pipelined if pipelined is not None else self._device.type == "cuda":
            def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
                return self._predict_stack(x, want_probs)

            run_pipelined(step, source, ks, batch, self._config.context_slices, lo, hi, self._device, sink, cancel)
            return
        for start in range(ks.start, ks.stop, batch):
            check_cancelled(cancel)
            stop = min(start + batch, ks.stop)
            sink(start, stop, *self._predict_slices(source, range(start, stop), lo, hi, want_probs))

    @torch.inference_mode()
    def _predict_slices(
        self, array: np.ndarray, ks: range, lo: float, hi: float, want_probs: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (N, H, W) and probabilities (N, classes, H, W) or None of slices ``ks``, prepared on the host."""
        stack = apply_intensity_range(context_slices(array, ks, self._config.context_slices), lo, hi)
        lab, prob = self._predict_stack(torch.from_numpy(stack).to(self._device), want_probs)
        return lab.cpu().numpy(), None if prob is None else prob.cpu().numpy()

    @torch.inference_mode()
    def _predict_stack(self, x: torch.Tensor, want_probs: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 labels (N, H, W) and, if asked, uint8 probabilities (N, classes, H, W) of float stacks ``x``, on
        ``x``'s device."""
        logits = predict_tiled(
            self._forward, x, self._config.tile_size, self._config.tile_overlap, self._multiple,
            output_device=x.device,
        )
        lab = logits.argmax(dim=1).to(torch.uint8)
        if not want_probs:
            return lab, None
        return lab, torch.softmax(logits, dim=1).mul_(255).round_().to(torch.uint8)

    def _after_oom(self, batch: int) -> int:
        """The batch size to retry with after an out-of-memory; at 1 on a GPU, move to the CPU."""
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
        if batch > 1:
            log.info("out of memory on %s with %d slices per batch; retrying with %d", self._device, batch, batch // 2)
            return batch // 2
        if self._device.type == "cpu":
            raise FossilSegmentError("out of memory on the CPU even one slice at a time; close other programs "
                                     "or use a model with a smaller tile_size")
        log.warning("out of memory on %s even one slice at a time; continuing on the CPU (slower)", self._device)
        self._move_to(torch.device("cpu"))  # also picks the precision there (fp16 → fp32)
        return self._batch_size if self._batch_size is not None else CPU_BATCH

    def _auto_gpu_batch(self, bytes_per_slice: int) -> int:
        free, _ = torch.cuda.mem_get_info(self._device)
        free += torch.cuda.memory_reserved(self._device) - torch.cuda.memory_allocated(self._device)
        batch = int(GPU_MEMORY_SHARE * free // max(bytes_per_slice, 1))
        batch = max(1, min(GPU_MAX_BATCH, batch))
        log.info("automatic batch size on %s: %d slices (%.0f MiB per slice)",
                 self._device, batch, bytes_per_slice / 2**20)
        return batch


def _is_oom(exc: RuntimeError) -> bool:
    text = str(exc).lower()
    return "out of memory" in text or "alloc_failed" in text


def _check_volume(volume: Volume) -> np.ndarray:
    array = getattr(volume, "array", None)
    if not isinstance(array, np.ndarray):
        raise InputError(f"expected a Volume with a numpy array, got {type(volume).__name__}")
    if array.ndim != 3 or array.size == 0:
        raise InputError(f"need a non-empty 3D volume (slices, rows, columns), got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"need a scalar integer or float volume, got dtype {array.dtype}")
    return array


_SEGMENTER_KEYS = ("device", "batch_size", "precision", "backend")


def segment_volume(volume: Volume, model: str | Path | None = None, **kw: Any) -> Volume | tuple[Volume, list[Volume]]:
    """One-shot convenience: ``Segmenter(model, device=, batch_size=, precision=).predict(volume, **rest)``."""
    ctor = {k: kw.pop(k) for k in _SEGMENTER_KEYS if k in kw}
    return Segmenter(model, **ctor).predict(volume, **kw)
