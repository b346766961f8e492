"""One scan through the engine: read → segment → write every requested output atomically.

Shared by ``fossilsegment segment``, ``fossilsegment demo`` and ``fossilsegment batch``, so that all of
them write the same files with the same provenance. Meshes are built before any file is written, so a
mesh over the user's triangle limit stops the run with nothing written.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import atomic_dir, check_can_write
from .errors import FossilSegmentError
from .io.mesh_io import Mesh, MeshOptions
from .volume import Volume

log = logging.getLogger(__name__)


@dataclass
class Outputs:
    """The files one segmentation run writes; ``None`` means not wanted."""

    seg_nrrd: Path | None = None
    labelmap: Path | None = None
    stl_dir: Path | None = None
    overlay_png: Path | None = None
    qc_dir: Path | None = None
    force: bool = False
    mesh: MeshOptions = field(default_factory=MeshOptions)

    def requested(self) -> list[Path]:
        """Every output path asked for."""
        paths = (self.seg_nrrd, self.labelmap, self.stl_dir, self.overlay_png, self.qc_dir)
        return [Path(p) for p in paths if p is not None]

    def check(self) -> None:
        """Refuse, before any work, outputs that exist (without force) or collide with each other."""
        paths = self.requested()
        if not paths:
            raise FossilSegmentError("no output requested: give -o, --labelmap, --stl, --overlay or --qc")
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
    mesh_reports: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def segment_voxels(self) -> dict[int, int]:
        """Voxel count per non-zero label value (counted a slab at a time: no sorted full-size copy)."""
        from .io.segmentation_io import count_labels

        return {v: n for v, n in count_labels(self.labelmap.array).items() if v != 0}


#: provenance keys copied into each segment's tags in the .seg.nrrd (short version)
SEGMENT_TAG_KEYS = ("software", "model", "model_weights_sha256", "date", "corrected_slices")
SEGMENT_TAG_PREFIX = "FossilSegment."


def provenance(segmenter: Any, volume: Volume, parameters: dict[str, Any],
               corrected_slices: list[int] | None = None) -> dict[str, Any]:
    """Model name and weights hash, engine version, parameters, input, date and (when known) the axial
    slices the user corrected by hand, for the outputs' metadata."""
    cfg = segmenter.config
    return {
        "software": f"FossilSegment {__version__}",
        "engine_version": __version__,
        "model": cfg.name,
        "model_weights_sha256": cfg.weights_sha256,
        "input": str(volume.meta.get("source_path", "")),
        "input_shape_kji": list(volume.shape),
        "input_spacing_mm": list(volume.spacing),
        "input_notes": list(volume.meta.get("notes", [])),  # e.g. "RGB converted to luminance"
        "parameters": parameters,
        # what ran (known after predicting), e.g. eager-bf16 and the passes averaged
        "inference": {"mode": getattr(segmenter, "mode", None), "passes": getattr(segmenter, "passes", None)},
        "corrected_slices": sorted({int(k) for k in corrected_slices}) if corrected_slices else [],
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def segment_tags(meta: dict[str, Any]) -> dict[str, str]:
    """Short provenance as Slicer segment tags (``FossilSegment.model`` …); values never contain ``|``."""
    tags = {}
    for key in SEGMENT_TAG_KEYS:
        value = meta.get(key)
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        if value not in (None, ""):
            tags[SEGMENT_TAG_PREFIX + key] = str(value).replace("|", "/")
    return tags


def _write_seg(labelmap: Volume, classes: list[dict], path: Path, force: bool, meta: dict[str, Any]) -> None:
    """write_seg_nrrd with the provenance in the header and, short, as each segment's tags."""
    from .io.segmentation_io import write_seg_nrrd

    write_seg_nrrd(labelmap, classes, path, force=force, metadata=meta, segment_tags=segment_tags(meta))


def _write_qc(volume: Volume, labelmap: Volume, classes: list[dict], folder: Path, force: bool,
              meshes: list[Mesh], coordinates: str) -> None:
    """``montage.png`` (slices with outlines) and, when there are meshes, ``snapshot.png`` (3D view)."""
    from .io.overlay import write_overlay_png
    from .io.snapshot import write_snapshot_png

    with atomic_dir(folder, force) as tmp:
        write_overlay_png(volume, labelmap, tmp / "montage.png", classes)
        if meshes:
            write_snapshot_png([(m.polydata, m.color) for m in meshes], tmp / "snapshot.png", coordinates=coordinates)


def write_outputs(volume: Volume, labelmap: Volume, classes: list[dict], outputs: Outputs,
                  metadata: dict[str, Any], record: RunRecord | None = None) -> list[Path]:
    """Write each requested output (each atomically) and return the paths written.

    Meshes (for ``stl_dir`` and the ``qc_dir`` snapshot) are built first: a mesh over the triangle limit
    raises before any file is written. With no foreground, no mesh or snapshot is written (a note says so).
    """
    from .io.mesh_io import build_meshes, export_meshes
    from .io.overlay import write_overlay_png
    from .io.volume_io import write_volume

    record = record if record is not None else RunRecord(labelmap=labelmap, provenance=metadata)
    meshes: list[Mesh] = []
    if outputs.stl_dir is not None or outputs.qc_dir is not None:
        if labelmap.array.any():
            meshes = build_meshes(labelmap, classes, outputs.mesh)
        else:
            note = "no bone found: no mesh or 3D snapshot written"
            log.warning(note)
            record.notes.append(note)
    written: list[Path] = []
    if outputs.labelmap is not None:
        write_volume(labelmap, outputs.labelmap, force=outputs.force)
        written.append(Path(outputs.labelmap))
    if outputs.seg_nrrd is not None:
        _write_seg(labelmap, classes, Path(outputs.seg_nrrd), outputs.force, metadata)
        written.append(Path(outputs.seg_nrrd))
    if outputs.overlay_png is not None:
        write_overlay_png(volume, labelmap, outputs.overlay_png, classes, force=outputs.force)
        written.append(Path(outputs.overlay_png))
    if outputs.stl_dir is not None and meshes:
        export = export_meshes(labelmap, classes, outputs.stl_dir, outputs.mesh, outputs.force, metadata, meshes)
        record.mesh_reports = export.reports
        written.append(Path(outputs.stl_dir))
    if outputs.qc_dir is not None:
        _write_qc(volume, labelmap, classes, Path(outputs.qc_dir), outputs.force, meshes, outputs.mesh.coordinates)
        written.append(Path(outputs.qc_dir))
    return written


def segment_and_write(volume: Volume, segmenter: Any, outputs: Outputs, parameters: dict[str, Any] | None = None,
                      progress=None, cancel=None, corrected_slices: list[int] | None = None,
                      **predict_options: Any) -> RunRecord:
    """Segment ``volume`` with a loaded ``segmenter`` and write ``outputs``; returns the run record."""
    outputs.check()
    labelmap = segmenter.predict_labels(volume, progress=progress, cancel=cancel, **predict_options)
    params = {**(parameters or {}), "mesh": outputs.mesh.to_json()} if outputs.stl_dir or outputs.qc_dir else parameters
    meta = provenance(segmenter, volume, params or {}, corrected_slices)
    record = RunRecord(labelmap=labelmap, provenance=meta)
    record.written = write_outputs(volume, labelmap, segmenter.classes, outputs, meta, record)
    return record
