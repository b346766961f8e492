"""One segmentation running on a worker thread. No Qt, no MRML: the main thread polls for messages.

A Python thread rather than a subprocess: torch releases the GIL inside its kernels, so Slicer stays
responsive; the volume is handed over as a numpy array instead of serialising gigabytes; the model
stays loaded between runs. The worker only calls ``logic.runEngine`` (which touches no MRML) and puts
messages on a queue; the widget drains it from a QTimer on the main thread.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from typing import Any

#: Messages from :meth:`InferenceJob.poll`:
#: ``("progress", done, total)``, then one of ``("done", labelmap)``, ``("cancelled",)``,
#: ``("error", exception, traceback_text)``.
FINAL = ("done", "cancelled", "error")


#: logic methods a job may run (each takes the prepared input first, then ``progress``/``cancel`` keywords, no MRML)
WORKER_METHODS = ("runEngine", "runLearning", "runUncertainty")


class InferenceJob:
    """Run ``logic.<method>(volume, **engineArgs)`` once on a daemon thread (``runEngine`` by default;
    ``runLearning`` fine-tunes then re-segments, ``runUncertainty`` computes the uncertainty volume)."""

    def __init__(self, logic: Any, volume: Any, engineArgs: dict, context: dict | None = None,
                 method: str = "runEngine") -> None:
        if method not in WORKER_METHODS:
            raise ValueError(f"unknown worker method {method!r}; one of {', '.join(WORKER_METHODS)}")
        self.method = method
        self.logic = logic
        self.volume = volume
        self.engineArgs = dict(engineArgs)
        self.context = dict(context or {})  # main-thread data carried to the result (nodes, classes…)
        self.cancelToken = threading.Event()
        self.startTime = 0.0
        self.finished = False
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, daemon=True, name="FossilSegment inference")

    def start(self) -> "InferenceJob":
        self.startTime = time.monotonic()
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the engine to stop at its next check; a ``("cancelled",)`` message follows."""
        self.cancelToken.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def poll(self) -> list[tuple]:
        """Messages since the last call, in order (main thread). Marks the job finished on the final one."""
        messages = []
        while True:
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                break
            messages.append(message)
            if message[0] in FINAL:
                self.finished = True
        return messages

    def secondsLeft(self, done: int, total: int) -> float | None:
        """Estimated time left from the elapsed time per slice; None before the first slice."""
        if done <= 0:
            return None
        return (time.monotonic() - self.startTime) / done * max(total - done, 0)

    def _work(self) -> None:
        """Worker thread: never touches Qt or MRML."""
        from fossilsegment_engine.errors import Cancelled

        put = self._queue.put
        try:
            labelmap = getattr(self.logic, self.method)(self.volume, progress=lambda done, total: put(("progress", done, total)),
                                            cancel=self.cancelToken, **self.engineArgs)
            put(("done", labelmap))
        except Cancelled:
            put(("cancelled",))
        except Exception as exc:  # handed to the main thread with its traceback
            put(("error", exc, traceback.format_exc()))
