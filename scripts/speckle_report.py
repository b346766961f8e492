#!/usr/bin/env python
"""Speckle and bones kept on real, unlabelled CT, with a QC montage per volume (issue 14): one command per model.

For each real volume (:mod:`real_scans`): segment with the model's defaults, label the foreground of every
axial slice (8-connected), and count the pieces smaller than ``--max-px`` pixels (raw, and per 10⁶ voxels
the model calls matrix). Also: the foreground share (for a volume without bone, the false-positive share)
and, where the volume holds bone, the share of a classical bright-bone proxy (:mod:`bone_proxy`) that the
model labels, so that predicting nothing cannot pass. The montage shows the whole middle slice, then 1:1
crops of the same rendering (same grey window): one where the proxy is densest, then where the specks are
densest (orange fill = prediction, cyan outline = bone proxy).

    python scripts/speckle_report.py [--model fossil-bone-v2.1] [--real ../shared/data/real] \
        [--qim3d qim3d-1.5.3-py3-none-any.whl] [--montage-dir docs/benchmarks] [--tag MODEL_NAME] \
        [--json docs/benchmarks/speckle_baseline.json] [--force]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bone_proxy import bone_proxy, proxy_recall  # noqa: E402
from real_scans import REAL, RealScan, qim3d_scans, shared_scans  # noqa: E402

from fossilsegment_engine.atomic import atomic_path, check_can_write  # noqa: E402
from fossilsegment_engine.errors import OutputError  # noqa: E402
from fossilsegment_engine.inference.predictor import Predictor  # noqa: E402
from fossilsegment_engine.io.overlay import render_overlay  # noqa: E402
from fossilsegment_engine.volume import Volume  # noqa: E402

_EIGHT = np.ones((3, 3), dtype=bool)
_GAP = 4  # render_overlay's border around a panel
WHOLE_PX = 512  # the whole slice is fitted into this many pixels


def small_pieces(labels: np.ndarray, max_px: int) -> tuple[int, np.ndarray]:
    """(number of 2D foreground pieces < ``max_px`` pixels over all slices, mask of those pieces)."""
    count, mask = 0, np.zeros(labels.shape, dtype=bool)
    for k in range(labels.shape[0]):
        comp, n = ndimage.label(labels[k] > 0, structure=_EIGHT)
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel())
        small = np.flatnonzero(sizes < max_px)
        small = small[small > 0]
        count += small.size
        mask[k] = np.isin(comp, small)
    return count, mask


def speckle_figure(labels: np.ndarray, max_px: int = 30) -> dict[str, float]:
    """Raw count of small pieces, per 10⁶ predicted-matrix voxels, and the foreground fraction."""
    count, _ = small_pieces(labels, max_px)
    matrix = int((labels == 0).sum())
    return {"pieces": count, "per_million_matrix": 1e6 * count / max(matrix, 1),
            "foreground_fraction": float((labels > 0).mean())}


def measure(scan: RealScan, labels: np.ndarray, proxy: np.ndarray | None, max_px: int = 30) -> dict:
    """The report's row for one scan: ``labels`` and ``proxy`` cover the measured slices only."""
    fig = speckle_figure(labels, max_px)
    k0, k1 = scan.slices or (0, scan.volume.shape[0])
    return {
        "name": scan.name, "source": scan.source, "content": scan.content, "slices": [k0, k1],
        "slice_shape": list(scan.volume.shape[1:]), **fig,
        "false_positive_share": fig["foreground_fraction"] if scan.content == "none" else None,
        "proxy": scan.proxy,
        "proxy_fraction": float(proxy.mean()) if proxy is not None else None,
        "bone_kept": proxy_recall(labels, proxy) if proxy is not None else None,
    }


def _one(a: np.ndarray) -> Volume:
    """A 1-slice volume of a 2D array, square pixels (the montage is in voxels)."""
    return Volume(a[None])


def _window(density: np.ndarray, crop: int) -> tuple[slice, slice]:
    """The ``crop``-sized window centred on the density maximum, kept inside the slice."""
    y, x = np.unravel_index(int(np.argmax(density)), density.shape)
    y0 = int(np.clip(y - crop // 2, 0, max(0, density.shape[0] - crop)))
    x0 = int(np.clip(x - crop // 2, 0, max(0, density.shape[1] - crop)))
    return slice(y0, y0 + crop), slice(x0, x0 + crop)


def montage(volume: Volume, labels: Volume, classes: list, k: int, max_px: int, crops: int, crop: int,
            proxy: np.ndarray | None = None) -> np.ndarray:
    """RGB: slice ``k`` fitted into 512 px, then 1:1 crops: one where ``proxy`` (slice ``k``) is densest, then
    ``crops`` where the small pieces are densest. Nothing is cropped from a slice no larger than ``crop``."""
    grey, lab = volume.array[k], labels.array[k]
    ref = _one(proxy.astype(np.uint8)) if proxy is not None else None
    tiles = [render_overlay(_one(grey), _one(lab), classes, 1, views=False, panel_size=WHOLE_PX, truth=ref)]
    if max(grey.shape) > crop:
        full = render_overlay(_one(grey), _one(lab), classes, 1, views=False, panel_size=max(grey.shape), truth=ref)
        full = full[_GAP:_GAP + grey.shape[0], _GAP:_GAP + grey.shape[1]]
        taken = np.zeros(grey.shape, dtype=bool)
        sources = [proxy] if proxy is not None and proxy.any() else []
        sources += [small_pieces(lab[None], max_px)[1][0]] * crops
        for source in sources:
            density = ndimage.uniform_filter(source.astype(np.float32), crop)
            density[taken] = -1
            window = _window(density, crop)
            taken[max(0, window[0].start - crop // 2):window[0].stop + crop // 2,
                  max(0, window[1].start - crop // 2):window[1].stop + crop // 2] = True
            tiles.append(np.pad(full[window], ((_GAP, _GAP), (_GAP, _GAP), (0, 0))))
    height = max(t.shape[0] for t in tiles)
    return np.concatenate([np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0))) for t in tiles], axis=1)


def write_png(rgb: np.ndarray, path: Path, force: bool) -> None:
    """Write an RGB uint8 array as a 256-colour PNG (a third of the size of RGB on noisy CT), atomically."""
    with atomic_path(path, force) as tmp:
        Image.fromarray(rgb).quantize(256, method=Image.Quantize.MEDIANCUT).save(tmp, "PNG", optimize=True)


def _scans(args: argparse.Namespace) -> list[RealScan]:
    scans = shared_scans(args.real)
    if args.qim3d is not None:
        try:
            scans += qim3d_scans(args.qim3d)
        except ValueError as exc:
            raise SystemExit(f"error: --qim3d {exc}") from exc
    if args.only:
        scans = [s for s in scans if s.name in args.only]
    if not scans:
        raise SystemExit(f"error: no real scans (under {args.real}, --qim3d {args.qim3d}, --only {args.only})")
    return scans


def _row_text(r: dict) -> str:
    kept = "-" if r["bone_kept"] is None else f"{r['bone_kept']:.3f}"
    return (f"{r['name']}: {r['slices'][1] - r['slices'][0]} slices of {r['slice_shape'][0]}x{r['slice_shape'][1]} "
            f"({r['content']}): {r['pieces']} small pieces, {r['per_million_matrix']:.1f} per 10^6 matrix voxels; "
            f"foreground {r['foreground_fraction']:.4f}; bone proxy kept {kept}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="bundled model name or folder (default model)")
    p.add_argument("--real", type=Path, default=REAL, help="folder holding the shared real scans")
    p.add_argument("--qim3d", type=Path, default=None,
                   help="the qim3d wheel (pip download qim3d==1.5.3 --no-deps) or a folder of its example .tif files")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="measure only these scans")
    p.add_argument("--max-px", type=int, default=30, help="a piece smaller than this (pixels) is a speck")
    p.add_argument("--montage-dir", type=Path, default=None, help="write speckle_<volume>_<tag>.png here")
    p.add_argument("--tag", default=None, help="montage name suffix (default: the model's name)")
    p.add_argument("--json", type=Path, default=None, help="write the rows as JSON here")
    p.add_argument("--force", action="store_true", help="overwrite existing montages and JSON")
    p.add_argument("--crops", type=int, default=2, help="1:1 crops where the specks are densest")
    p.add_argument("--crop", type=int, default=256, help="crop side in pixels, shown 1:1")
    p.add_argument("--device", default="cpu")
    p.add_argument("--thorough", action="store_true", help="segment with the engine's five passes (--thorough)")
    args = p.parse_args(argv)
    scans = _scans(args)
    seg = Predictor.load(args.model, device=args.device, thorough=args.thorough)
    tag = args.tag or seg.config.name + ("-thorough" if args.thorough else "")
    outputs = [args.montage_dir / f"speckle_{s.name}_{tag}.png" for s in scans] if args.montage_dir else []
    try:
        for path in outputs + ([args.json] if args.json else []):
            check_can_write(path, args.force)  # refuse before the long part
    except OutputError as exc:
        raise SystemExit(f"error: {exc}") from exc
    print(f"model {seg.config.name}{' (thorough)' if args.thorough else ''}; pieces < {args.max_px} px per slice (8-connected)")
    rows = []
    for i, scan in enumerate(scans):
        labels = seg.predict_labels(scan.volume, slice_range=scan.slices)
        k0, k1 = scan.slices or (0, scan.volume.shape[0])
        proxy = bone_proxy(scan.volume.array[k0:k1], scan.proxy) if scan.proxy else None
        rows.append(measure(scan, labels.array[k0:k1], proxy, args.max_px))
        print(_row_text(rows[-1]))
        if args.montage_dir is not None:
            k = (k0 + k1) // 2
            rgb = montage(scan.volume, labels, seg.classes, k, args.max_px, args.crops, args.crop,
                          proxy[k - k0] if proxy is not None else None)
            write_png(rgb, outputs[i], args.force)
            print(f"  montage {outputs[i]}")
    if args.json is not None:
        report = {"model": seg.config.name, "weights_sha256": seg.config.weights_sha256,
                  "thorough": args.thorough, "max_px": args.max_px,
                  "rows": rows}
        with atomic_path(args.json, args.force) as tmp:
            tmp.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"json {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
