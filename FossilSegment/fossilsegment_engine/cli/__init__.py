"""The ``fossilsegment`` command line. Each sub-command lives in its own ``*_cmd.py`` module
exposing ``add_parser(subparsers)`` (which sets ``func``) and ``run(args) -> int``; options shared by several
commands are declared once in :mod:`.options`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from .. import __version__
from ..errors import Cancelled, FossilSegmentError
from . import _progress
from .options import Parser, add_progress_option

#: sub-command modules, in help order
COMMANDS = ("segment", "batch", "phantom", "demo", "train", "evaluate", "tune-threshold", "finetune", "learn")


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every available sub-command."""
    parser = Parser(
        prog="fossilsegment",
        description="Segment fossil bone from rock matrix in CT and micro-CT scans.",
    )
    parser.add_argument("--version", action="version", version=f"fossilsegment {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    add_progress_option(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module_name = f"{__name__}.{name.replace('-', '_')}_cmd"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a command not written yet
            if exc.name == module_name:
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns 0 on success, 2 on a user error, 130 when cancelled."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    _progress.set_mode(args.progress)
    try:
        return int(args.func(args) or 0)
    except FossilSegmentError as exc:
        _report(f"{exc}", "error")
        return 2
    except (Cancelled, KeyboardInterrupt):
        _report("cancelled; nothing was written", "cancelled")
        return 130


def _report(message: str, kind: str) -> None:
    """The one-line outcome on stderr, and as ``{kind: message}`` on stdout in ``--progress jsonl`` mode."""
    print(f"fossilsegment: {'error: ' if kind == 'error' else ''}{message}", file=sys.stderr)
    if _progress.json_mode():
        _progress.emit({kind: message})


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
