#!/usr/bin/env python
"""Throw-away experiment (issue 14): score per-scan self-adaptation and hysteresis arms on cached v2.1 bone
probabilities (scripts/self_adapt_cache.py); results in docs/benchmarks/self_adapt.md.

Metric = ``fossilsegment evaluate``'s (training.metrics.class_scores, slice-wise bone mean Dice, pooled per family
and over all specimens); every arm ends with the engine's default clean-up (postprocess), as ``evaluate`` does.
Arms: ``shipped`` (the cached labels = evaluate's), ``otsu`` (evaluate's baseline), ``hyst3d_H`` / ``hyst2d_H``
(skimage apply_hysteresis_threshold(prob, 0.5, H), in 3D / per slice), ``pl_F:LO:HI:D:S_A``: a per-scan
HistGradientBoosting classifier (the few-shot learner's) trained on ``--voxels`` pseudo-labelled voxels
(prob >= HI -> bone; prob <= LO and >= D voxels from prob > 0.5 -> matrix; S: u = drawn uniformly, b = balanced),
features F: img = finetune.features.image_features, imgp = + in-plane Gaussian (sigma 2 px) of the probability;
applied A: whole = its own answer everywhere, unsure = only where LO < prob < HI, avg = mean with prob > 0.5.
Fewer than 50 voxels in a pseudo-label class -> the arm falls back to the network's probability.

    python scripts/self_adapt_phantoms.py --json ARMS.json [--configs ...] [--highs ...] [--seed 0]
"""
import argparse, json, time
from pathlib import Path
import numpy as np
from scipy import ndimage
from skimage.filters import apply_hysteresis_threshold
from fossilsegment_engine.finetune.features import image_features
from fossilsegment_engine.finetune.learn import _classifier
from fossilsegment_engine.inference.normalize import apply_intensity_range, volume_intensity_range
from fossilsegment_engine.inference.postprocess import PostprocessOptions, postprocess
from fossilsegment_engine.models.store import load_model
from fossilsegment_engine.training.baselines import otsu_baseline
from fossilsegment_engine.training.data import find_specimens, read_pair
from fossilsegment_engine.training.metrics import class_scores

CLASSES = [{"value": 0, "name": "Background"}, {"value": 1, "name": "Bone"}]


def clean(mask):
    return postprocess(mask.astype(np.uint8), [1], PostprocessOptions())


def sample(eligible_bone, eligible_matrix, n, rng, balanced):
    b, m = np.flatnonzero(eligible_bone.ravel()), np.flatnonzero(eligible_matrix.ravel())
    if balanced:
        nb = min(len(b), n // 2); nm = min(len(m), n - nb)
    else:
        tot = len(b) + len(m); nb = min(len(b), int(round(n * len(b) / max(tot, 1)))); nm = min(len(m), n - nb)
    return rng.choice(b, nb, replace=False), rng.choice(m, nm, replace=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=Path("/tmp/adapt14/cache"))
    ap.add_argument("--data", nargs="+", default=["/work/data_p3/test_seen", "/work/data_p3/test_heldout"])
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--voxels", type=int, default=40000)
    ap.add_argument("--configs", default="img:0.1:0.9:3:u,img:0.02:0.98:3:u,img:0.3:0.7:3:u,"
                                         "imgp:0.1:0.9:3:u,imgp:0.02:0.98:3:u,img:0.1:0.9:3:b")
    ap.add_argument("--highs", default="0.8,0.9,0.95,0.99")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    _, config = load_model("fossil-bone-v2.1", device="cpu")
    rows = []
    for d in args.data:
        for p in find_specimens([d]):
            if args.only and p.name not in args.only:
                continue
            c = np.load(args.cache / f"{p.name}.npz")
            vol, lab = read_pair(p, 2, extra_as_background=True)
            truth, arr = lab.array, vol.array
            prob = c["prob"].astype(np.float32) / 255.0
            fam = json.loads((p.folder / "phantom.json").read_text())["family"]
            preds, secs = {"shipped": c["shipped"], "otsu": otsu_baseline(arr)}, {}
            raw = prob > 0.5
            preds["raw_cleaned"] = clean(raw)
            for h in [float(x) for x in args.highs.split(",")]:
                preds[f"hyst3d_{h}"] = clean(apply_hysteresis_threshold(prob, 0.5, h))
                preds[f"hyst2d_{h}"] = clean(np.stack([apply_hysteresis_threshold(s, 0.5, h) for s in prob]))
            t0 = time.monotonic()
            lo_i, hi_i = volume_intensity_range(arr, config.normalization)
            feats = image_features(apply_intensity_range(np.asarray(arr), lo_i, hi_i))
            sprob = ndimage.gaussian_filter(prob, (0, 2, 2))[..., None]
            secs["features"] = time.monotonic() - t0
            dist = ndimage.distance_transform_edt(~raw)
            rng = np.random.default_rng(args.seed)
            for cfg in args.configs.split(","):
                fs, lo, hi, dpx, samp = cfg.split(":"); lo, hi, dpx = float(lo), float(hi), float(dpx)
                X = feats if fs == "img" else np.concatenate([feats, sprob], axis=-1)
                flat = X.reshape(-1, X.shape[-1])
                eb, em = prob >= hi, (prob <= lo) & (dist >= dpx)
                t0 = time.monotonic()
                ib, im = sample(eb, em, args.voxels, rng, samp == "b")
                if len(ib) < 50 or len(im) < 50:
                    q = prob.copy()
                else:
                    idx = np.concatenate([ib, im]); y = np.r_[np.ones(len(ib)), np.zeros(len(im))].astype(np.uint8)
                    clf = _classifier(args.seed).fit(flat[idx], y)
                    q = np.empty(flat.shape[0], np.float32)
                    for s in range(0, len(q), 500_000):
                        q[s:s + 500_000] = clf.predict_proba(flat[s:s + 500_000])[:, 1]
                    q = q.reshape(prob.shape)
                secs[cfg] = time.monotonic() - t0
                unsure = (prob > lo) & (prob < hi)
                preds[f"pl_{cfg}_whole"] = clean(q > 0.5)
                preds[f"pl_{cfg}_unsure"] = clean(np.where(unsure, q > 0.5, raw))
                preds[f"pl_{cfg}_avg"] = clean((q + prob) / 2 > 0.5)
            row = {"name": p.name, "family": fam, "truth": int((truth == 1).sum()), "seconds": secs, "arms": {}}
            for k, v in preds.items():
                s = class_scores(truth, v, CLASSES)["Bone"]
                row["arms"][k] = {"dice": [x.tolist() for x in s.dice], "inter": s.inter, "truth": s.truth,
                                  "pred": s.pred}
            rows.append(row)
            print(p.name, fam, {k: round(float(np.concatenate(v["dice"]).mean()) if v["dice"] else 0, 3)
                                for k, v in row["arms"].items() if k in ("shipped", "raw_cleaned", "otsu")}, 
                  {k: round(v, 1) for k, v in secs.items()}, flush=True)
            args.json.write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
