"""Where a batch writes: one sub-folder per scan, ``done.json`` written last, ``summary.csv`` at the top."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from ..errors import OutputError
from ..io.volume_io import scan_stem

DONE_FILE = "done.json"
SUMMARY_FILE = "summary.csv"
SEG_FILE = "scan.seg.nrrd"
LABELMAP_FILE = "labelmap.nrrd"
MESH_DIR = "stl"
QC_DIR = "qc"
PROVENANCE_FILE = "provenance.json"


def scan_names(inputs: Sequence[Path | str]) -> list[str]:
    """One distinct folder name per input, in order (``name``, ``name_2``, … for repeats)."""
    names: list[str] = []
    for path in inputs:
        base = scan_stem(path)
        name, n = base, 1
        while name in names or name == SUMMARY_FILE:
            n += 1
            name = f"{base}_{n}"
        names.append(name)
    return names


def check_output_dir(outdir: Path | str) -> Path:
    """Create ``outdir`` if needed and prove it writable; :class:`OutputError` otherwise (before any work)."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"output folder {outdir} is a file, not a folder")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=outdir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"output folder {outdir} is not writable: {exc.strerror or exc}") from exc
    return outdir


def read_done(scan_dir: Path, input_path: Path | str) -> dict[str, Any] | None:
    """The scan's ``done.json`` when its outputs are complete and came from ``input_path``; else None."""
    try:
        done = json.loads((scan_dir / DONE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(done, dict) or done.get("input") != str(Path(input_path).resolve()):
        return None
    return done


def remove_stale(outdir: Path, name: str) -> None:
    """Delete temporary folders a killed run left for scan ``name`` (``.name.*.tmp``)."""
    for tmp in outdir.glob(f".{name}.*.tmp"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
