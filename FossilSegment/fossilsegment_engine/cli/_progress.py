"""tqdm progress bars as engine progress callbacks."""

from __future__ import annotations

import contextlib
from typing import Iterator

from tqdm import tqdm

from ..progress import ProgressCallback


@contextlib.contextmanager
def progress_bar(desc: str, unit: str = "slice", percent: bool = False) -> Iterator[ProgressCallback]:
    """Yield a ``progress(done, total)`` callback drawing a tqdm bar on stderr.

    ``percent``: show 0–100 % instead of the callback's own units, and only from the first call on (for a
    step that may not run, e.g. the clean-up after segmenting)."""
    bar: list[tqdm] = [] if percent else [tqdm(desc=desc, unit=unit, dynamic_ncols=True, leave=True)]
    try:
        def update(done: int, total: int) -> None:
            if not bar:
                bar.append(tqdm(desc=desc, total=100, unit="%", dynamic_ncols=True, leave=True,
                                bar_format="{l_bar}{bar}| {elapsed}<{remaining}"))
            if percent:
                done, total = (100 * done) // max(total, 1), 100
            if bar[0].total != total:
                bar[0].total = total
            bar[0].update(done - bar[0].n)

        yield update
    finally:
        for b in bar:
            b.close()
