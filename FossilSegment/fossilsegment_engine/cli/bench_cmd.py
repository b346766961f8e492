"""``fossilsegment bench``: inference speed of a model per backend/precision mode against a naive fp32 loop."""

from __future__ import annotations

import argparse

from ..errors import FossilSegmentError
from ._progress import progress_bar
from .options import (add_batch_size_option, add_device_option, add_force_option, add_model_option, add_output_option,
                      add_threads_option)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="measure segmentation speed (slices/s, voxels/s, peak memory) per mode",
        description="Segment the same slices of a realistic input (the demo scan mirrored to SIZE x SIZE) with "
                    "a naive fp32 model.eval() loop and with each mode, in the same run, and print slices/s, "
                    "voxels/s, peak memory, the speed-up over the naive loop, agreement with it, and which mode "
                    "'auto' picks. Modes: eager-fp32, eager-bf16, eager-fp16, compiled-fp32, compiled-bf16, "
                    "compiled-fp16, int8-fp32, int8-bf16 (CPU, needs torchao), auto (what segment runs by default "
                    "for this job size, its int8 check included) "
                    "(short: fp32, bf16, fp16, compiled, int8).")
    add_model_option(p)
    add_device_option(p)
    p.add_argument("--size", type=int, default=512, metavar="PIXELS", help="slice size in pixels")
    p.add_argument("--slices", type=int, default=16, metavar="N", help="slices per timed run")
    add_batch_size_option(p)
    p.add_argument("--modes", nargs="+", default=None, metavar="MODE",
                   help="modes to time (default: eager-fp32, eager-bf16, compiled-bf16 where a compiler exists, "
                        "int8-bf16 on a CPU with torchao)")
    p.add_argument("--repeat", type=int, default=2, metavar="R", help="timed rounds; each mode keeps its best")
    add_threads_option(p)
    add_output_option(p, metavar="OUT.json", help="also write the results as JSON")
    add_force_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..atomic import atomic_path, check_can_write
    from ..inference.benchmark import format_table, run_benchmark

    if args.output is not None:
        check_can_write(args.output, args.force)  # before the slow part
    if args.threads is not None:
        if args.threads < 1:
            raise FossilSegmentError(f"--threads must be ≥ 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    with progress_bar("benchmarking") as progress:
        result = run_benchmark(model=args.model, device=args.device, size=args.size, slices=args.slices,
                               batch_size=args.batch_size, modes=args.modes, repeat=args.repeat, progress=progress)
    print(format_table(result))
    if args.output is not None:
        with atomic_path(args.output, args.force) as tmp:
            tmp.write_text(result.to_json() + "\n")
        print(f"wrote {args.output}")
    return 0
