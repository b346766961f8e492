"""tqdm progress bars as engine progress callbacks."""

from __future__ import annotations

import contextlib
from typing import Iterator

from tqdm import tqdm

from ..progress import ProgressCallback


@contextlib.contextmanager
def progress_bar(desc: str, unit: str = "slice") -> Iterator[ProgressCallback]:
    """Yield a ``progress(done, total)`` callback drawing a tqdm bar on stderr."""
    bar = tqdm(desc=desc, unit=unit, dynamic_ncols=True, leave=True)
    try:
        def update(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        yield update
    finally:
        bar.close()
