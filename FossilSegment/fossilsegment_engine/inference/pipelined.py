"""``PipelinedPredictor``: host preparation, copy in, compute and copy out of successive batches overlap (CUDA).

A background thread reads the slices each batch needs, once, in the volume's own integer type into
page-locked memory. On a GPU, batch n+1 is copied in on a *copy-in* stream, normalised and stacked on the
device and predicted on the compute stream while batch n's uint8 labels go back on a *copy-out* stream;
events order the streams and ``record_stream`` keeps the allocator from reusing a buffer too early. On the
CPU the streams and pinning are no-ops and the labels equal :class:`~.predictor.Predictor`'s exactly.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from ..progress import CancelToken, check_cancelled
from .context import context_indices
from .predictor import Predictor, Sink, slice_batches
from .slice_inferer import Network, SliceInferer, labels_and_probabilities

#: ``(x float32 (N, C, h, w) on the device) -> (labels uint8 (N, h, w), probabilities uint8 (N, classes, h, w) | None)``
PredictStack = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"]

#: volume dtypes sent to the device as they are (their conversion to float32 is exact there);
#: any other dtype is converted to float32 on the host by numpy, as the plain path does
_RAW_DTYPES = {np.dtype(t) for t in (np.uint8, np.int8, np.int16, np.uint16, np.float16, np.float32)}
PREFETCH = 2  # batches prepared ahead by the background thread


@dataclass
class HostBatch:
    """Slices ``[start, stop)``: their raw context block on the host and where each stack's channels are in it."""

    start: int
    stop: int
    block: torch.Tensor  # (slices, h, w) host tensor; uint16 is carried as int16 bytes
    rows: torch.Tensor  # (stop - start, n_context) int64 indices into ``block`` (host; pinned with ``block``)
    unsigned16: bool  # ``block`` holds uint16 bytes viewed as int16


def prepare_batch(source: np.ndarray, start: int, stop: int, n_context: int, pin: bool) -> HostBatch:
    """Read the slices that batch ``[start, stop)`` of ``source`` (K, h, w) needs, each once, into host memory."""
    idx = context_indices(source.shape[0], range(start, stop), n_context)
    base, top = int(idx.min()), int(idx.max()) + 1
    part = source[base:top]
    unsigned16 = part.dtype == np.uint16
    if unsigned16:
        dtype = torch.int16
    elif part.dtype in _RAW_DTYPES:
        dtype = torch.from_numpy(np.empty(0, part.dtype)).dtype
    else:
        dtype = torch.float32
    block = torch.empty((top - base, *source.shape[1:]), dtype=dtype, pin_memory=pin)
    target = block.numpy()
    (target.view(np.uint16) if unsigned16 else target)[...] = part  # one read; memmaps read just these slices
    rows = torch.empty(idx.shape, dtype=torch.int64, pin_memory=pin)
    rows.numpy()[...] = idx - base
    return HostBatch(start, stop, block, rows, unsigned16)


def device_stacks(block: torch.Tensor, rows: torch.Tensor, lo: float, hi: float, unsigned16: bool) -> torch.Tensor:
    """Float32 2.5D stacks ``(N, n_context, h, w)`` from a raw ``block``, normalised like the plain path.

    Same arithmetic as :func:`~.normalize.apply_intensity_range`: ``(float32(v) - float32(lo)) *
    float32(1 / (hi - lo))`` clipped to [0, 1], so the result is bitwise equal.
    """
    if unsigned16:
        x = block.to(torch.int32).bitwise_and_(0xFFFF).to(torch.float32)
    else:
        x = block.to(torch.float32)
    x.sub_(float(np.float32(lo))).mul_(float(np.float32(1.0 / (hi - lo)))).clamp_(0.0, 1.0)
    return x[rows]


class _Prefetcher:
    """A background thread preparing the batches (:class:`HostBatch`) in order, at most ``PREFETCH`` ahead."""

    _END = object()

    def __init__(self, array: np.ndarray, source: np.ndarray, ks: range, batch: int, n_context: int,
                 pin: bool) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=PREFETCH)
        self._stop = threading.Event()
        args = (array, source, ks, batch, n_context, pin)
        self._thread = threading.Thread(target=self._run, args=args, name="fossilsegment-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, array: np.ndarray, source: np.ndarray, ks: range, batch: int, n_context: int, pin: bool) -> None:
        try:
            for part in slice_batches(array, ks, batch, n_context):
                item = prepare_batch(source, part.start, part.stop, n_context, pin)
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)
            return
        self._put(self._END)

    def __iter__(self) -> Iterator[HostBatch]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop the thread and drop what it prepared."""
        self._stop.set()
        self._thread.join()
        while not self._queue.empty():
            self._queue.get_nowait()


class _Lanes:
    """Copy-in, compute and copy-out streams on a CUDA device; plain synchronous calls elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.compute = torch.cuda.current_stream(device)
            self.copy_in = torch.cuda.Stream(device)
            self.copy_out = torch.cuda.Stream(device)

    def to_device(self, host: torch.Tensor) -> torch.Tensor:
        """``host`` on the device, ready for work queued next on the compute stream."""
        if not self.cuda:
            return host.to(self.device)
        with torch.cuda.stream(self.copy_in):
            dev = host.to(self.device, non_blocking=True)
        self.compute.wait_stream(self.copy_in)
        dev.record_stream(self.compute)
        return dev

    def to_host(self, *tensors: torch.Tensor | None) -> tuple[list[torch.Tensor | None], torch.cuda.Event | None]:
        """Host copies of ``tensors`` (page-locked, filled asynchronously) and the event marking them complete."""
        if not self.cuda:
            return [None if t is None else t.cpu() for t in tensors], None
        self.copy_out.wait_stream(self.compute)
        out: list[torch.Tensor | None] = []
        with torch.cuda.stream(self.copy_out):
            for dev in tensors:
                if dev is None:
                    out.append(None)
                    continue
                host = torch.empty(dev.shape, dtype=dev.dtype, pin_memory=True)
                host.copy_(dev, non_blocking=True)
                dev.record_stream(self.copy_out)
                out.append(host)
            done = torch.cuda.Event()
            done.record(self.copy_out)
        return out, done


@torch.inference_mode()
def run_pipelined(
    predict_stack: PredictStack,
    array: np.ndarray,
    source: np.ndarray,
    ks: range,
    batch: int,
    n_context: int,
    lo: float,
    hi: float,
    device: torch.device,
    sink: Sink,
    cancel: CancelToken | None = None,
) -> None:
    """Predict slices ``ks`` of ``source`` (K, h, w; a view of ``array``, whose pages are released as batches are
    read) in batches of ``batch``; hand each to ``sink`` in order.

    ``cancel`` is checked before each batch is queued. An exception (e.g. out of memory) propagates after
    the batches already handed to ``sink`` — the caller resumes after the last one it received.
    """
    lanes = _Lanes(device)
    depth = 1 if lanes.cuda else 0  # batches left in flight while the next one is queued
    pending: list[tuple[int, int, torch.Tensor, torch.Tensor | None, torch.cuda.Event | None]] = []

    def retire() -> None:
        start, stop, lab, prob, done = pending.pop(0)
        if done is not None:
            done.synchronize()
        sink(start, stop, lab.numpy(), None if prob is None else prob.numpy())

    prefetch = _Prefetcher(array, source, ks, batch, n_context, pin=lanes.cuda)
    try:
        for item in prefetch:
            check_cancelled(cancel)
            block, rows = lanes.to_device(item.block), lanes.to_device(item.rows)
            lab, prob = predict_stack(device_stacks(block, rows, lo, hi, item.unsigned16))
            del block, rows
            (lab_host, prob_host), done = lanes.to_host(lab, prob)
            pending.append((item.start, item.stop, lab_host, prob_host, done))
            del lab, prob
            while len(pending) > depth:
                retire()
        while pending:
            retire()
    finally:
        prefetch.close()
        if lanes.cuda:
            with contextlib.suppress(RuntimeError):  # after an error: let queued work finish before retrying
                torch.cuda.synchronize(device)


class PipelinedPredictor(Predictor):
    """A :class:`~.predictor.Predictor` whose batches go through :func:`run_pipelined` (the default on CUDA)."""

    def _run(self, network: Network, inferer: SliceInferer, array: np.ndarray, source: np.ndarray, ks: range,
             batch: int, lo: float, hi: float, sink: Sink, cancel: CancelToken | None, want_probs: bool) -> None:
        def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            return labels_and_probabilities(inferer.logits(x, network), want_probs)

        run_pipelined(step, array, source, ks, batch, inferer.context, lo, hi, self._device, sink, cancel)
