"""Slicer segmentation files (``.seg.nrrd``) written and read with slicerio.

Class dicts look like ``{"value": 1, "name": "Bone", "color": [0.89, 0.85, 0.79]}``. Colours are 0–1
floats (as Slicer stores them); 0–255 values are also accepted: a colour with any component > 1 is
divided by 255. Each non-background value present in the labelmap becomes one segment whose
``labelValue`` is that value; a present value without a class gets the name ``Label_<value>``.
Provenance is stored as a JSON string in the custom header field ``FossilSegment_provenance``.

Writing builds the header slicerio's ``write_segmentation`` writes (same fields, order and text) and streams
the voxels a few slices at a time (:mod:`.nrrd_stream`), so a large labelmap is never copied whole.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import nrrd
import numpy as np
import slicerio

from ..atomic import atomic_path, check_can_write
from ..errors import InputError, OutputError
from ..volume import Volume
from .nrrd_stream import iter_slabs, write_nrrd

log = logging.getLogger(__name__)

PROVENANCE_FIELD = "FossilSegment_provenance"
#: Colours (0–1) for values that have no class entry.
_FALLBACK_COLORS = ((0.9, 0.3, 0.3), (0.3, 0.7, 0.9), (0.9, 0.8, 0.2), (0.5, 0.9, 0.4), (0.8, 0.4, 0.9))


def color01(color: Sequence[float]) -> list[float]:
    """An RGB colour as three 0–1 floats (0–255 input is scaled when any component exceeds 1)."""
    rgb = [float(c) for c in list(color)[:3]]
    if len(rgb) != 3 or any(c < 0 for c in rgb):
        raise ValueError(f"colour must be three non-negative numbers, got {color!r}")
    if any(c > 1.0 for c in rgb):
        rgb = [min(c / 255.0, 1.0) for c in rgb]
    return rgb


def count_labels(array: np.ndarray) -> dict[int, int]:
    """Voxel count per value present, ascending; a slab at a time (bincount for uint8/uint16, else unique)."""
    if array.dtype in (np.uint8, np.uint16):
        totals = np.zeros(1 << (8 * array.dtype.itemsize), dtype=np.int64)
        for slab in iter_slabs(array, slab_bytes=2 << 20):  # bincount converts to intp: 8 bytes a voxel
            totals += np.bincount(slab.reshape(-1), minlength=totals.size)
        return {int(v): int(totals[v]) for v in np.flatnonzero(totals)}
    merged: dict[int, int] = {}
    for slab in iter_slabs(array, slab_bytes=2 << 20):
        values, counts = np.unique(slab, return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist()):
            merged[int(v)] = merged.get(int(v), 0) + int(c)
    return dict(sorted(merged.items()))


def present_labels(array: np.ndarray) -> list[int]:
    """Non-zero values present in a labelmap, ascending."""
    return [v for v in count_labels(array) if v != 0]


def segment_specs(labelmap: Volume, classes: Sequence[dict]) -> list[dict[str, Any]]:
    """Name, colour and value for each non-background value present in ``labelmap``."""
    by_value = {int(c["value"]): c for c in classes}
    specs = []
    for n, value in enumerate(present_labels(labelmap.array)):
        cls = by_value.get(value)
        if cls is None:
            log.warning("label value %d has no class; naming its segment Label_%d", value, value)
            cls = {"value": value, "name": f"Label_{value}", "color": _FALLBACK_COLORS[n % len(_FALLBACK_COLORS)]}
        specs.append({"value": value, "name": str(cls["name"]), "color": color01(cls.get("color", _FALLBACK_COLORS[0]))})
    return specs


def write_seg_nrrd(
    labelmap: Volume,
    classes: Sequence[dict],
    path: Path | str,
    force: bool = False,
    metadata: Optional[dict] = None,
    segment_tags: Optional[dict[str, str]] = None,
) -> Path:
    """Write ``labelmap`` as a Slicer ``.seg.nrrd`` (one named, coloured segment per class present), atomically.

    Geometry is the labelmap's exactly (LPS). ``metadata`` (JSON-serialisable) goes in the header field
    ``FossilSegment_provenance``. Raises :class:`OutputError` if ``path`` exists and not ``force``.
    """
    path = Path(path)
    if not path.name.lower().endswith(".seg.nrrd"):
        raise OutputError(f"cannot write {path}: a Slicer segmentation file name must end with .seg.nrrd")
    check_can_write(path, force)
    array = labelmap.array
    if not np.issubdtype(array.dtype, np.integer):
        raise OutputError(f"cannot write {path}: labelmap voxels are {array.dtype}, need integers")
    specs = segment_specs(labelmap, classes)
    top = max((s["value"] for s in specs), default=0)
    voxel_type = np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.uint32
    header = seg_header(labelmap, specs, metadata, segment_tags)
    with atomic_path(path, force) as tmp:
        try:
            write_nrrd(tmp, array, header, dtype=np.dtype(voxel_type), compression_level=1)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def seg_header(labelmap: Volume, specs: Sequence[dict[str, Any]], metadata: Optional[dict] = None,
               segment_tags: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """The NRRD header fields ``slicerio.write_segmentation`` writes for these segments, in its order.

    (slicerio builds them only on its way to ``nrrd.write``, which copies the whole array; a test checks
    this header stays byte-identical to slicerio's.)
    """
    ijk_to_lps = labelmap.ijk_to_lps()
    header: dict[str, Any] = {
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    if metadata is not None:
        header[PROVENANCE_FIELD] = json.dumps(metadata, sort_keys=True, default=str)
    header.update({"kinds": ["domain", "domain", "domain"], "space directions": ijk_to_lps[:3, :3].T,
                   "space origin": ijk_to_lps[:3, 3], "space": "left-posterior-superior", "encoding": "gzip"})
    nk, nj, ni = labelmap.shape
    tags = "|".join(f"{key}:{value}" for key, value in (segment_tags or {}).items()) + "|"
    for n, s in enumerate(specs):
        header.update({
            f"Segment{n}_ID": f"Segment_{s['value']}",
            f"Segment{n}_Name": s["name"],
            f"Segment{n}_NameAutoGenerated": 0,
            f"Segment{n}_Color": " ".join(str(c) for c in s["color"]),
            f"Segment{n}_ColorAutoGenerated": 0,
            f"Segment{n}_LabelValue": str(s["value"]),
            f"Segment{n}_Layer": "0",
            f"Segment{n}_Extent": f"0 {ni - 1} 0 {nj - 1} 0 {nk - 1}",
            f"Segment{n}_Tags": tags,
        })
    return header


def read_seg_nrrd(path: Path | str) -> tuple[Volume, list[dict]]:
    """Read a single-layer ``.seg.nrrd`` as (labelmap Volume, slicerio segment dicts).

    The provenance JSON, when present, is in ``volume.meta["provenance"]``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    try:
        seg = slicerio.read_segmentation(str(path))
    except (OSError, ValueError, nrrd.NRRDError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    voxels = seg["voxels"]
    if voxels.ndim != 3:
        raise InputError(f"{path} holds overlapping segments ({voxels.shape[0]} layers); need a single-layer segmentation")
    m = np.asarray(seg["ijkToLPS"], dtype=float)
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    direction = m[:3, :3] / spacing
    meta: dict[str, Any] = {"source_path": str(path), "source_format": "seg.nrrd"}
    if PROVENANCE_FIELD in seg:
        meta["provenance"] = json.loads(seg[PROVENANCE_FIELD])
    labels = Volume(voxels.transpose(2, 1, 0), tuple(spacing), tuple(m[:3, 3]), tuple(direction.ravel()), meta)
    return labels, list(seg.get("segments", []))
