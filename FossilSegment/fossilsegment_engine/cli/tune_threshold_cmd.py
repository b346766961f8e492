"""``fossilsegment tune-threshold``: tune how readily a model calls voxels fossil, on labelled validation scans."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ._progress import progress_bar
from .options import add_force_option, add_inference_options, add_output_option, load_segmenter


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune-threshold", help="tune a model's fossil/matrix threshold on labelled scans",
        description="Predict labelled specimens once, score a range of offsets added to the fossil classes' "
                    "logits (slice-wise mean Dice of any fossil class after the usual clean-up), and write a "
                    "copy of the model with the best offset folded into its output layer. Use validation "
                    "scans, never your test scans.")
    p.add_argument("--data", type=Path, nargs="+", required=True, metavar="DIR",
                   help="specimen folders (volume.* + labels.*) or folders of them")
    p.add_argument("--validation-split", action="store_true",
                   help="use only the specimens the model's training run validated on (named in its provenance)")
    p.add_argument("--offsets", default=None, metavar="B1,B2,...",
                   help="logit offsets to try (default: -2 to 2 in steps of 0.25); write --offsets=-1,0,1 when the "
                        "first is negative")
    add_output_option(p, required=True, metavar="MODELDIR", help="tuned model folder to write")
    p.add_argument("--name", default=None, help="model name (default: the MODELDIR folder name)")
    add_force_option(p)
    add_inference_options(p, backend="eager", thorough=False)  # the offset applies to each pass's logits
    p.set_defaults(func=run)


def _offsets(text: str | None) -> tuple[float, ...]:
    from ..errors import InputError
    from ..training.calibrate import DEFAULT_OFFSETS

    if text is None:
        return DEFAULT_OFFSETS
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise InputError(f"--offsets takes comma-separated numbers, got {text!r}") from exc
    if not values or not all(abs(v) <= 10 for v in values):
        raise InputError(f"--offsets: give one or more numbers between -10 and 10, got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    from ..atomic import check_can_write
    from ..errors import InputError
    from ..models import ModelConfig, load_model, model_hash, resolve_model_dir, save_model
    from ..training.calibrate import calibrate, with_foreground_bias

    offsets = _offsets(args.offsets)
    check_can_write(args.output, args.force)
    folder = resolve_model_dir(args.model)
    segmenter = load_segmenter(argparse.Namespace(**{**vars(args), "model": folder}))
    config = segmenter.config
    names = None
    if args.validation_split:
        names = config.provenance.get("training", {}).get("validation_specimens") or None
        if not names:
            raise InputError(f"{config.name} names no validation specimens in its provenance; leave out "
                             "--validation-split and pass validation scans with --data")
    with progress_bar("tuning the threshold", unit="specimen") as progress:
        result = calibrate(segmenter, args.data, names, offsets, progress=progress)
    for b, s in result.scores.items():
        print(f"offset {b:+.2f}: fossil mean Dice {s:.4f}{'  <- chosen' if b == result.offset else ''}")
    module = with_foreground_bias(load_model(folder)[0], result.offset)  # a clean fp32 copy on the CPU
    provenance = {**config.provenance, "calibration": {
        **result.to_json(), "parent": {"name": config.name, "weights_sha256": config.weights_sha256 or model_hash(folder)},
        "command": "fossilsegment " + " ".join(shlex.quote(a) for a in sys.argv[1:])}}
    out_config = ModelConfig.from_dict({**config.to_dict(), "name": args.name or Path(args.output).name,
                                        "provenance": provenance, "weights_sha256": None})
    save_model(module, out_config, args.output, force=args.force)
    print(f"tuned model (offset {result.offset:+.2f}) written to {args.output}")
    return 0
