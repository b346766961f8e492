"""``Segmenter``: load a model once, then segment volumes axial slice by axial slice (Yu et al. 2022).

Each volume is normalised once (its own percentiles, :mod:`.normalize`), cut into batches of 2.5D
slice stacks (:mod:`.context`), predicted tile by tile with Gaussian blending (:mod:`.tiling`) under
``torch.inference_mode`` with channels_last and autocast (:mod:`.device`), reduced by argmax on the
device, and cleaned (:mod:`.postprocess`). On a GPU out-of-memory the batch is halved and retried;
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
from ..progress import CancelToken, ProgressCallback, check_cancelled
from ..volume import Volume
from .context import context_slices
from .device import DeviceError, autocast, choose_device, resolve_precision
from .normalize import apply_intensity_range, volume_intensity_range
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
    ) -> None:
        """Load ``model`` (bundled name, folder, or None for the default) onto ``device``.

        ``batch_size`` None → automatic (CPU: 4 slices; GPU: measured from free memory on the first slice).
        ``precision``: auto | fp32 | bf16 | fp16 (see :mod:`.device`).
        """
        from ..models.store import load_model

        dev = choose_device(device)
        module, config = load_model(model, device="cpu")
        self._setup(module, config, dev, batch_size, precision)

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        config: Any,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        precision: str = "auto",
    ) -> "Segmenter":
        """A segmenter around an in-memory network (e.g. just trained); it is moved to ``device`` in eval mode."""
        self = cls.__new__(cls)
        self._setup(module, config, choose_device(device), batch_size, precision)
        return self

    def _setup(
        self, module: nn.Module, config: Any, device: torch.device, batch_size: int | None, precision: str
    ) -> None:
        from ..models.build import required_multiple

        bad = isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        if batch_size is not None and bad:
            raise FossilSegmentError(f"batch size must be a positive integer, got {batch_size!r}")
        self._config = config
        self._precision = precision
        self._dtype = resolve_precision(precision, device)
        self._batch_size = batch_size
        self._multiple = required_multiple(config)
        self._module = module
        self._move_to(device)

    def _move_to(self, device: torch.device) -> None:
        self._device = device
        self._module = self._module.to(device=device, memory_format=torch.channels_last).eval()

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
    ) -> Volume | tuple[Volume, list[Volume]]:
        """The uint8 labelmap of ``volume`` (same geometry); slices outside ``slice_range`` = [k0, k1) are 0.

        ``progress(done, total)`` after each batch; ``cancel`` is checked before each batch and raises
        :class:`~fossilsegment_engine.errors.Cancelled`. ``postprocess`` None → raw argmax. With
        ``return_probabilities`` also returns one uint8 Volume per class (softmax × 255, before clean-up).
        """
        array = _check_volume(volume)
        n_slices = array.shape[0]
        k0, k1 = _check_range(slice_range, n_slices)
        lo, hi = volume_intensity_range(array, self._config.normalization)
        labels = np.zeros(array.shape, dtype=np.uint8)
        probs = np.zeros((self._config.n_classes, *array.shape), dtype=np.uint8) if return_probabilities else None

        probe = self._batch_size is None and self._device.type == "cuda"
        batch = self._batch_size or (1 if probe else CPU_BATCH)
        start, total = k0, k1 - k0
        while start < k1:
            check_cancelled(cancel)
            stop = min(start + batch, k1)
            if probe:
                torch.cuda.reset_peak_memory_stats(self._device)
                base = torch.cuda.memory_allocated(self._device)
            oom = False
            try:
                lab, prob = self._predict_slices(array, range(start, stop), lo, hi, probs is not None)
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
            labels[start:stop] = lab
            if probs is not None:
                probs[:, start:stop] = prob
            start = stop
            if progress is not None:
                progress(start - k0, total)
        check_cancelled(cancel)

        if postprocess is not None:
            labels[k0:k1] = clean_labels(labels[k0:k1], self.classes, postprocess)
        meta = {"model": self._config.name}
        result = volume.with_array(labels, **meta)
        if probs is None:
            return result
        return result, [volume.with_array(p, **meta, cls=c["name"]) for p, c in zip(probs, self.classes)]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self._device, self._dtype):
            return self._module(x)

    @torch.inference_mode()
    def _predict_slices(
        self, array: np.ndarray, ks: range, lo: float, hi: float, want_probs: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        stack = apply_intensity_range(context_slices(array, ks, self._config.context_slices), lo, hi)
        x = torch.from_numpy(stack).to(self._device)
        logits = predict_tiled(
            self._forward, x, self._config.tile_size, self._config.tile_overlap, self._multiple,
            output_device=self._device,
        )
        lab = logits.argmax(dim=1).to(torch.uint8).cpu().numpy()
        if not want_probs:
            return lab, None
        prob = torch.softmax(logits, dim=1).mul_(255).round_().to(torch.uint8).cpu().numpy()
        return lab, prob.transpose(1, 0, 2, 3)

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
        try:
            self._dtype = resolve_precision(self._precision, torch.device("cpu"))
        except DeviceError:  # fp16 asked for: not a CPU precision
            self._dtype = None
        self._move_to(torch.device("cpu"))
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


def _check_range(slice_range: tuple[int, int] | None, n_slices: int) -> tuple[int, int]:
    if slice_range is None:
        return 0, n_slices
    try:
        k0, k1 = (int(v) for v in slice_range)
    except (TypeError, ValueError) as exc:
        raise InputError(f"slice range must be two integers (first, stop), got {slice_range!r}") from exc
    if not 0 <= k0 < k1 <= n_slices:
        raise InputError(f"slice range {k0}..{k1} is not inside the volume's 0..{n_slices} slices (stop excluded)")
    return k0, k1


_SEGMENTER_KEYS = ("device", "batch_size", "precision")


def segment_volume(volume: Volume, model: str | Path | None = None, **kw: Any) -> Volume | tuple[Volume, list[Volume]]:
    """One-shot convenience: ``Segmenter(model, device=, batch_size=, precision=).predict(volume, **rest)``."""
    ctor = {k: kw.pop(k) for k in _SEGMENTER_KEYS if k in kw}
    return Segmenter(model, **ctor).predict(volume, **kw)
