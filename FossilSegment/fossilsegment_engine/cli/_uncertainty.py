"""``segment --uncertainty OUT.nrrd``: the option and the call (kept out of segment_cmd.py, issue 5)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

log = logging.getLogger(__name__)


def add_uncertainty_options(p: argparse.ArgumentParser) -> None:
    """``--uncertainty OUT.nrrd``, ``--uncertainty-method``, ``--uncertainty-uint8``."""
    from ..inference.uncertainty import DEFAULT_METHOD, METHODS

    p.add_argument("--uncertainty", default=None, metavar="OUT.nrrd",
                   help="also write a per-voxel uncertainty volume (float32 0..1, the input's geometry)")
    p.add_argument("--uncertainty-method", default=DEFAULT_METHOD, choices=METHODS,
                   help=f"tta: flips; views: axial/coronal/sagittal disagreement; softmax: one pass "
                        f"(default {DEFAULT_METHOD})")
    p.add_argument("--uncertainty-uint8", action="store_true", help="write it as uint8 0..255 instead of float32")


def check_uncertainty_output(args: argparse.Namespace) -> None:
    """Refuse an existing --uncertainty file (without --force) or a bad extension before the slow part."""
    if getattr(args, "uncertainty", None):
        from pathlib import Path

        from ..atomic import check_can_write
        from ..errors import OutputError
        from ..io.volume_io import WRITE_SUFFIXES

        name = Path(args.uncertainty).name.lower()
        if name.endswith(".seg.nrrd") or not name.endswith(WRITE_SUFFIXES):
            raise OutputError(f"--uncertainty {args.uncertainty}: use one of {', '.join(WRITE_SUFFIXES)}")
        check_can_write(args.uncertainty, args.force)


def write_uncertainty_from_args(args: argparse.Namespace, segmenter: Any, volume: Any, roi: Any = None) -> None:
    """Compute and write the uncertainty volume when ``--uncertainty`` was given; prints what it wrote.

    ``roi`` (a Box, from ``--roi``/``--roi-mm``/``--slices``): only that box is computed (0 outside it)."""
    if not getattr(args, "uncertainty", None):
        return
    from ..inference.uncertainty import slice_ranking, uncertainty_volume, write_uncertainty
    from ._progress import progress_bar

    check_uncertainty_output(args)
    with progress_bar(f"uncertainty ({args.uncertainty_method})") as progress:
        unc = uncertainty_volume(segmenter, volume, args.uncertainty_method, progress=progress, roi=roi)
    path = write_uncertainty(unc, args.uncertainty, force=args.force, scaled_uint8=args.uncertainty_uint8)
    top = [k for k, _ in slice_ranking(unc)[:5]]
    print(f"most uncertain axial slices: {', '.join(map(str, top))}")
    print(f"wrote {path}")
