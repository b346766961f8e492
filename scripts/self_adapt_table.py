#!/usr/bin/env python
"""Throw-away (issue 14): table of self_adapt_phantoms.py's JSON — bone mean Dice (slice-wise, pooled as
``evaluate`` pools it) over all specimens and per family, and predicted / true bone volume.

    python scripts/self_adapt_table.py ARMS.json [--summary SUMMARY.json] [--arms NAME ...]
"""
import argparse
import json

import numpy as np


def mean_dice(rows: list, arm: str) -> float:
    d = [np.concatenate(r["arms"][arm]["dice"]) for r in rows if r["arms"][arm]["dice"]]
    return float(np.concatenate(d).mean()) if d else float("nan")


def volume_ratio(rows: list, arm: str) -> float:
    return sum(r["arms"][arm]["pred"] for r in rows) / max(1, sum(r["arms"][arm]["truth"] for r in rows))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("arms_json")
    ap.add_argument("--summary", default=None, help="write the table's figures (and per specimen) as JSON here")
    ap.add_argument("--arms", nargs="*", default=None, help="only these arms")
    args = ap.parse_args()
    rows = json.load(open(args.arms_json))
    fams = sorted({r["family"] for r in rows})
    arms = args.arms or list(rows[0]["arms"])
    by_fam = {f: [r for r in rows if r["family"] == f] for f in fams}
    print("| arm | all 16 | " + " | ".join(fams) + " | predicted / true volume (all) | per family |")
    print("|---|" + "---:|" * (len(fams) + 3))
    summary = {}
    for a in arms:
        s = {"all": mean_dice(rows, a), **{f: mean_dice(by_fam[f], a) for f in fams},
             "volume_ratio": volume_ratio(rows, a), "volume_ratio_by_family": {f: volume_ratio(by_fam[f], a) for f in fams},
             "by_specimen": {r["name"]: mean_dice([r], a) for r in rows}}
        summary[a] = s
        cells = [f"{s['all']:.3f}"] + [f"{s[f]:.3f}" for f in fams]
        rat = " ".join(f"{s['volume_ratio_by_family'][f]:.2f}" for f in fams)
        print(f"| {a} | " + " | ".join(cells) + f" | {s['volume_ratio']:.2f} | {rat} |")
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
