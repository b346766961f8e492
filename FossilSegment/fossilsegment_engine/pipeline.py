"""One scan through the engine: read → segment → write every requested output atomically.

Shared by ``fossilsegment segment``, ``fossilsegment demo`` (and later ``batch``), so that all of them
write the same files with the same provenance.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .atomic import check_can_write
from .errors import FossilSegmentError
from .volume import Volume

log = logging.getLogger(__name__)


@dataclass
class Outputs:
    """The files one segmentation run writes; ``None`` means not wanted."""

    seg_nrrd: Path | None = None
    labelmap: Path | None = None
    stl_dir: Path | None = None
    overlay_png: Path | None = None
    force: bool = False

    def requested(self) -> list[Path]:
        """Every output path asked for."""
        return [Path(p) for p in (self.seg_nrrd, self.labelmap, self.stl_dir, self.overlay_png) if p is not None]

    def check(self) -> None:
        """Refuse, before any work, outputs that exist (without force) or collide with each other."""
        paths = self.requested()
        if not paths:
            raise FossilSegmentError("no output requested: give -o, --labelmap, --stl or --overlay")
        resolved = [p.resolve() for p in paths]
        if len(set(resolved)) != len(resolved):
            raise FossilSegmentError("two outputs have the same path: " + ", ".join(map(str, paths)))
        for p in paths:
            check_can_write(p, self.force)


@dataclass
class RunRecord:
    """What a run produced: the labelmap, the files written and the provenance stored with them."""

    labelmap: Volume
    written: list[Path] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def segment_voxels(self) -> dict[int, int]:
        """Voxel count per non-zero label value."""
        values, counts = np.unique(self.labelmap.array, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts) if v != 0}


def provenance(segmenter: Any, volume: Volume, parameters: dict[str, Any]) -> dict[str, Any]:
    """Model name and weights hash, engine version, parameters, input and date, for the outputs' metadata."""
    cfg = segmenter.config
    return {
        "software": f"FossilSegment {__version__}",
        "model": cfg.name,
        "model_weights_sha256": cfg.weights_sha256,
        "input": str(volume.meta.get("source", "")),
        "input_shape_kji": list(volume.shape),
        "parameters": parameters,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_outputs(volume: Volume, labelmap: Volume, classes: list[dict], outputs: Outputs,
                  metadata: dict[str, Any]) -> list[Path]:
    """Write each requested output (each atomically) and return the paths written."""
    from .io.mesh_io import write_stl_folder
    from .io.overlay import write_overlay_png
    from .io.segmentation_io import write_seg_nrrd
    from .io.volume_io import write_volume

    written: list[Path] = []
    if outputs.labelmap is not None:
        write_volume(labelmap, outputs.labelmap, force=outputs.force)
        written.append(Path(outputs.labelmap))
    if outputs.seg_nrrd is not None:
        write_seg_nrrd(labelmap, classes, outputs.seg_nrrd, force=outputs.force, metadata=metadata)
        written.append(Path(outputs.seg_nrrd))
    if outputs.overlay_png is not None:
        write_overlay_png(volume, labelmap, outputs.overlay_png, classes, force=outputs.force)
        written.append(Path(outputs.overlay_png))
    if outputs.stl_dir is not None:
        if not labelmap.array.any():
            log.warning("no bone found: no STL written")
        else:
            write_stl_folder(labelmap, classes, outputs.stl_dir, force=outputs.force)
            written.append(Path(outputs.stl_dir))
    return written


def segment_and_write(volume: Volume, segmenter: Any, outputs: Outputs, parameters: dict[str, Any] | None = None,
                      progress=None, cancel=None, **predict_options: Any) -> RunRecord:
    """Segment ``volume`` with a loaded ``segmenter`` and write ``outputs``; returns the run record."""
    outputs.check()
    labelmap = segmenter.predict(volume, progress=progress, cancel=cancel, **predict_options)
    meta = provenance(segmenter, volume, parameters or {})
    written = write_outputs(volume, labelmap, segmenter.classes, outputs, meta)
    return RunRecord(labelmap=labelmap, written=written, provenance=meta)
