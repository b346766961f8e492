"""``Predictor``: a model loaded once on a fixed device, precision and backend; segments volumes slice by slice.

Each volume is normalised with its own percentiles, cut into batches of 2.5D stacks and predicted tile by
tile, or whole slices where one fits in a batch of tiles (:class:`~.slice_inferer.SliceInferer`), by the
backend's network (:mod:`.backends`); labels are the argmax, then cleaned (:mod:`.postprocess`). On CUDA,
:meth:`Predictor.load` returns the :class:`~.pipelined.PipelinedPredictor`, which overlaps copies and compute.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..errors import DeviceError, FossilSegmentError, InputError
from ..mapped_pages import release_pages
from ..progress import CancelToken, ProgressCallback, check_cancelled
from ..roi import Box, region_box
from ..volume import Volume
from . import backends
from .backends import (CompiledNetwork, EagerNetwork, auto_compiles, calibration_stack, check_backend, check_int8,
                       first_line, is_oom)
from .device import choose_device, resolve_precision
from .normalize import volume_intensity_range
from .passes import AXIAL, THOROUGH, Pass, summed_probabilities, usable_passes
from .postprocess import PostprocessOptions
from .postprocess import postprocess as clean_labels
from .slice_inferer import Network, SliceInferer, labels_and_probabilities

log = logging.getLogger(__name__)

CPU_BATCH = 4
GPU_MAX_BATCH = 64
GPU_MEMORY_SHARE = 0.6  # share of free GPU memory the automatic batch size may plan for
#: ``sink(start, stop, labels (N, h, w), probabilities (N, classes, h, w) | None)``, called in slice order
Sink = Callable[[int, int, np.ndarray, "np.ndarray | None"], None]


@dataclass
class Prediction:
    """The labelmap and one uint8 probability volume per class (softmax × 255, before clean-up)."""

    labels: Volume
    probabilities: list[Volume]


def slice_batches(array: np.ndarray, ks: range, batch: int, context: int) -> Iterator[range]:
    """Consecutive batches of slices ``ks``. When the next batch is asked for, the pages of a memory-mapped
    ``array`` that no later batch reads are handed back, so a large input never stays resident."""
    release_pages(array)  # the intensity sampling touched every page
    for start in range(ks.start, ks.stop, batch):
        stop = min(start + batch, ks.stop)
        yield range(start, stop)
        release_pages(array, 0, stop - context)


class Predictor:
    """A loaded model ready to segment volumes: construct once (:meth:`load`, :meth:`from_module`), then call
    :meth:`predict_labels` or :meth:`predict_probabilities` many times."""

    def __init__(self, module: nn.Module, config: Any, device: str | torch.device = "auto",
                 precision: str = "auto", backend: str = "auto", batch_size: int | None = None,
                 thorough: bool = False) -> None:
        """``module`` (moved to ``device``, eval, channels_last) with its ``config``.

        ``precision``: auto | fp32 | bf16 | fp16 (:func:`.device.resolve_precision`); ``backend``:
        auto | eager | compiled | int8 (:mod:`.backends`); ``batch_size`` None → CPU: 4 slices, GPU: measured
        from free memory on the first slice. ``thorough``: every prediction is the mean of the
        :data:`.passes.THOROUGH` passes (axial, coronal, sagittal, two mirrors; a reslice of the predicted box
        too small or too anisotropic is left out) — about 5× the time, and a copy of the volume plus 3 bytes per
        class and voxel more memory.
        """
        _check_thorough(thorough)
        bad = isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        if batch_size is not None and bad:
            raise FossilSegmentError(f"batch size must be a positive integer, got {batch_size!r}")
        dev = choose_device(device)
        self._backend = check_backend(backend)
        if self._backend == "int8":
            check_int8(dev)
        self._config = config
        self._inferer = SliceInferer.from_config(config)
        self._precision = precision
        self._dtype = resolve_precision(precision, dev)
        self._batch_size = batch_size
        self._thorough = thorough
        self._passes: tuple[str, ...] = ()
        self._module = module
        self._place(dev)

    @classmethod
    def load(cls, model: str | Path | None = None, device: str | torch.device = "auto", **options: Any
             ) -> "Predictor":
        """Load ``model`` (bundled name, folder, or None for the default) for ``device``; ``options`` as
        :meth:`__init__`. Called on :class:`Predictor` itself, CUDA gets the pipelined predictor."""
        from ..models.store import load_model

        dev = choose_device(device)
        check_backend(options.get("backend", "auto"))  # before the slow load
        module, config = load_model(model, device="cpu")
        return cls._for(dev)(module, config, dev, **options)

    @classmethod
    def from_module(cls, module: nn.Module, config: Any, device: str | torch.device = "auto", **options: Any
                    ) -> "Predictor":
        """A predictor around an in-memory network (e.g. just trained); as :meth:`load` otherwise."""
        dev = choose_device(device)
        return cls._for(dev)(module, config, dev, **options)

    @classmethod
    def _for(cls, device: torch.device) -> type["Predictor"]:
        if cls is Predictor and device.type == "cuda":
            from .pipelined import PipelinedPredictor

            return PipelinedPredictor
        return cls

    def _place(self, device: torch.device) -> None:
        """Put the network on ``device`` with fresh backend networks (each compiled once, when first used)."""
        self._device = device
        self._module = self._module.to(device=device, memory_format=torch.channels_last).eval()
        self._eager = EagerNetwork(self._module, device, self._dtype)
        self._compiled: CompiledNetwork | None = None
        self._int8: CompiledNetwork | None = None
        self._int8_samples: torch.Tensor | None = None
        self._int8_failed = False
        self._last: Network | None = None
        if self._backend == "compiled":
            self._compiled = CompiledNetwork(self._module, device, self._dtype)

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

    @property
    def inferer(self) -> SliceInferer:
        """How this model reads slices (context, tiles), to drive it outside :meth:`predict_labels`."""
        return self._inferer

    @property
    def network(self) -> Network:
        """The network the last job ran (before any job: eager), for harnesses that drive it themselves."""
        return self._last or self._eager

    @property
    def thorough(self) -> bool:
        """Whether predictions average the :data:`.passes.THOROUGH` passes."""
        return self._thorough

    @property
    def passes(self) -> list[str]:
        """The passes the last job averaged (before any: ``[]``), e.g. ``["axial"]``."""
        return list(self._passes)

    @property
    def mode(self) -> str:
        """How the last job ran (before any: how an explicit backend runs), e.g. ``compiled-bf16``."""
        precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self._dtype]
        net = self._last
        if net is None:
            kind = self._backend if self._backend in ("compiled", "int8") else "eager"
        elif isinstance(net, CompiledNetwork) and not net.failed:
            kind = "int8" if net is self._int8 else "compiled"
        else:
            kind = "eager"
        return f"{kind}-{precision}"

    # ------------------------------------------------------------------ prediction
    def predict_labels(
        self,
        volume: Volume,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        slice_range: tuple[int, int] | None = None,
        roi: Box | None = None,
        postprocess: PostprocessOptions | None = PostprocessOptions(),
        cleanup_progress: ProgressCallback | None = None,
        thorough: bool | None = None,
    ) -> Volume:
        """The uint8 labelmap of ``volume`` (same geometry); voxels outside ``roi`` and ``slice_range`` are 0.

        ``roi``: a :class:`~fossilsegment_engine.roi.Box` of voxels; ``slice_range`` = [k0, k1) is a box of
        whole slices; with both, their intersection. Only the box is predicted (its 2.5D context may lie
        outside), normalised with the whole volume's range, so a box gives the full run's labels there.
        ``progress(done, total)`` after each batch; ``cancel`` is checked before each batch (and in the
        clean-up) and raises :class:`~fossilsegment_engine.errors.Cancelled`. ``postprocess`` None → raw
        argmax, else cleaned inside the box, reporting ``cleanup_progress(done, total)``. ``thorough`` None →
        as loaded; True/False → with or without the thorough passes for this call (progress then counts the
        slices of every pass).
        """
        labels, _ = self._predict(volume, progress, cancel, slice_range, roi, postprocess, cleanup_progress, False,
                                  thorough)
        return labels

    def predict_probabilities(
        self,
        volume: Volume,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        slice_range: tuple[int, int] | None = None,
        roi: Box | None = None,
        postprocess: PostprocessOptions | None = PostprocessOptions(),
        cleanup_progress: ProgressCallback | None = None,
        thorough: bool | None = None,
    ) -> Prediction:
        """As :meth:`predict_labels`, with one uint8 probability Volume per class (softmax × 255, before clean-up;
        thorough: the mean over the passes)."""
        labels, probs = self._predict(volume, progress, cancel, slice_range, roi, postprocess, cleanup_progress, True,
                                      thorough)
        meta = {"model": self._config.name}
        return Prediction(labels, [volume.with_array(p, **meta, cls=c["name"]) for p, c in zip(probs, self.classes)])

    def _predict(self, volume: Volume, progress: ProgressCallback | None, cancel: CancelToken | None,
                 slice_range: tuple[int, int] | None, roi: Box | None, postprocess: PostprocessOptions | None,
                 cleanup_progress: ProgressCallback | None, want_probs: bool, thorough: bool | None
                 ) -> tuple[Volume, np.ndarray | None]:
        array = _check_volume(volume)
        box = region_box(array.shape, slice_range, roi)
        chosen = usable_passes(THOROUGH, box.shape, volume.spacing) if (
            self._thorough if thorough is None else _check_thorough(thorough)) else (AXIAL,)
        self._passes = tuple(p.name for p in chosen)
        span = volume_intensity_range(array, self._config.normalization)  # once: every pass sees the same range
        if len(chosen) == 1:
            labels, probs = self._predict_box(array, box, span, progress, cancel, want_probs)
        else:
            labels, probs = self._predict_passes(array, box, span, chosen, progress, cancel, want_probs)
        if postprocess is not None:
            clean_labels(labels[box.slices()], self.classes, postprocess, inplace=True,  # no labelmap-size copy
                         progress=cleanup_progress, cancel=cancel)
        return volume.with_array(labels, model=self._config.name), probs

    def _predict_passes(self, array: np.ndarray, box: Box, span: tuple[float, float], passes: tuple[Pass, ...],
                        progress: ProgressCallback | None, cancel: CancelToken | None, want_probs: bool
                        ) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (argmax of the summed probabilities) and, if wanted, the mean uint8 probabilities of ``passes``."""
        def predict(a: np.ndarray, b: Box, report: ProgressCallback | None, c: CancelToken | None) -> np.ndarray:
            probs = self._predict_box(a, b, span, report, c, True)[1]
            assert probs is not None
            return probs

        acc = summed_probabilities(predict, array, passes, box, progress, cancel)
        labels = acc.argmax(axis=0).astype(np.uint8)  # outside the box every sum is 0: class 0
        if not want_probs:
            return labels, None
        n = len(passes)
        return labels, ((acc + n // 2) // n).astype(np.uint8)

    def _predict_box(self, array: np.ndarray, box: Box, span: tuple[float, float], progress: ProgressCallback | None,
                     cancel: CancelToken | None, want_probs: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """One axial pass over ``box``, intensities ``span`` = (lo, hi) → [0, 1]: uint8 labels (0 outside) and,
        if wanted, uint8 probabilities."""
        pixels = (box.k1 - box.k0) * (box.j1 - box.j0) * (box.i1 - box.i0)
        lo, hi = span
        labels = np.zeros(array.shape, dtype=np.uint8)
        probs = np.zeros((self._config.n_classes, *array.shape), dtype=np.uint8) if want_probs else None
        source = array[:, box.j0 : box.j1, box.i0 : box.i1]  # a view: only the box's columns and rows are read
        inside = (slice(box.j0, box.j1), slice(box.i0, box.i1))
        done = [box.k0]  # every slice before this one is in ``labels``

        def sink(start: int, stop: int, lab: np.ndarray, prob: np.ndarray | None) -> None:
            labels[(slice(start, stop), *inside)] = lab
            if probs is not None and prob is not None:
                probs[(slice(None), slice(start, stop), *inside)] = prob.transpose(1, 0, 2, 3)
            done[0] = stop
            if progress is not None:
                progress(stop - box.k0, box.k1 - box.k0)

        probe = self._batch_size is None and self._device.type == "cuda"
        height, width = box.j1 - box.j0, box.i1 - box.i0
        inferer, batch = self._inferer.fit_to_slices(height, width, self._batch_size or CPU_BATCH)
        batch = 1 if probe else batch
        while done[0] < box.k1:
            check_cancelled(cancel)
            network = self._network_for(array, lo, hi, pixels)
            ks = range(done[0], done[0] + 1 if probe else box.k1)
            if probe:
                torch.cuda.reset_peak_memory_stats(self._device)
                base = torch.cuda.memory_allocated(self._device)
            try:
                with torch.inference_mode():
                    self._run(network, inferer, array, source, ks, batch, lo, hi, sink, cancel, want_probs)
            except RuntimeError as exc:  # torch.OutOfMemoryError, or cuDNN/cuBLAS/MPS saying so
                if not is_oom(exc):
                    raise
                oom = True
            else:
                oom = False
            if oom:  # handled outside the except block so the failed batch's tensors are freed
                device = self._device
                batch = self._after_oom(batch)
                if self._device != device:  # moved to the CPU: read the slices as a CPU job would
                    inferer, batch = self._inferer.fit_to_slices(height, width, batch)
                probe = False
                continue
            if probe:
                batch = self._auto_gpu_batch(torch.cuda.max_memory_allocated(self._device) - base)
                probe = False
        check_cancelled(cancel)
        return labels, probs

    def _network_for(self, array: np.ndarray, lo: float, hi: float, pixels: int) -> Network:
        """The backend's network for a job of ``pixels`` on ``array`` (int8: calibrated on this volume)."""
        if self._backend == "int8" and not self._int8_failed:
            net = self._int8_network(array, lo, hi)
        elif self._backend == "compiled" or (
                self._backend == "auto" and auto_compiles(self._device, self._dtype, pixels)):
            if self._compiled is None:
                self._compiled = CompiledNetwork(self._module, self._device, self._dtype)
            net = self._compiled
        else:
            net = self._eager
        self._last = self._eager if isinstance(net, CompiledNetwork) and net.failed else net
        return self._last

    def _int8_network(self, array: np.ndarray, lo: float, hi: float) -> Network:
        """int8 calibrated on ``array`` (reused while the calibration slices are the same); eager if quantizing
        fails (one warning)."""
        samples = calibration_stack(array, lo, hi, self._inferer.context, self._inferer.multiple)
        if self._int8 is not None and self._int8_samples is not None and torch.equal(samples, self._int8_samples):
            return self._int8
        log.info("calibrating int8 on %d slices of %s (once per volume)", len(samples),
                 "x".join(map(str, samples.shape[2:])))
        try:
            quantized = backends.quantize_int8(self._module, samples.to(self._device))
        except DeviceError:
            raise
        except Exception as exc:  # noqa: BLE001 - a layer PT2E cannot export or quantize: run eager
            log.warning("int8 quantization failed (%s); continuing without it", first_line(exc))
            self._int8_failed = True
            return self._eager
        self._int8, self._int8_samples = CompiledNetwork(quantized, self._device, self._dtype), samples
        return self._int8

    def _run(self, network: Network, inferer: SliceInferer, array: np.ndarray, source: np.ndarray, ks: range,
             batch: int, lo: float, hi: float, sink: Sink, cancel: CancelToken | None, want_probs: bool) -> None:
        """Slices ``ks`` of ``source`` (``array``'s box columns) in batches, each handed to ``sink`` in order."""
        for part in slice_batches(array, ks, batch, inferer.context):
            check_cancelled(cancel)
            logits = inferer(source, part, lo, hi, network, self._device)
            lab, prob = labels_and_probabilities(logits, want_probs)
            sink(part.start, part.stop, lab.cpu().numpy(), None if prob is None else prob.cpu().numpy())

    def _after_oom(self, batch: int) -> int:
        """The one out-of-memory policy: halve the batch; at one slice on a GPU, move to the CPU for good."""
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
        if batch > 1:
            log.info("out of memory on %s with %d slices per batch; retrying with %d", self._device, batch, batch // 2)
            return batch // 2
        if self._device.type == "cpu":
            raise FossilSegmentError("out of memory on the CPU even one slice at a time; close other programs "
                                     "or use a model with a smaller tile_size")
        log.warning("out of memory on %s even one slice at a time; continuing on the CPU (slower)", self._device)
        cpu = torch.device("cpu")
        try:
            self._dtype = resolve_precision(self._precision, cpu)
        except DeviceError:  # fp16 is GPU-only
            self._dtype = None
        self._place(cpu)
        return self._batch_size if self._batch_size is not None else CPU_BATCH

    def _auto_gpu_batch(self, bytes_per_slice: int) -> int:
        free, _ = torch.cuda.mem_get_info(self._device)
        free += torch.cuda.memory_reserved(self._device) - torch.cuda.memory_allocated(self._device)
        batch = max(1, min(GPU_MAX_BATCH, int(GPU_MEMORY_SHARE * free // max(bytes_per_slice, 1))))
        log.info("automatic batch size on %s: %d slices (%.0f MiB per slice)",
                 self._device, batch, bytes_per_slice / 2**20)
        return batch


def _check_thorough(thorough: object) -> bool:
    if not isinstance(thorough, bool):
        raise FossilSegmentError(f"thorough must be True or False, got {thorough!r}")
    return thorough


def _check_volume(volume: Volume) -> np.ndarray:
    array = getattr(volume, "array", None)
    if not isinstance(array, np.ndarray):
        raise InputError(f"expected a Volume with a numpy array, got {type(volume).__name__}")
    if array.ndim != 3 or array.size == 0:
        raise InputError(f"need a non-empty 3D volume (slices, rows, columns), got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"need a scalar integer or float volume, got dtype {array.dtype}")
    return array
