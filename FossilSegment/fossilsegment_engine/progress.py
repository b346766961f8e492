"""Progress reporting and cancellation shared by long engine operations."""

from __future__ import annotations

import threading
from typing import Callable, Optional, Protocol, Sequence

from .errors import Cancelled

#: ``progress(done, total)``: called after each unit of work (a batch of slices, an epoch...).
ProgressCallback = Callable[[int, int], None]


class CancelToken(Protocol):
    """Anything with ``is_set()``, e.g. :class:`threading.Event`."""

    def is_set(self) -> bool: ...


def new_cancel_token() -> threading.Event:
    """A fresh token; call ``.set()`` from any thread to cancel."""
    return threading.Event()


def phases(progress: Optional[ProgressCallback], weights: Sequence[float], scale: int = 1000
           ) -> list[Optional[ProgressCallback]]:
    """One callback per phase of a job, all driving ``progress`` as one bar of ``scale`` units.

    Phase ``i`` fills its share ``weights[i] / sum(weights)`` of the bar, whatever its own totals are, so a
    job of several steps (segmenting, then cleaning up) shows one bar that only moves forward.
    ``progress`` None → a list of None.
    """
    if progress is None:
        return [None] * len(weights)
    total_weight = float(sum(weights))
    if total_weight <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"phase weights must be non-negative with a positive sum, got {list(weights)}")
    starts = [sum(weights[:i]) / total_weight for i in range(len(weights))]

    def phase(start: float, share: float) -> ProgressCallback:
        def report(done: int, total: int) -> None:
            fraction = min(max(done / total, 0.0), 1.0) if total > 0 else 1.0
            progress(int(round((start + share * fraction) * scale)), scale)
        return report

    return [phase(start, w / total_weight) for start, w in zip(starts, weights)]


def check_cancelled(cancel: Optional[CancelToken]) -> None:
    """Raise :class:`Cancelled` when ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled by the user")
