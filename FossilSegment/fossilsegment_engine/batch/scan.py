"""One scan of a batch: read, segment, write its sub-folder atomically with ``done.json`` last."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_dir
from ..errors import FossilSegmentError
from ..io.mesh_io import MeshOptions
from . import layout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOptions:
    """Model, post-processing and mesh settings shared by every scan of a batch."""

    model: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    precision: str = "auto"
    backend: str = "auto"
    thorough: bool = False
    min_island_voxels: int = 64
    fill_holes: bool = True
    mesh: MeshOptions = field(default_factory=MeshOptions)
    force: bool = False

    def parameters(self, device: str) -> dict[str, Any]:
        """The provenance ``parameters`` of a scan run on ``device``."""
        return {"device": device, "batch_size": self.batch_size, "precision": self.precision,
                "backend": self.backend, "thorough": self.thorough, "min_island_voxels": self.min_island_voxels,
                "fill_holes": self.fill_holes, "batch": True}


@dataclass
class ScanResult:
    """One row of the batch summary."""

    scan: str
    input: str
    status: str  # ok | skipped | failed
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    bone_volume_mm3: float | None = None
    seconds: float | None = None
    error: str = ""
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = asdict(self)
        out["shape"] = list(self.shape) if self.shape else None
        out["spacing"] = list(self.spacing) if self.spacing else None
        return out


def load_segmenter(options: BatchOptions):
    """The Predictor for ``options`` (load once per process)."""
    from ..inference.predictor import Predictor

    return Predictor.load(options.model, device=options.device, batch_size=options.batch_size,
                          precision=options.precision, backend=options.backend, thorough=options.thorough)


def bone_volume_mm3(labelmap: Any, classes: list[dict]) -> float:
    """Volume of the class named Bone (all foreground when no class has that name), in mm³."""
    values = [int(c["value"]) for c in classes if str(c.get("name", "")).lower() == "bone"]
    array = labelmap.array
    n = int(np.isin(array, values).sum()) if values else int(np.count_nonzero(array))
    return n * float(np.prod(labelmap.spacing))


def skipped_result(name: str, input_path: Path, done: dict[str, Any]) -> ScanResult:
    """The summary row of a scan finished by an earlier run."""
    return ScanResult(scan=name, input=str(input_path), status="skipped",
                      shape=tuple(done.get("shape") or ()) or None, spacing=tuple(done.get("spacing") or ()) or None,
                      bone_volume_mm3=done.get("bone_volume_mm3"), seconds=done.get("seconds"),
                      note="outputs complete from an earlier run")


def process_scan(segmenter: Any, input_path: Path | str, scan_dir: Path | str, options: BatchOptions) -> ScanResult:
    """Segment one scan into ``scan_dir`` (replaced whole, atomically); a bad scan gives a ``failed`` result."""
    from ..inference.postprocess import PostprocessOptions
    from ..io.volume_io import read_volume
    from ..pipeline import Outputs, segment_and_write

    input_path, scan_dir = Path(input_path).resolve(), Path(scan_dir)
    result = ScanResult(scan=scan_dir.name, input=str(input_path), status="failed")
    start = time.perf_counter()
    try:
        layout.remove_stale(scan_dir.parent, scan_dir.name)
        volume = read_volume(input_path)
        result.shape, result.spacing = tuple(volume.shape), tuple(volume.spacing)
        post = PostprocessOptions(min_island_voxels=options.min_island_voxels, fill_holes=options.fill_holes)
        with atomic_dir(scan_dir, force=True) as tmp:
            outputs = Outputs(seg_nrrd=tmp / layout.SEG_FILE, labelmap=tmp / layout.LABELMAP_FILE,
                              stl_dir=tmp / layout.MESH_DIR, qc_dir=tmp / layout.QC_DIR, mesh=options.mesh)
            record = segment_and_write(volume, segmenter, outputs, options.parameters(str(segmenter.device)),
                                       postprocess=post)
            result.bone_volume_mm3 = bone_volume_mm3(record.labelmap, segmenter.classes)
            result.note = "; ".join(record.notes)
            _write_json(tmp / layout.PROVENANCE_FILE, {**record.provenance, "meshes": record.mesh_reports})
            result.status = "ok"
            result.seconds = round(time.perf_counter() - start, 3)
            _write_json(tmp / layout.DONE_FILE, result.to_json())  # last: marks the scan complete
    except (FossilSegmentError, OSError, RuntimeError, ValueError, MemoryError) as exc:
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}" if not isinstance(
            exc, FossilSegmentError) else str(exc)
        log.error("scan %s failed: %s", input_path, result.error,
                  exc_info=not isinstance(exc, FossilSegmentError))
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
