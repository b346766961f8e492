"""Progress reporting and cancellation shared by long engine operations."""

from __future__ import annotations

import threading
from typing import Callable, Optional, Protocol

from .errors import Cancelled

#: ``progress(done, total)``: called after each unit of work (a batch of slices, an epoch...).
ProgressCallback = Callable[[int, int], None]


class CancelToken(Protocol):
    """Anything with ``is_set()``, e.g. :class:`threading.Event`."""

    def is_set(self) -> bool: ...


def new_cancel_token() -> threading.Event:
    """A fresh token; call ``.set()`` from any thread to cancel."""
    return threading.Event()


def check_cancelled(cancel: Optional[CancelToken]) -> None:
    """Raise :class:`Cancelled` when ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled by the user")
