"""The ``fossilsegment`` command line. Each sub-command lives in its own ``*_cmd.py`` module
exposing ``add_parser(subparsers)`` (which sets ``func``) and ``run(args) -> int``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from .. import __version__
from ..errors import Cancelled, FossilSegmentError

#: sub-command modules, in help order
COMMANDS = ("segment", "batch", "phantom", "demo", "train", "evaluate", "calibrate", "finetune", "learn", "bench")


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="fossilsegment",
        description="Segment fossil bone from rock matrix in CT and micro-CT scans.",
    )
    parser.add_argument("--version", action="version", version=f"fossilsegment {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f".{name}_cmd", __name__)
        except ModuleNotFoundError as exc:  # a command not written yet
            if exc.name == f"{__name__}.{name}_cmd":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns 0 on success, 2 on a user error, 130 when cancelled."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except FossilSegmentError as exc:
        print(f"fossilsegment: error: {exc}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("fossilsegment: cancelled; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
