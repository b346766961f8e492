"""``fossilsegment segment``: segment one scan and write a .seg.nrrd, a labelmap, STL meshes and/or a PNG."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FossilSegmentError
from ._progress import progress_bar
from ._uncertainty import add_uncertainty_options, check_uncertainty_output, write_uncertainty_from_args
from .options import (add_cleanup_options, add_force_option, add_inference_options, add_labelmap_option,
                      add_mesh_options, add_output_option, add_spacing_option, load_segmenter, mesh_options,
                      postprocess_options)

if TYPE_CHECKING:
    from ..roi import Box
    from ..volume import Volume

log = logging.getLogger(__name__)


def parse_slices(text: str | None) -> tuple[int, int] | None:
    """``"A:B"`` → (A, B), the half-open range of axial slices to segment."""
    if not text:
        return None
    try:
        start, stop = (int(v) for v in text.split(":"))
    except ValueError as exc:
        raise FossilSegmentError(f"--slices takes START:STOP (e.g. 10:200), got {text!r}") from exc
    if start < 0 or stop <= start:
        raise FossilSegmentError(f"--slices {text}: need 0 <= START < STOP")
    return start, stop


def add_roi_options(p: argparse.ArgumentParser) -> None:
    """``--roi`` (voxels) / ``--roi-mm`` (LPS mm): segment only a box; everything outside it is label 0."""
    roi = p.add_mutually_exclusive_group()
    roi.add_argument("--roi", default=None, metavar="I0:I1,J0:J1,K0:K1",
                     help="segment only this box of voxels, given in x, y, z order: column (i), row (j), slice (k) "
                          "ranges as in Slicer's IJK, 0-based, stop excluded; an empty START or STOP means the "
                          "volume's edge (e.g. 100:400,:,20:180); combined with --slices, the common slices are used; "
                          "voxels outside are 0 in every output (intensities are still normalised on the whole scan)")
    roi.add_argument("--roi-mm", default=None, metavar="X0:X1,Y0:Y1,Z0:Z1",
                     help="segment only this box in millimetres, in the LPS coordinates of the scan's origin and "
                          "direction (x to the patient's left, y posterior, z superior; Slicer shows RAS: negate x "
                          "and y); every voxel it touches is segmented, clipped to the scan; write "
                          "--roi-mm=-20:5,... when X0 is negative")


def check_roi_options(args: argparse.Namespace) -> None:
    """Parse ``--roi``/``--roi-mm`` once (InputError on bad syntax) before any slow work."""
    from ..roi import parse_mm_roi, parse_voxel_roi

    if getattr(args, "roi", None):
        parse_voxel_roi(args.roi)
    if getattr(args, "roi_mm", None):
        parse_mm_roi(args.roi_mm)


def roi_from_args(args: argparse.Namespace, volume: Volume, slice_range: tuple[int, int] | None
                  ) -> tuple[Box | None, dict]:
    """``(Box or None, provenance dict)`` for ``--roi``/``--roi-mm`` (intersected with ``--slices``)."""
    from ..roi import parse_mm_roi, resolve_roi

    box = resolve_roi(volume.shape, volume.ijk_to_lps(), voxels=getattr(args, "roi", None),
                      mm=getattr(args, "roi_mm", None), slices=slice_range)
    if box is None:
        return None, {}
    record = {"roi_ijk": box.ijk_ranges()}
    if getattr(args, "roi_mm", None):
        record["roi_mm_lps"] = [list(b) for b in parse_mm_roi(args.roi_mm)]
    return box, record


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment fossil bone in a CT scan",
                       description="Segment a CT/micro-CT scan slice by slice. INPUT: NRRD/NHDR, NIfTI, MHA/MHD, "
                                   "a DICOM series folder, a folder of TIFF/PNG slices, a multipage TIFF or .npy.")
    p.add_argument("input", type=Path, metavar="INPUT")
    add_output_option(p, metavar="OUT.seg.nrrd",
                      help="Slicer segmentation file (default when no other output is given: INPUT name + .seg.nrrd "
                           "in the current folder)")
    add_labelmap_option(p)
    p.add_argument("--stl", type=Path, default=None, metavar="DIR",
                   help="folder for one mesh per segment (STL unless --mesh-format), in mm, LPS coordinates unless "
                        "--mesh-coordinates RAS, with a report per mesh and provenance.json")
    p.add_argument("--overlay", type=Path, default=None, metavar="PNG", help="PNG montage of slices with outlines")
    p.add_argument("--qc", type=Path, default=None, metavar="DIR",
                   help="folder for quality-control pictures: montage.png (slices) and snapshot.png (3D meshes)")
    add_spacing_option(p)
    p.add_argument("--slices", default=None, metavar="START:STOP", help="segment only these axial slices")
    add_roi_options(p)
    add_force_option(p)
    add_inference_options(p)
    add_cleanup_options(p)
    add_mesh_options(p)
    add_uncertainty_options(p)
    p.set_defaults(func=run)


def default_output(input_path: Path) -> Path:
    """``scan.nii.gz`` → ``./scan.seg.nrrd``; a folder ``slices/`` → ``./slices.seg.nrrd``."""
    from ..io.volume_io import scan_stem

    return Path.cwd() / f"{scan_stem(input_path)}.seg.nrrd"


def run(args: argparse.Namespace) -> int:
    from ..io.volume_io import read_volume
    from ..pipeline import Outputs, segment_and_write

    outputs = Outputs(seg_nrrd=args.output, labelmap=args.labelmap, stl_dir=args.stl, overlay_png=args.overlay,
                      qc_dir=args.qc, force=args.force, mesh=mesh_options(args))
    if not outputs.requested():
        outputs.seg_nrrd = default_output(args.input)
    outputs.check()  # before the slow part
    check_uncertainty_output(args)
    slice_range = parse_slices(args.slices)
    check_roi_options(args)  # syntax errors before the slow read
    volume = read_volume(args.input, spacing=args.spacing)
    if slice_range and slice_range[1] > volume.shape[0]:
        raise FossilSegmentError(f"--slices {args.slices}: the volume has {volume.shape[0]} slices")
    roi, roi_record = roi_from_args(args, volume, slice_range)
    segmenter = load_segmenter(args)
    log.info("input %s: %s voxels (k, j, i), spacing %s mm; model %s on %s", args.input, volume.shape,
             tuple(round(s, 6) for s in volume.spacing), segmenter.config.name, segmenter.device)
    parameters = {"device": str(segmenter.device), "batch_size": args.batch_size, "precision": args.precision,
                  "thorough": args.thorough, "min_island_voxels": args.min_island, "fill_holes": not args.no_fill_holes,
                  "slices": list(slice_range) if slice_range else None, **roi_record}
    where = {"roi": roi} if roi is not None else {"slice_range": slice_range}  # the ROI holds --slices too
    with progress_bar("segmenting") as progress, progress_bar("cleaning up", percent=True) as cleanup:
        record = segment_and_write(volume, segmenter, outputs, parameters, progress=progress,
                                   cleanup_progress=cleanup, **where, postprocess=postprocess_options(args))
    counts = record.segment_voxels()
    voxel_mm3 = volume.spacing[0] * volume.spacing[1] * volume.spacing[2]
    names = {c["value"]: c["name"] for c in segmenter.classes}
    for value, n in counts.items():
        print(f"{names.get(value, value)}: {n} voxels, {n * voxel_mm3:.4g} mm³")
    if not counts:
        print("no bone found")
    for report in record.mesh_reports:
        print(f"mesh {report['segment']}: {report['triangles']:,} triangles, {report['volume_mm3']:.4g} mm³, "
              f"{report['connected_components']} piece(s), {'watertight' if report['watertight'] else 'NOT watertight'}")
    if args.thorough:
        print(f"thorough: mean of {len(segmenter.passes)} passes ({', '.join(segmenter.passes)})")
    for note in record.notes:
        print(note)
    for path in record.written:
        print(f"wrote {path}")
    from ..roi import region_box

    write_uncertainty_from_args(args, segmenter, volume, roi or region_box(volume.shape, slice_range))
    return 0
