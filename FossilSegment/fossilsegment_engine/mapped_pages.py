"""Pages of memory-mapped volumes: is an array a file mapping, and handing back pages no longer needed.

A read-only memory-mapped input (:mod:`.io.lazy_readers`) is resident only where it has been read; the
segmenter releases the slices it is done with, so peak memory does not grow with the whole input.
Kept apart from ``io`` so that inference can use it without importing the readers and writers.
"""

from __future__ import annotations

import mmap
from typing import Optional

import numpy as np


def _file_map(array: np.ndarray) -> Optional[tuple[np.memmap, mmap.mmap]]:
    """The np.memmap and mmap under ``array`` (a view of a memory-mapped file), else None."""
    base, mapped = array, None
    while base is not None:
        if isinstance(base, np.memmap):
            mapped = base
        if isinstance(base, mmap.mmap):
            return (mapped, base) if mapped is not None else None
        base = getattr(base, "base", None)
    return None


def is_memory_mapped(array: np.ndarray) -> bool:
    """True when ``array``'s memory is (a view of) a memory-mapped file."""
    return _file_map(array) is not None


def release_pages(array: np.ndarray, k0: int = 0, k1: Optional[int] = None) -> bool:
    """Let the kernel take back the resident pages of slices ``array[k0:k1]`` of a read-only memory-mapped
    volume (``madvise(MADV_DONTNEED)``; they are mapped again, from the page cache or the file, if used again).

    Peak memory then stays near what is in use, not the whole input. ``k0``/``k1`` are clipped to the
    volume (a negative ``k1`` releases nothing). Returns False (and does nothing) for an array that is not a
    read-only file mapping, or where madvise is unavailable.
    """
    found = _file_map(array)
    advise = getattr(mmap, "MADV_DONTNEED", None)
    if found is None or advise is None or found[0].mode != "r" or not array.flags.c_contiguous:
        return False
    mapped, mm = found
    n = array.shape[0]
    part = array[min(max(k0, 0), n) : n if k1 is None else min(max(k1, 0), n)]
    if part.size == 0:
        return True
    start_of_map = part.ctypes.data - (mapped.ctypes.data - mapped.offset % mmap.ALLOCATIONGRANULARITY)
    first = -(-start_of_map // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages inside the slices only
    last = (start_of_map + part.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        mm.madvise(advise, first, last - first)
    return True
