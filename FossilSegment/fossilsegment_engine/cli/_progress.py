"""Progress of CLI commands: tqdm bars on stderr, or JSON lines on stdout (``--progress jsonl``) for a
program driving the CLI (the Slicer panel)."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any, Iterator

from tqdm import tqdm

from ..progress import ProgressCallback

#: ``bar``: tqdm bars on stderr; ``jsonl``: one JSON object per update on stdout
MODES = ("bar", "jsonl")
_mode = ["bar"]


def set_mode(mode: str) -> None:
    """Choose how every progress bar of this process reports (see :data:`MODES`)."""
    if mode not in MODES:
        raise ValueError(f"progress mode {mode!r}; one of {', '.join(MODES)}")
    _mode[0] = mode


def json_mode() -> bool:
    return _mode[0] == "jsonl"


def emit(record: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed at once (the reader polls a file or a pipe)."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def progress_bar(desc: str, unit: str = "slice", percent: bool = False) -> Iterator[ProgressCallback]:
    """Yield a ``progress(done, total)`` callback drawing a tqdm bar on stderr (or emitting
    ``{"phase": desc, "done": d, "total": t}`` lines in ``jsonl`` mode).

    ``percent``: show 0–100 % instead of the callback's own units, and only from the first call on (for a
    step that may not run, e.g. the clean-up after segmenting)."""
    if json_mode():
        def report(done: int, total: int) -> None:
            if percent:
                done, total = (100 * done) // max(total, 1), 100
            emit({"phase": desc, "done": int(done), "total": int(total)})

        yield report
        return
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
