#!/usr/bin/env python
"""Install a trained model folder as the bundled default model with provenance and a model card.

    python scripts/install_default_model.py --from MODELDIR --recipe DATA/recipe.json \
        [--report REPORT_DIR/report.json] [--real-slice-note TEXT] [--command CMD ...]

Writes Resources/Models/<name>/ (model.safetensors, config.json, MODEL_CARD.md) atomically; the config's
provenance gains the data recipe, the training commands and, with --report, the test figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from fossilsegment_engine.models import load_model, save_model

REPO = Path(__file__).resolve().parents[1]


def _f(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}"


def _row(title: str, summ: dict[str, Any], cls: str = "Bone") -> str:
    cells = []
    for m in ("model", "otsu", "region_growing"):
        s = summ.get(m, {}).get(cls) or {}
        cells.append(f"{_f(s.get('mean_dice'))} / {_f(s.get('volume_dice'))}")
    return f"| {title} | " + " | ".join(cells) + " |"


def model_card(config: Any, recipe: dict[str, Any], report: dict[str, Any] | None, commands: list[str],
               notes: list[str]) -> str:
    t = config.provenance.get("training", {})
    o = t.get("options", {})
    val = t.get("validation", {})
    lines = [
        f"# {config.name}", "",
        "Bone (and tooth) vs rock matrix in fossil CT, axial slice by slice (2.5D: "
        f"{config.context_slices} neighbouring slices in), after Yu et al. 2022. **Trained on synthetic phantoms "
        "only, on a shared 2-core CPU (see Training for how long): a working baseline, not a production model.**", "",
        "## Architecture", "",
        f"- `{config.describe_architecture()}` (random init, no ImageNet weights); classes "
        + ", ".join(f"{c['value']} {c['name']}" for c in config.classes) + ".",
        f"- Input: per-volume 0.5–99.5 percentile normalisation to [0, 1]; tiles {config.tile_size} px, overlap "
        f"{config.tile_overlap} px at inference.", "",
        "## Data", "",
        f"- Generator `{recipe.get('generator')}`, size {recipe.get('size')}, teeth {recipe.get('teeth')}. Command: "
        f"`{recipe.get('command')}` (deterministic).",
        f"- Train/validation: every phantom family except **{recipe.get('heldout_family')}**; seeds "
        f"{sorted(s['seed'] for s in recipe['specimens'] if s['split'] == 'train')}. Validation specimens (split by "
        f"specimen, seed {o.get('seed')}): {', '.join(t.get('validation_specimens', []))}.",
        f"- Test: unseen seeds of the same families "
        f"({sorted(s['seed'] for s in recipe['specimens'] if s['split'] == 'test_seen')}) and the whole held-out "
        f"family ({sorted(s['seed'] for s in recipe['specimens'] if s['split'] == 'test_heldout')}).",
        "- Slice rule: slices with ≥ 0.1 % foreground all used; blank slices (std < 0.01) dropped; matrix-only "
        "slices capped at 10 % of a specimen's training slices.", "",
        "## Training", "",
        *[f"    {c}" for c in commands], "",
        *([f"- The last command started from the weights of **{config.provenance['initialised_from']['name']}** "
           f"(SHA-256 `{config.provenance['initialised_from']['weights_sha256']}`), trained by the commands above it "
           "(`--init-from`: a fresh schedule, same architecture).", ""]
          if config.provenance.get("initialised_from") else []),
        f"- AdamW, peak lr {o.get('lr')}, warm-up + cosine, batch {o.get('batch_size')} crops of {o.get('crop')}², "
        f"{o.get('steps_per_epoch')} steps/epoch, Dice + cross-entropy, precision {t.get('precision')}, device "
        f"{t.get('device')}; best epoch {t.get('best_epoch')} by validation "
        f"{(o.get('select_class') or 'foreground-class') + ' '}mean Dice; wall time "
        f"{t.get('wall_seconds')} s for the last command.",
        f"- Validation (best epoch, {len(t.get('validation_specimens', []))} specimens, "
        f"{o.get('val_max_slices')} slices each): "
        + ", ".join(f"{k} mean Dice {_f(v.get('mean_dice'))} / volume Dice {_f(v.get('volume_dice'))}"
                    for k, v in val.items()) + ".", "",
    ]
    if report is not None:
        lines += ["## Test figures (bone: slice-wise mean Dice / volumetric Dice)", "",
                  "| Split | Model | Otsu | Region growing (truth seeds) |", "|---|---|---|---|"]
        for name, summ in report["by_data_dir"].items():
            lines.append(_row(Path(name).name, summ))
        lines.append(_row("all test specimens", report["overall"]))
        lines += ["", f"Evaluated {report['date']} on {report['device']}; full tables in BENCHMARKS.md.", ""]
    lines += ["## Known limits", "",
              "- Synthetic training data only; never checked against labelled real fossil scans.",
              "- Short CPU training: far from the paper's figures (mean Dice 0.894) and from the issue's target "
              "(0.95 on held-out phantoms); see BENCHMARKS.md for what it reaches.",
              "- Axial 2.5D: structures parallel to the slices and very thin plates are hardest; tooth is rare in "
              "the data and poorly learnt.", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--from", dest="src", type=Path, required=True)
    p.add_argument("--recipe", type=Path, required=True)
    p.add_argument("--report", type=Path, default=None)
    p.add_argument("--command", action="append", default=[], help="training commands, in order")
    p.add_argument("--note", action="append", default=[], help="extra known-limit lines")
    p.add_argument("--dest", type=Path, default=None)
    p.add_argument("--name", default=None, help="install under this model name (default: the model's own)")
    args = p.parse_args(argv)
    model, config = load_model(args.src)
    recipe = json.loads(args.recipe.read_text())
    report = json.loads(args.report.read_text()) if args.report else None
    commands = args.command or config.provenance.get("training", {}).get("commands") or \
        [config.provenance.get("training_command", "?")]
    prov = dict(config.provenance)
    prov["data"] = {k: v for k, v in recipe.items() if k != "specimens"}
    prov["data"]["seeds"] = {split: sorted(s["seed"] for s in recipe["specimens"] if s["split"] == split)
                             for split in ("train", "test_seen", "test_heldout")}
    prov["training_commands"] = commands
    if report is not None:
        prov["test"] = {"date": report["date"], "device": report["device"],
                        "bone": {Path(k).name: {m: v[m]["Bone"] for m in v} for k, v in report["by_data_dir"].items()}}
    config = dataclasses.replace(config, provenance=prov, weights_sha256=None, name=args.name or config.name)
    dest = args.dest or REPO / "Resources" / "Models" / config.name
    save_model(model, config, dest, force=True,
               extra_files={"MODEL_CARD.md": model_card(config, recipe, report, commands, args.note)})
    print(f"installed {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
