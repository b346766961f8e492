"""``fossilsegment segment``: segment one scan and write a .seg.nrrd, a labelmap, STL meshes and/or a PNG."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FossilSegmentError
from ._progress import progress_bar
from ._uncertainty import add_uncertainty_options, check_uncertainty_output, write_uncertainty_from_args

if TYPE_CHECKING:
    from ..roi import Box
    from ..volume import Volume

log = logging.getLogger(__name__)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs a model."""
    p.add_argument("--model", default=None, metavar="NAME|DIR",
                   help="bundled model name or model folder (default: the bundled default model)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--batch-size", type=int, default=None, help="slices per batch (default: chosen for the device)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: bf16 on GPUs and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32")
    p.add_argument("--backend", default="auto", choices=["auto", "eager", "compiled", "int8"],
                   help="auto: torch.compile for large CPU jobs in bf16 when a C++ compiler exists, else eager; "
                        "int8: quantized, CPU only, needs torchao (opt-in)")
    p.add_argument("--min-island", type=int, default=64, metavar="VOXELS",
                   help="remove connected pieces smaller than this (default 64); every larger piece is kept")
    p.add_argument("--no-fill-holes", action="store_true", help="do not fill cavities enclosed inside bone")


def add_mesh_options(p: argparse.ArgumentParser) -> None:
    """Mesh options shared by ``segment`` and ``batch`` (Slicer's defaults)."""
    p.add_argument("--mesh-format", action="append", default=None, metavar="stl|ply|obj",
                   help="mesh file format(s) for --stl: repeat or give a comma list (default stl)")
    p.add_argument("--mesh-coordinates", default="LPS", type=str.upper, choices=["LPS", "RAS"],
                   help="mesh coordinate system (default LPS, as Slicer writes STL)")
    p.add_argument("--smoothing", type=float, default=0.5, metavar="F",
                   help="mesh smoothing factor 0..1 (default 0.5, Slicer's default)")
    p.add_argument("--decimation", type=float, default=0.0, metavar="F",
                   help="fraction 0..1 of triangles to remove (default 0: none)")
    p.add_argument("--max-mesh-triangles", type=int, default=None, metavar="N",
                   help="refuse (write nothing) when a mesh would have more than N triangles")


def mesh_options(args: argparse.Namespace):
    """The MeshOptions for the mesh command-line options (validated)."""
    from ..io.mesh_io import MeshOptions, parse_formats

    return MeshOptions(formats=parse_formats(args.mesh_format), coordinates=args.mesh_coordinates,
                       smoothing=args.smoothing, decimation=args.decimation, max_triangles=args.max_mesh_triangles)


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
    p.add_argument("-o", "--output", type=Path, default=None, metavar="OUT.seg.nrrd",
                   help="Slicer segmentation file (default when no other output is given: INPUT name + .seg.nrrd "
                        "in the current folder)")
    p.add_argument("--labelmap", type=Path, default=None, metavar="OUT.nrrd",
                   help="uint8 labelmap in the input's exact geometry (.nrrd, .nii.gz, .mha)")
    p.add_argument("--stl", type=Path, default=None, metavar="DIR",
                   help="folder for one mesh per segment (STL unless --mesh-format), in mm, LPS coordinates unless "
                        "--mesh-coordinates RAS, with a report per mesh and provenance.json")
    p.add_argument("--overlay", type=Path, default=None, metavar="PNG", help="PNG montage of slices with outlines")
    p.add_argument("--qc", type=Path, default=None, metavar="DIR",
                   help="folder for quality-control pictures: montage.png (slices) and snapshot.png (3D meshes)")
    p.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("SI", "SJ", "SK"),
                   help="voxel spacing in mm for image stacks without spacing metadata")
    p.add_argument("--slices", default=None, metavar="START:STOP", help="segment only these axial slices")
    add_roi_options(p)
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    add_model_options(p)
    add_mesh_options(p)
    add_uncertainty_options(p)
    p.set_defaults(func=run)


def default_output(input_path: Path) -> Path:
    """``scan.nii.gz`` → ``./scan.seg.nrrd``; a folder ``slices/`` → ``./slices.seg.nrrd``."""
    name = input_path.resolve().name
    for suffix in (".nii.gz", ".seg.nrrd", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd", ".tiff", ".tif", ".npy"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return Path.cwd() / f"{name}.seg.nrrd"


def predict_options(args: argparse.Namespace) -> dict:
    """Predictor.predict_labels keyword arguments from the shared model options."""
    from ..inference.postprocess import PostprocessOptions

    return {"postprocess": PostprocessOptions(min_island_voxels=args.min_island, fill_holes=not args.no_fill_holes)}


def load_segmenter(args: argparse.Namespace):
    """The Predictor for ``--model/--device/--batch-size/--precision/--backend`` (loaded once)."""
    from ..inference.predictor import Predictor

    return Predictor.load(args.model, device=args.device, batch_size=args.batch_size, precision=args.precision,
                          backend=getattr(args, "backend", "auto"))


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
                  "min_island_voxels": args.min_island, "fill_holes": not args.no_fill_holes,
                  "slices": list(slice_range) if slice_range else None, **roi_record}
    where = {"roi": roi} if roi is not None else {"slice_range": slice_range}  # the ROI holds --slices too
    with progress_bar("segmenting") as progress, progress_bar("cleaning up", percent=True) as cleanup:
        record = segment_and_write(volume, segmenter, outputs, parameters, progress=progress,
                                   cleanup_progress=cleanup, **where, **predict_options(args))
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
    for note in record.notes:
        print(note)
    for path in record.written:
        print(f"wrote {path}")
    from ..roi import region_box

    write_uncertainty_from_args(args, segmenter, volume, roi or region_box(volume.shape, slice_range))
    return 0
