#!/usr/bin/env python
"""Benchmark issue 13: few annotated slices → segmentation of the rest, the new method against its peers.

For 1, 3, 5 and 10 evenly spaced annotated axial slices (spread over the slices holding bone), every method gets
the same volume and the same annotated slices and is scored over the *unannotated* slices (foreground = label > 0):

(a) the model unchanged; (b0) fine-tune + segment (``finetune_in_memory`` + ``Predictor``, the recipe to beat);
(b) the new method (``fossilsegment_engine.finetune.learn.learn_and_segment``, what ``fossilsegment learn`` runs);
(c) ITK morphological contour interpolation; (c2) signed-distance interpolation between annotated slices;
(d) Biomedisa smart interpolation (run with ``--biomedisa-python``, a separate venv); (e) a random forest on
scikit-image multiscale features, trained on the annotated slices' pixels.

Datasets: ``phantom:SEED`` (held-out family ``vertebra``, ``--size``) and ``real`` (the trabecular micro-CT stack;
its reference label is a classical pipeline, :func:`reference_label`, not a manual segmentation).

Each method runs in its own child process: "s" is the method's wall time inside the child (library imports
excluded), "peak MB" the child's peak resident memory (``ru_maxrss`` from ``wait4``: interpreter,
libraries and data included). Prints markdown tables; ``--json`` writes every figure.

    python scripts/bench_fewshot.py --datasets phantom:9000,phantom:9001,real --size medium --counts 1,3,5,10 \
        --biomedisa-python /work/biomedisa-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_finetune import annotated_slices, interpolate  # noqa: E402  (same folder; ITK contour interpolation)

REAL_STACK = Path("/work/shared/data/real/trabecular_bone_tiff_stack")
METHODS = ("a", "b0", "b", "c", "c2", "d", "e")
LABELS = {"a": "(a) model unchanged", "b0": "(b0) fine-tune + segment", "b": "(b) learn_and_segment (new)",
          "c": "(c) ITK contour interpolation", "c2": "(c2) signed-distance interpolation",
          "d": "(d) Biomedisa smart interpolation", "e": "(e) random forest (multiscale features)"}


class Unavailable(Exception):
    """A method that cannot run here (e.g. the engine function does not exist yet)."""


# ---------------------------------------------------------------- scoring


def scores_unannotated(truth: np.ndarray, pred: np.ndarray, annotated: list[int]) -> tuple[float, float]:
    """(Dice, IoU) of foreground (label > 0) over the axial slices not in ``annotated``."""
    keep = np.ones(truth.shape[0], bool)
    keep[annotated] = False
    t, p = truth[keep] > 0, pred[keep] > 0
    inter, union = int(np.count_nonzero(t & p)), int(np.count_nonzero(t | p))
    total = int(t.sum() + p.sum())
    return (2.0 * inter / total if total else 1.0), (inter / union if union else 1.0)


# ---------------------------------------------------------------- reference label of the real stack


def reference_label(array: np.ndarray, min_voxels: int = 64) -> np.ndarray:
    """Classical bone label of a bone-in-air scan: Otsu threshold, then islands and holes < ``min_voxels`` removed."""
    import SimpleITK as sitk

    bone = sitk.OtsuThreshold(sitk.GetImageFromArray(array), 0, 1)  # above the threshold -> 1
    for value in (1, 0):  # drop small bone islands, then fill small air holes (6-connected components in 3D)
        mask = sitk.Equal(bone, value)
        kept = sitk.RelabelComponent(sitk.ConnectedComponent(mask), minimumObjectSize=min_voxels) > 0
        bone = kept if value == 1 else sitk.Not(kept)
    return sitk.GetArrayFromImage(bone).astype(np.uint8)


def write_qc_png(array: np.ndarray, label: np.ndarray, path: Path) -> None:
    """Four axial slices of the image with the reference label's outline in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = np.linspace(0, array.shape[0] - 1, 4).round().astype(int)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    for ax, k in zip(axes, ks):
        ax.imshow(array[k], cmap="gray")
        ax.contour(label[k], levels=[0.5], colors="red", linewidths=0.6)
        ax.set_title(f"slice {k}")
        ax.axis("off")
    fig.suptitle("trabecular_bone_tiff_stack: reference label (Otsu + islands/holes < 64 voxels removed), outline red")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


# ---------------------------------------------------------------- the methods (each runs in a child process)


def sdf_interpolate(sparse: np.ndarray, ks: list[int], spacing: tuple[float, float, float]) -> np.ndarray:
    """Linear blend of the signed distances of the two nearest annotated slices; nearest one copied beyond the ends."""
    from scipy import ndimage

    ks = sorted(ks)
    sampling = (spacing[1], spacing[0])  # (rows, columns) of a KJI slice; spacing is (i, j, k)
    big = float(np.hypot(sparse.shape[1] * sampling[0], sparse.shape[2] * sampling[1])) + 1.0

    def sdf(mask: np.ndarray) -> np.ndarray:  # negative inside, positive outside (mm in plane)
        if not mask.any():
            return np.full(mask.shape, big, np.float32)
        if mask.all():
            return np.full(mask.shape, -big, np.float32)
        out = ndimage.distance_transform_edt(~mask, sampling=sampling)
        inside = ndimage.distance_transform_edt(mask, sampling=sampling)
        return (out - inside).astype(np.float32)

    fields = {k: sdf(sparse[k] > 0) for k in ks}
    result = np.zeros(sparse.shape, np.uint8)
    for k in range(sparse.shape[0]):
        if k <= ks[0] or k >= ks[-1]:
            result[k] = fields[ks[0] if k <= ks[0] else ks[-1]] < 0
            continue
        j = int(np.searchsorted(ks, k))
        lo, hi = ks[j - 1], ks[j]
        w = (k - lo) / (hi - lo)
        result[k] = (1.0 - w) * fields[lo] + w * fields[hi] < 0
    return result


def random_forest(image: np.ndarray, sparse: np.ndarray, ks: list[int], max_samples: int = 60000,
                  seed: int = 0) -> np.ndarray:
    """Random forest on 2D multiscale features (intensity, edges, texture) trained on the annotated slices' pixels."""
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    lo, hi = np.percentile(image, [0.5, 99.5])
    norm = np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)

    def features(k: int) -> np.ndarray:
        f = multiscale_basic_features(norm[k], sigma_min=1, sigma_max=8, num_sigma=4)
        return f.reshape(-1, f.shape[-1])

    x = np.concatenate([features(k) for k in ks])
    y = np.concatenate([(sparse[k] > 0).ravel() for k in ks]).astype(np.uint8)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(y), size=min(max_samples, len(y)), replace=False)
    forest = RandomForestClassifier(n_estimators=50, max_depth=16, n_jobs=2, random_state=seed)
    forest.fit(x[pick], y[pick])
    out = np.zeros(image.shape, np.uint8)
    for k in range(image.shape[0]):
        out[k] = forest.predict(features(k)).reshape(image.shape[1:])
    return out


def learn_adapter(volume, labels, ks: list[int], args: argparse.Namespace) -> np.ndarray:
    """(b): the engine's few-shot method (``fossilsegment learn``) on the annotated axial slices ``ks``."""
    from fossilsegment_engine.finetune import annotations_from_labelmap
    from fossilsegment_engine.finetune.learn import LearnOptions, learn_and_segment

    extra = {} if args.max_steps is None else {"finetune_steps": args.max_steps}
    options = LearnOptions(max_minutes=args.max_minutes, device=args.device, precision=args.precision, **extra)
    annotations = annotations_from_labelmap(labels, [(0, k) for k in ks])
    return np.asarray(learn_and_segment(volume, annotations, model=args.model, options=options).labels.array)


def run_method(method: str, work: Path, ks: list[int], args: argparse.Namespace) -> np.ndarray:
    """Run one method on the data in ``work``; returns its labels (KJI, uint8)."""
    image = np.load(work / "image.npy")
    sparse = np.load(work / "sparse.npy")
    geometry = json.loads((work / "geometry.json").read_text())
    if method == "c":
        return interpolate(sparse, ks)
    if method == "c2":
        return sdf_interpolate(sparse, ks, tuple(geometry["spacing"]))
    if method == "e":
        return random_forest(image, sparse, ks)
    import torch

    torch.set_num_threads(args.threads)
    from fossilsegment_engine.volume import Volume

    volume = Volume(image, **geometry)
    labels = volume.with_array(sparse)
    if method == "b":
        return learn_adapter(volume, labels, ks, args)
    from fossilsegment_engine.inference.predictor import Predictor
    from fossilsegment_engine.models import load_model

    module, config = load_model(args.model)
    if method == "a":
        seg = Predictor.from_module(module, config, device=args.device, precision=args.precision)
        return seg.predict_labels(volume).array
    from fossilsegment_engine.finetune import FinetuneOptions, finetune_in_memory

    extra = {} if args.max_steps is None else {"max_steps": args.max_steps}
    res = finetune_in_memory(volume, labels, ks, (module, config),
                             FinetuneOptions(max_minutes=args.max_minutes, device=args.device, precision=args.precision,
                                             **extra))
    return Predictor.from_module(res.module, res.config, device=args.device,
                                 precision=args.precision).predict_labels(volume).array


def warm_imports(method: str) -> None:
    """Import what ``method`` needs before its clock starts (ITK loads its filters lazily, in seconds)."""
    if method == "c":
        import itk

        itk.MorphologicalContourInterpolator  # noqa: B018  (triggers the lazy load)
    elif method == "e":
        import skimage.feature  # noqa: F401
        import sklearn.ensemble  # noqa: F401
    elif method != "c2":
        import fossilsegment_engine.finetune  # noqa: F401
        import fossilsegment_engine.inference.predictor  # noqa: F401


def child_main(args: argparse.Namespace) -> int:
    """Entry of a child process: run ``args.child`` and save its labels to ``work/pred.npy``."""
    work = Path(args.work)
    ks = [int(k) for k in args.slices.split(",")]
    warm_imports(args.child)
    t0 = time.monotonic()
    try:
        pred = run_method(args.child, work, ks, args)
    except Unavailable as exc:
        print(exc)
        return 3
    seconds = time.monotonic() - t0
    np.save(work / "pred.npy", np.asarray(pred, dtype=np.uint8))
    print(json.dumps({"seconds": seconds}))
    return 0


# ---------------------------------------------------------------- the parent: datasets, children, tables


def load_dataset(name: str, size: str, qc_png: Path | None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(image, binary truth, geometry) of ``phantom:SEED`` or ``real``."""
    if name == "real":
        from fossilsegment_engine.io.volume_io import read_volume

        volume = read_volume(REAL_STACK)
        truth = reference_label(volume.array)
        if qc_png is not None:
            write_qc_png(volume.array, truth, qc_png)
    elif name.startswith("phantom:"):
        from fossilsegment_engine.phantom import generate

        volume, labels, _ = generate(int(name.split(":")[1]), size, family="vertebra")
        truth = (labels.array > 0).astype(np.uint8)  # tooth counts as bone (a 2-class model)
    else:
        raise SystemExit(f"unknown dataset {name!r}: use phantom:SEED or real")
    geometry = {"spacing": list(volume.spacing), "origin": list(volume.origin), "direction": list(volume.direction)}
    return volume.array, truth, geometry


def run_child(method: str, work: Path, ks: list[int], args: argparse.Namespace) -> dict:
    """Run one method in a child process; returns its labels, seconds and peak memory (or why it did not run)."""
    (work / "pred.npy").unlink(missing_ok=True)
    if method == "d":
        cmd = [args.biomedisa_python, str(HERE / "biomedisa_interpolate.py"), str(work), ",".join(map(str, ks)),
               str(args.biomedisa_nbrw), str(args.biomedisa_sorw)]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--work", str(work),
               "--slices", ",".join(map(str, ks)), "--threads", str(args.threads), "--device", args.device,
               "--max-minutes", str(args.max_minutes), "--precision", args.precision]
        cmd += ["--model", args.model] if args.model else []
        cmd += ["--max-steps", str(args.max_steps)] if args.max_steps is not None else []
    log = work / "child.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    if proc.returncode == 3:
        return {"unavailable": text.strip().splitlines()[-1]}
    if proc.returncode != 0 or not (work / "pred.npy").exists():
        raise RuntimeError(f"method {method} failed (exit {proc.returncode}):\n{text[-3000:]}")
    seconds = json.loads(text.strip().splitlines()[-1])["seconds"]
    return {"pred": np.load(work / "pred.npy"), "seconds": seconds, "peak_mb": usage.ru_maxrss / 1024.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="phantom:9000,phantom:9001,real",
                    help="comma list of phantom:SEED (held-out family vertebra) and real")
    ap.add_argument("--size", default="medium", choices=["small", "medium", "large"],
                    help="phantom size")
    ap.add_argument("--counts", default="1,3,5,10")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--model", default=None, help="model name or folder (default: the bundled default model)")
    ap.add_argument("--max-minutes", type=float, default=3.0, help="time budget of (b0) and (b)")
    ap.add_argument("--max-steps", type=int, default=None, help="fine-tune steps of (b0) and (b) (default: their options')")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                    help="of (a), (b0) and (b); auto as `fossilsegment learn` chooses it")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--biomedisa-python", default=None, help="python of a venv with biomedisa; (d) is skipped without")
    ap.add_argument("--biomedisa-nbrw", type=int, default=10,
                    help="(d): random walks per annotated voxel (Biomedisa's default 10; time grows with it)")
    ap.add_argument("--biomedisa-sorw", type=int, default=4000,
                    help="(d): steps of each random walk (Biomedisa's default 4000; time grows with it)")
    ap.add_argument("--qc-png", type=Path, default=None, help="write the real stack's reference-label QC picture here")
    ap.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    ap.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--slices", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.stdout.flush()
        code = child_main(args)
        sys.stdout.flush()
        os._exit(code)  # skip interpreter teardown: itk + torch can crash in their atexit handlers

    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if "d" in methods and not args.biomedisa_python:
        print("(d) skipped: no --biomedisa-python given")
        methods.remove("d")
    counts = [int(c) for c in args.counts.split(",")]
    settings = {"methods": methods, "counts": counts, "size": args.size, "model": args.model or "default",
                "threads": args.threads, "precision": args.precision, "max_minutes": args.max_minutes,
                "max_steps": args.max_steps,
                "biomedisa": {"nbrw": args.biomedisa_nbrw, "sorw": args.biomedisa_sorw} if "d" in methods else None,
                "load_average_start": os.getloadavg()}
    print(f"methods {methods}; counts {counts}; size {args.size}; model {args.model or 'default'}; "
          f"torch threads {args.threads}; biomedisa {settings['biomedisa']}; "
          f"load average {settings['load_average_start']}", flush=True)
    results: list[dict] = []
    skipped: dict[str, str] = {}
    failed: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_fewshot_") as tmp:
        work = Path(tmp)
        for dataset in args.datasets.split(","):
            image, truth, geometry = load_dataset(dataset, args.size, args.qc_png)
            np.save(work / "image.npy", image)
            (work / "geometry.json").write_text(json.dumps(geometry))
            print(f"\n{dataset}: shape {image.shape}, spacing {geometry['spacing']}, "
                  f"foreground {truth.mean():.3f}", flush=True)
            for n in counts:
                ks = annotated_slices(truth, n)
                sparse = np.zeros_like(truth)
                sparse[ks] = truth[ks]  # the methods see the annotated slices only
                np.save(work / "sparse.npy", sparse)
                for method in methods:
                    if method in skipped:
                        continue
                    try:
                        out = run_child(method, work, ks, args)
                    except RuntimeError as exc:  # one peer failing does not cost the whole run
                        print(exc, flush=True)
                        failed.append({"dataset": dataset, "count": n, "method": method, "error": str(exc)[-500:]})
                        continue
                    if "unavailable" in out:
                        skipped[method] = out["unavailable"]
                        print(out["unavailable"], flush=True)
                        continue
                    dice, iou = scores_unannotated(truth, out["pred"], ks)
                    row = {"dataset": dataset, "count": n, "slices": ks, "method": method, "dice": dice,
                           "iou": iou, "seconds": out["seconds"], "peak_mb": out["peak_mb"]}
                    results.append(row)
                    print(f"  {n} slice(s) {ks} {LABELS[method]}: Dice {dice:.3f} IoU {iou:.3f} "
                          f"{out['seconds']:.1f} s {out['peak_mb']:.0f} MB", flush=True)

    print("\n| dataset | slices | method | Dice | IoU | s | peak MB |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['dataset']} | {r['count']} | {LABELS[r['method']]} | {r['dice']:.3f} | {r['iou']:.3f} | "
              f"{r['seconds']:.1f} | {r['peak_mb']:.0f} |")
    for method, why in skipped.items():
        print(f"\n{LABELS[method]}: {why}")
    for f in failed:
        print(f"\nFAILED {LABELS[f['method']]} on {f['dataset']} with {f['count']} slice(s)")
    settings["load_average_end"] = os.getloadavg()
    print(f"\nload average at the end: {settings['load_average_end']}")
    if args.json:
        tmp_json = args.json.with_name(args.json.name + ".tmp")
        tmp_json.write_text(json.dumps({"settings": settings, "results": results, "skipped": skipped,
                                        "failed": failed}, indent=1))
        os.replace(tmp_json, args.json)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: itk + torch can crash in their atexit handlers (seen here)
