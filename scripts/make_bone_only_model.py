"""Write a copy of a model folder without some output classes (e.g. a class it never learnt).

    python scripts/make_bone_only_model.py --model Resources/Models/fossil-bone-v2 --drop Tooth \
        --name fossil-bone-v2.1 --card MODEL_CARD.md --out Resources/Models/fossil-bone-v2.1

The final conv's rows for the dropped classes are removed (see fossilsegment_engine.models.drop_classes);
everything else, provenance included, is kept, and the parent's weights hash is recorded.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from fossilsegment_engine.models import load_model, model_hash, save_model
from fossilsegment_engine.models.drop_classes import drop_classes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model folder or bundled name")
    p.add_argument("--drop", nargs="+", required=True, help="class names to drop (the last classes)")
    p.add_argument("--name", required=True, help="name of the new model")
    p.add_argument("--card", type=Path, help="MODEL_CARD.md to put in the new folder")
    p.add_argument("--out", type=Path, required=True, help="new model folder (must not exist)")
    args = p.parse_args()
    model, config = load_model(args.model)
    new_model, new_config = drop_classes(model, config, args.drop)
    provenance = dict(new_config.provenance)
    provenance["derived_from"] = {"name": config.name, "weights_sha256": model_hash(args.model),
                                  "dropped_classes": list(args.drop),
                                  "command": "python scripts/make_bone_only_model.py --model "
                                             f"{args.model} --drop {' '.join(args.drop)} --name {args.name}"}
    provenance.pop("created", None)
    new_config = dataclasses.replace(new_config, name=args.name, provenance=provenance)
    extra = {"MODEL_CARD.md": args.card.read_text(encoding="utf-8")} if args.card else None
    print(f"wrote {save_model(new_model, new_config, args.out, extra_files=extra)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
