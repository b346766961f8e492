"""``fossilsegment batch``: segment many scans (locally or on a Ray cluster) into one folder per scan."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ._progress import progress_bar
from .options import (add_cleanup_options, add_force_option, add_inference_options, add_mesh_options,
                      add_output_option, mesh_options)

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch", help="segment many scans into one folder per scan (resumable; optionally on a Ray cluster)",
        description="Segment each INPUT (any format `segment` reads) into OUTDIR/<scan>/ with scan.seg.nrrd, "
                    "labelmap.nrrd, stl/ (meshes + reports + provenance.json), qc/ (montage.png, snapshot.png), "
                    "provenance.json and done.json (written last). Scans already done are skipped; a failing scan "
                    "is reported and the rest go on; OUTDIR/summary.csv lists every scan. Exit 1 if any scan failed.")
    p.add_argument("inputs", type=Path, nargs="+", metavar="INPUT")
    add_output_option(p, required=True, metavar="OUTDIR", help="output folder, one sub-folder per scan")
    p.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                   help="run one task per scan on a Ray cluster: auto (the cluster this machine belongs to), local "
                        "(start one here) or an address (host:6379, ray://host:10001); needs a shared file system")
    add_force_option(p, help="redo scans whose outputs are already complete (without it, they are skipped)")
    add_inference_options(p)
    add_cleanup_options(p)
    add_mesh_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..batch import BatchOptions, run_batch

    options = BatchOptions(model=args.model, device=args.device, batch_size=args.batch_size,
                           precision=args.precision, backend=args.backend, thorough=args.thorough,
                           min_island_voxels=args.min_island, fill_holes=not args.no_fill_holes,
                           mesh=mesh_options(args), force=args.force)
    with progress_bar("scans", unit="scan") as progress:
        results = run_batch(args.inputs, args.output, options, ray_address=args.ray, use_ray=args.ray is not None,
                            progress=progress)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    for r in results:
        if r.status == "failed":
            print(f"FAILED {r.input}: {r.error}")
    print(f"{counts['ok']} segmented, {counts['skipped']} skipped (done earlier), {counts['failed']} failed; "
          f"summary: {Path(args.output) / 'summary.csv'}")
    return 1 if counts["failed"] else 0
