#!/usr/bin/env python
"""Throw-away experiment (issue 14): speckle_report.py's figures (pieces < 30 px, foreground, bone kept) for the
self-adaptation / hysteresis arms of self_adapt_phantoms.py (same arm names, config ``F:LO:HI:D``, uniform
sampling) on the real scans; results in docs/benchmarks/self_adapt.md.

    python scripts/self_adapt_real.py --qim3d qim3d-1.5.3-py3-none-any.whl --json REAL.json [--configs ...]
"""
import argparse, json, sys, time
from pathlib import Path
import numpy as np
from scipy import ndimage
from skimage.filters import apply_hysteresis_threshold

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bone_proxy import bone_proxy  # noqa: E402
from speckle_report import _scans, measure  # noqa: E402
from real_scans import REAL  # noqa: E402
from fossilsegment_engine.finetune.features import image_features  # noqa: E402
from fossilsegment_engine.finetune.learn import _classifier  # noqa: E402
from fossilsegment_engine.inference.normalize import apply_intensity_range, volume_intensity_range  # noqa: E402
from fossilsegment_engine.inference.postprocess import PostprocessOptions, postprocess  # noqa: E402
from fossilsegment_engine.inference.predictor import Predictor  # noqa: E402


def clean(mask):
    return postprocess(mask.astype(np.uint8), [1], PostprocessOptions())


def pseudo(prob, normalised, lo, hi, dpx, with_prob, n=40000, seed=0):
    feats = image_features(normalised)
    if with_prob:
        feats = np.concatenate([feats, ndimage.gaussian_filter(prob, (0, 2, 2))[..., None]], axis=-1)
    flat = feats.reshape(-1, feats.shape[-1])
    raw = prob > 0.5
    eb, em = prob >= hi, (prob <= lo) & (ndimage.distance_transform_edt(~raw) >= dpx)
    b, m = np.flatnonzero(eb.ravel()), np.flatnonzero(em.ravel())
    if len(b) < 50 or len(m) < 50:
        return prob
    rng = np.random.default_rng(seed)
    nb = min(len(b), int(round(n * len(b) / (len(b) + len(m))))); nm = min(len(m), n - nb)
    idx = np.concatenate([rng.choice(b, nb, replace=False), rng.choice(m, nm, replace=False)])
    y = np.r_[np.ones(nb), np.zeros(nm)].astype(np.uint8)
    clf = _classifier(seed).fit(flat[idx], y)
    q = np.empty(flat.shape[0], np.float32)
    for s in range(0, len(q), 500_000):
        q[s:s + 500_000] = clf.predict_proba(flat[s:s + 500_000])[:, 1]
    return q.reshape(prob.shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", type=Path, default=REAL)
    ap.add_argument("--qim3d", type=Path, default=None)
    ap.add_argument("--only", nargs="+", default=None)
    ap.add_argument("--configs", default="imgp:0.02:0.98:3")
    ap.add_argument("--highs", default="0.95,0.99")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    scans = _scans(args)
    seg = Predictor.load("fossil-bone-v2.1", device="cpu")
    out = []
    for scan in scans:
        k0, k1 = scan.slices or (0, scan.volume.shape[0])
        t0 = time.monotonic()
        pred = seg.predict_probabilities(scan.volume, slice_range=scan.slices)
        t_net = time.monotonic() - t0
        prob = pred.probabilities[1].array[k0:k1].astype(np.float32) / 255.0
        arr = np.asarray(scan.volume.array)
        lo_i, hi_i = volume_intensity_range(arr, seg.config.normalization)
        normalised = apply_intensity_range(arr[k0:k1], lo_i, hi_i)
        proxy = bone_proxy(arr[k0:k1], scan.proxy) if scan.proxy else None
        arms = {"shipped": pred.labels.array[k0:k1]}
        for h in [float(x) for x in args.highs.split(",")]:
            arms[f"hyst3d_{h}"] = clean(apply_hysteresis_threshold(prob, 0.5, h))
            arms[f"hyst2d_{h}"] = clean(np.stack([apply_hysteresis_threshold(s, 0.5, h) for s in prob]))
        secs = {"network": t_net}
        for cfg in args.configs.split(","):
            fs, lo, hi, dpx = cfg.split(":")
            t0 = time.monotonic()
            q = pseudo(prob, normalised, float(lo), float(hi), float(dpx), fs == "imgp")
            secs[cfg] = time.monotonic() - t0
            unsure = (prob > float(lo)) & (prob < float(hi))
            arms[f"pl_{cfg}_whole"] = clean(q > 0.5)
            arms[f"pl_{cfg}_unsure"] = clean(np.where(unsure, q > 0.5, prob > 0.5))
            arms[f"pl_{cfg}_avg"] = clean((q + prob) / 2 > 0.5)
        rows = {k: measure(scan, v, proxy) for k, v in arms.items()}
        out.append({"name": scan.name, "content": scan.content, "seconds": secs, "arms": rows})
        for k, r in rows.items():
            kept = "-" if r["bone_kept"] is None else f"{r['bone_kept']:.3f}"
            print(f"{scan.name} {k}: pieces {r['pieces']} fg {r['foreground_fraction']:.4f} kept {kept}", flush=True)
        print(scan.name, {k: round(v, 1) for k, v in secs.items()}, flush=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
