"""Write the weighted mean of several models fine-tuned from one parent (a "model soup") as a new model folder.

    python scripts/average_models.py --models fossil-bone-v2.1 RUN_A RUN_B --name fossil-bone-v3 \
        --card MODEL_CARD.md --out Resources/Models/fossil-bone-v3

Equal weights unless ``--weights`` is given. The ingredients' names, weights hashes and training commands go
into the new config's provenance (see fossilsegment_engine.models.average).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from fossilsegment_engine.atomic import check_can_write
from fossilsegment_engine.errors import FossilSegmentError
from fossilsegment_engine.models import load_model, model_hash, save_model
from fossilsegment_engine.models.average import average_models


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", required=True, help="model folders or bundled names (two or more)")
    p.add_argument("--weights", nargs="+", type=float, help="one positive weight per model (default: equal)")
    p.add_argument("--name", required=True, help="name of the new model")
    p.add_argument("--card", type=Path, help="MODEL_CARD.md to put in the new folder")
    p.add_argument("--out", type=Path, required=True, help="new model folder (must not exist)")
    args = p.parse_args(argv)
    try:
        check_can_write(args.out, force=False)  # refuse before the work, not after
        loaded = [load_model(m) for m in args.models]
        model, config = average_models(loaded, args.weights)
        weights = args.weights or [1.0] * len(loaded)
        ingredients = [
            {"name": c.name, "folder": str(m), "weights_sha256": model_hash(m), "weight": w,
             "training_command": c.provenance.get("training_command")}
            for m, (_, c), w in zip(args.models, loaded, weights)
        ]
        command = "python scripts/average_models.py " + shlex.join(
            ["--models", *map(str, args.models), *(["--weights", *map(str, args.weights)] if args.weights else []),
             "--name", args.name])
        provenance = {"averaged_from": ingredients, "command": command}
        config = dataclasses.replace(config, name=args.name, provenance=provenance)
        extra = {"MODEL_CARD.md": args.card.read_text(encoding="utf-8")} if args.card else None
        print(f"wrote {save_model(model, config, args.out, extra_files=extra)}")
    except (FossilSegmentError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
