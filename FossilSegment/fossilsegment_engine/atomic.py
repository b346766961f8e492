"""Atomic output: write to a temporary sibling, then rename; never overwrite without ``force``."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def normal_mode(path: Path, directory: bool = False) -> None:
    """Give ``path`` the usual umask-based mode (mkstemp/mkdtemp and some writers create private 0600/0700 entries)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def check_can_write(path: Path | str, force: bool = False) -> Path:
    """Refuse an existing output unless ``force``; check the parent folder exists or can be made."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputError(f"output exists: {path} (use --force to overwrite)")
    return path


@contextlib.contextmanager
def atomic_path(path: Path | str, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success rename it onto ``path``.

    The temporary keeps the final name's suffixes (``x.seg.nrrd`` -> ``.x.tmpXXXX.seg.nrrd``) so
    writers that choose a format by extension still work. On any error it is removed.
    """
    path = check_can_write(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    stem, dot, suffix = name.partition(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{dot}{suffix}" if dot else ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    normal_mode(tmp_path, directory=False)
    try:
        yield tmp_path
        if path.exists() and not force:  # appeared meanwhile
            raise OutputError(f"output exists: {path} (use --force to overwrite)")
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: Path | str, force: bool = False) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder of outputs (e.g. one STL per segment)."""
    path = check_can_write(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    normal_mode(tmp, directory=True)
    try:
        yield tmp
        if path.exists():
            if not force:
                raise OutputError(f"output exists: {path} (use --force to overwrite)")
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
