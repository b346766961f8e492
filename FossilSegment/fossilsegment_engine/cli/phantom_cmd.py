"""``fossilsegment phantom -o OUTDIR``: write a synthetic fossil CT with exact labels."""

from __future__ import annotations

import argparse

from ..phantom import FAMILIES, SIZES, write
from .options import add_force_option, add_output_option


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``phantom`` sub-command."""
    p = subparsers.add_parser(
        "phantom",
        help="write a synthetic fossil CT volume with exact bone/tooth labels",
        description="Generate a synthetic fossil CT (volume.nrrd), its exact labels (labels.nrrd: "
                    "0 matrix/air, 1 bone, 2 tooth) and phantom.json (all parameters) into OUTDIR. "
                    "The same seed always gives the same files.",
    )
    add_output_option(p, required=True, metavar="OUTDIR", help="output folder (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="random seed, a non-negative integer")
    p.add_argument("--size", default="small", metavar="SIZE",
                   help="; ".join(f"{k} = {'x'.join(map(str, v))} (k,j,i)" for k, v in SIZES.items()))
    p.add_argument("--family", default=None, metavar="NAME",
                   help=f"shape family: {', '.join(FAMILIES)} (default: drawn from the seed)")
    p.add_argument("--no-teeth", dest="teeth", action="store_false", help="no tooth class (label 2)")
    add_force_option(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Generate and write the phantom; print what was written."""
    info = write(args.output, args.seed, size=args.size, family=args.family, teeth=args.teeth, force=args.force)
    shape = "x".join(str(n) for n in info["shape_kji"])
    spacing = ", ".join(f"{s:.4f}" for s in info["spacing"])
    print(f"phantom seed {info['seed']}: family {info['family']}, {shape} voxels (k,j,i), spacing ({spacing}) mm, "
          f"bone {100 * info['bone_fraction']:.2f} %, tooth {100 * info['tooth_fraction']:.2f} %")
    for name in info["files"]:
        print(f"wrote {args.output / name}")
    return 0
