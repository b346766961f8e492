"""The batch's ``summary.csv``: one row per scan, rewritten atomically after each scan."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from ..atomic import atomic_path
from .scan import ScanResult

COLUMNS = ("scan", "input", "shape_kji", "spacing_mm", "bone_volume_mm3", "seconds", "status", "error", "note")


def _row(r: ScanResult) -> list[str]:
    shape = "x".join(str(n) for n in r.shape) if r.shape else ""
    spacing = "x".join(f"{s:.6g}" for s in r.spacing) if r.spacing else ""
    volume = f"{r.bone_volume_mm3:.6g}" if r.bone_volume_mm3 is not None else ""
    seconds = f"{r.seconds:.3f}" if r.seconds is not None else ""
    return [r.scan, r.input, shape, spacing, volume, seconds, r.status, r.error, r.note]


def write_summary(results: Sequence[ScanResult], path: Path | str) -> Path:
    """Write (replacing) the summary CSV atomically."""
    path = Path(path)
    with atomic_path(path, force=True) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            writer.writerows(_row(r) for r in results)
    return path


def read_summary(path: Path | str) -> list[dict[str, str]]:
    """The summary rows as dicts (for tests and tools)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
