#!/usr/bin/env python
"""Time end-to-end segmentation of a paper-size fossil CT volume on a GPU, against MONAI's SliceInferer.

    PYTHONUNBUFFERED=1 .venv/bin/python scripts/bench_gpu_paper_size.py --device cuda --json bench_gpu.json

On a machine whose python3 has PyTorch (with timm, safetensors, scipy) but not the project's environment, e.g. a
lent H200: fetch two pure-Python wheels beforehand (``python3 -m pip download --no-deps -d .whl
segmentation-models-pytorch==0.6.0 monai==1.6.1``), carry ``.whl`` and run there (SimpleITK is not needed)::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
    PYTHONPATH=/tmp/site:FossilSegment PYTHONUNBUFFERED=1 python3 scripts/bench_gpu_paper_size.py --json $OUT/gpu.json

One command, no prompts; about 2–6 minutes on one H200, most of it the CPU clean-up (``--skip-postprocess``
leaves it out). Tiny CPU check: ``--device cpu --shape 64 64 6 --model <folder>``.

Volume: ``--shape I J K`` = columns × rows × slices, default 1228 × 1902 × 1042 (the smaller scan of
Yu et al. 2022), held as a C-ordered uint16 numpy array of shape (K, J, I) = (1042, 1902, 1228), 4.87 GB, the
engine's [k, j, i] order: axial slices of 1902 rows × 1228 columns. It is synthetic — bright bone shells, porous
bone, teeth and noise in a grey matrix, values spanning 5 000–60 000 so the uint16 path is exercised — made
on a 96 × 256 × 256 tile and mirrored to the full size (as ``np.pad(mode="symmetric")``): seconds, or about a
minute where fresh host memory is slow to map (a virtual machine: the report gives that rate, which every run
also pays for its 2.4 GB labelmap).

Timed, each from the host uint16 array to a host uint8 labelmap, after a short warm-up of each path:
1. ``PipelinedPredictor.predict_labels`` (default model, automatic batch size), clean-up excluded;
2. MONAI ``SliceInferer`` (``spatial_dim=0``, 2D windows of the model's tile size, same overlap, Gaussian
   blending with sigma = tile/8, ``sw_batch_size`` windows per call) on the same network call (same module,
   precision and channels_last), fed the same normalised 2.5D stacks in slabs of slices, then argmax —
   agreement with 1. is the share of equal voxels. MONAI is given the engine's GPU-side preparation (raw
   uint16 slices uploaded, normalised and stacked on the GPU), not a CPU transform chain, so the speed-up
   measures the inferer and the pipelining alone (a conservative ratio);
3. ``Predictor.predict_labels`` (the plain path; shows what the pipelining gains);
4. ``PipelinedPredictor.predict_labels`` with the default clean-up (end to end as ``fossilsegment segment`` runs it).
Prints a table (seconds, slices/s, voxels/s, peak GPU memory, agreement) with the issue-6 targets
(≤ 10 s; ≥ 1.5× MONAI), and with ``--json`` writes it after each step, so an interrupted run keeps its figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from fossilsegment_engine.atomic import atomic_path
from fossilsegment_engine.inference.normalize import volume_intensity_range
from fossilsegment_engine.inference.pipelined import PipelinedPredictor, device_stacks, prepare_batch
from fossilsegment_engine.inference.postprocess import PostprocessOptions
from fossilsegment_engine.inference.predictor import Predictor
from fossilsegment_engine.inference.tiling import overlap_pixels, round_up
from fossilsegment_engine.volume import Volume

PAPER_SHAPE = (1228, 1902, 1042)  # I, J, K: columns, rows, slices
TARGET_SECONDS = 10.0
TARGET_VS_MONAI = 1.5


# ------------------------------------------------------------------------------------------------ the volume
def make_volume(shape_ijk: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A synthetic fossil-like uint16 CT volume, array shape (K, J, I), made on a small tile and mirrored."""
    n_i, n_j, n_k = shape_ijk
    tk, tj, ti = min(n_k, 96), min(n_j, 256), min(n_i, 256)
    rng = np.random.default_rng(seed)
    k, j, i = np.ogrid[:tk, :tj, :ti]
    tile = np.full((tk, tj, ti), 20000.0, np.float32)
    for _ in range(5):  # bones: a dense shell around porous bone
        c = rng.uniform(0.2, 0.8, 3) * (tk, tj, ti)
        r = rng.uniform(0.12, 0.3, 3) * (tk, tj, ti) + 2
        d = ((k - c[0]) / r[0]) ** 2 + ((j - c[1]) / r[1]) ** 2 + ((i - c[2]) / r[2]) ** 2
        pores = rng.random(d.shape) < 0.3
        tile[(d < 0.65) & ~pores] = 34000.0
        tile[(d >= 0.65) & (d < 1)] = 45000.0
    for _ in range(3):  # teeth: small, very bright
        c = rng.uniform(0.15, 0.85, 3) * (tk, tj, ti)
        r = rng.uniform(0.04, 0.08, 3) * (tk, tj, ti) + 1
        tile[((k - c[0]) / r[0]) ** 2 + ((j - c[1]) / r[1]) ** 2 + ((i - c[2]) / r[2]) ** 2 < 1] = 55000.0
    tile += rng.normal(0.0, 1500.0, tile.shape).astype(np.float32)
    unit = np.clip(tile, 5000, 60000).astype(np.uint16)
    for axis in range(3):  # the tile and its mirror image: repeating this is np.pad(mode="symmetric"), faster
        unit = np.concatenate([unit, np.flip(unit, axis)], axis=axis)
    out = np.empty((n_k, n_j, n_i), np.uint16)
    uk, uj, ui = unit.shape
    for k0 in range(0, n_k, uk):
        for j0 in range(0, n_j, uj):
            for i0 in range(0, n_i, ui):
                block = out[k0 : k0 + uk, j0 : j0 + uj, i0 : i0 + ui]
                block[...] = unit[: block.shape[0], : block.shape[1], : block.shape[2]]
    return out


# ------------------------------------------------------------------------------------------------ MONAI
def monai_segment(seg: Predictor, array: np.ndarray, sw_batch: int, slab: int) -> np.ndarray:
    """Labels of ``array`` (K, J, I) by MONAI's SliceInferer around ``seg``'s network call."""
    from monai.inferers import SliceInferer

    cfg, dev = seg.config, seg.device
    multiple = seg.inferer.multiple
    tile = round_up(cfg.tile_size, multiple) if cfg.tile_size else None
    # as the engine's tiling: an axis no longer than the tile is one window padded to the model's multiple
    roi = tuple(tile if tile and n > tile else round_up(n, multiple) for n in array.shape[1:])
    overlap = (0.0, *(overlap_pixels(r, cfg.tile_overlap) / r for r in roi))  # none across slices
    pad_mode = "replicate" if any(r - n >= n for r, n in zip(roi, array.shape[1:])) else "reflect"
    inferer = SliceInferer(roi_size=roi, sw_batch_size=sw_batch, overlap=overlap, mode="gaussian", sigma_scale=0.125,
                           padding_mode=pad_mode, sw_device=dev, device=dev, progress=False, spatial_dim=0)
    lo, hi = volume_intensity_range(array, cfg.normalization)
    out = np.empty(array.shape, np.uint8)
    with torch.inference_mode():
        for start in range(0, array.shape[0], slab):
            stop = min(start + slab, array.shape[0])
            item = prepare_batch(array, start, stop, cfg.context_slices, pin=False)
            x = device_stacks(item.block.to(dev), item.rows.to(dev), lo, hi, item.unsigned16)  # (S, C, J, I)
            logits = inferer(x.permute(1, 0, 2, 3).unsqueeze(0), seg.network)  # (1, classes, S, J, I)
            out[start:stop] = logits[0].argmax(0).to(torch.uint8).cpu().numpy()
            del x, logits
    return out


def monai_slab(requested: int, array: np.ndarray, n_classes: int, n_context: int, device: torch.device) -> int:
    """Slices per SliceInferer call: ``requested``, or what fits in a quarter of the free GPU memory (input,
    output and count map in float32)."""
    if requested > 0:
        return requested
    if device.type != "cuda":
        return min(array.shape[0], 64)
    per_slice = array.shape[1] * array.shape[2] * 4 * (n_context + n_classes + 1)
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(array.shape[0], 0.25 * free // per_slice)))


# ------------------------------------------------------------------------------------------------ timing
def hardware(device: torch.device) -> dict[str, Any]:
    """What ran it: CPU, GPU, library versions."""
    from fossilsegment_engine.inference.device import cpu_name

    cpu = cpu_name(torch.device("cpu"))
    info: dict[str, Any] = {"cpu": cpu, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "torch": torch.__version__, "python": platform.python_version()}
    try:
        import monai

        info["monai"] = monai.__version__
    except ImportError:
        info["monai"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
        info["cuda"] = torch.version.cuda
        info["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    return info


def timed(device: torch.device, fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float, float | None]:
    """(result, seconds, peak GPU GiB or None) of ``fn()``, the GPU idle before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return out, seconds, peak


def first_touch_seconds_per_gb(n_bytes: int = 256 * 2**20) -> float:
    """Seconds per GB to write a freshly allocated host array: every run pays it for its labelmap
    (2.4 GB at paper size); tiny on bare metal, it can be seconds per GB in a virtual machine."""
    t0 = time.perf_counter()
    np.ones(n_bytes, np.uint8)
    return (time.perf_counter() - t0) / (n_bytes / 1e9)


class _LogLines(logging.Handler):
    """Keeps the engine's log lines (automatic batch size, out-of-memory fallbacks) for the report."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _row(name: str, seconds: float, shape: tuple[int, ...], peak: float | None, agree: float | None) -> dict:
    k, j, i = shape
    return {"method": name, "seconds": round(seconds, 3), "slices_per_s": round(k / seconds, 2),
            "mvoxels_per_s": round(k * j * i / seconds / 1e6, 1),
            "peak_gpu_gib": None if peak is None else round(peak, 2),
            "agreement_with_pipelined": None if agree is None else round(agree, 6)}


def print_table(report: dict[str, Any]) -> None:
    """The results as a Markdown table, then the targets."""
    print("\n| method | seconds | slices/s | Mvoxels/s | peak GPU GiB | agreement |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in report["results"]:
        peak = "–" if r["peak_gpu_gib"] is None else f"{r['peak_gpu_gib']:.2f}"
        agree = "–" if r["agreement_with_pipelined"] is None else f"{100 * r['agreement_with_pipelined']:.4f} %"
        print(f"| {r['method']} | {r['seconds']:.2f} | {r['slices_per_s']:.1f} | {r['mvoxels_per_s']:.0f} | "
              f"{peak} | {agree} |")
    for key, value in report["targets"].items():
        print(f"{key}: {value}")


def write_json(report: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        with atomic_path(path, force=True) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="bundled model name or folder (default: the default model)")
    p.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu (default auto)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("I", "J", "K"), default=PAPER_SHAPE,
                   help="columns rows slices (default %(default)s)")
    p.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16 (default auto: bf16 on CUDA)")
    p.add_argument("--backend", default="auto", help="auto | eager | compiled (torch.compile; default auto: eager "
                   "on CUDA)")
    p.add_argument("--batch-size", type=int, default=None, help="slices per batch (default: from free GPU memory)")
    p.add_argument("--monai-sw-batch", type=int, default=32, help="MONAI windows per network call (default 32)")
    p.add_argument("--monai-slab", type=int, default=0, help="slices per SliceInferer call (0: from free memory)")
    p.add_argument("--warmup-slices", type=int, default=48, help="slices segmented once per path before timing")
    p.add_argument("--skip-monai", action="store_true")
    p.add_argument("--skip-plain", action="store_true", help="leave out the non-pipelined Predictor path")
    p.add_argument("--skip-postprocess", action="store_true", help="leave out the run with the CPU clean-up")
    p.add_argument("--no-cudnn-benchmark", action="store_true", help="keep cuDNN's default algorithm choice")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here (rewritten after each step)")
    args = p.parse_args(argv)
    if min(args.shape) < 1 or args.monai_sw_batch < 1 or args.warmup_slices < 0:
        p.error("--shape, --monai-sw-batch need positive values; --warmup-slices ≥ 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the report dict (also printed, and written with ``--json``)."""
    args = parse_args(argv)
    torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    logs = _LogLines()
    engine_log = logging.getLogger("fossilsegment_engine")
    engine_log.addHandler(logs)
    engine_log.setLevel(logging.INFO)
    try:
        return _run(args, logs, sys.argv[1:] if argv is None else argv)
    finally:
        engine_log.removeHandler(logs)


def _run(args: argparse.Namespace, logs: _LogLines, argv: list[str]) -> dict[str, Any]:
    from fossilsegment_engine.models.store import load_model

    module, config = load_model(args.model, device="cpu")
    options = {"batch_size": args.batch_size, "precision": args.precision, "backend": args.backend}
    seg = PipelinedPredictor(module, config, args.device, **options)
    plain = Predictor(module, config, args.device, **options)  # the same network, batches not pipelined
    dev = seg.device
    t0 = time.perf_counter()
    array = make_volume(tuple(args.shape), args.seed)
    made = time.perf_counter() - t0
    volume = Volume(array)
    shape = array.shape
    touch = first_touch_seconds_per_gb()
    print(f"volume (K, J, I) = {shape} uint16, {array.nbytes / 1e9:.2f} GB, made in {made:.1f} s; "
          f"model {seg.config.name} on {dev} ({seg.autocast_dtype or 'fp32'})", flush=True)
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "scripts/bench_gpu_paper_size.py", *argv]),
        "hardware": hardware(dev), "model": seg.config.name, "device": str(dev),
        "precision": str(seg.autocast_dtype or "fp32"),
        "volume": {"shape_ijk": list(args.shape), "array_shape_kji": list(shape), "dtype": "uint16",
                   "gbytes": round(array.nbytes / 1e9, 3), "generation_s": round(made, 2)},
        "host_first_touch_s_per_gb": round(touch, 3),
        "results": [], "targets": {}, "log": logs.lines,
    }
    warm = Volume(array[: min(shape[0], args.warmup_slices)]) if args.warmup_slices else None
    none = {"postprocess": None}

    def step(name: str, fn: Callable[[], np.ndarray], reference: np.ndarray | None) -> np.ndarray:
        print(f"{name} ...", flush=True)
        out, seconds, peak = timed(dev, fn)
        agree = None if reference is None else float(np.mean(out == reference))
        report["results"].append(_row(name, seconds, shape, peak, agree))
        print(f"  {seconds:.2f} s", flush=True)
        write_json(report, args.json)
        return out

    if warm is not None:
        seg.predict_labels(warm, **none)
    ours = step("predict_labels (pipelined, no clean-up)", lambda: seg.predict_labels(volume, **none).array, None)
    if not args.skip_monai:
        slab = monai_slab(args.monai_slab, array, seg.config.n_classes, seg.config.context_slices, dev)
        report["monai"] = {"sw_batch_size": args.monai_sw_batch, "slab_slices": slab}
        if warm is not None:
            monai_segment(seg, warm.array, args.monai_sw_batch, slab)
        step("MONAI SliceInferer (same network)", lambda: monai_segment(seg, array, args.monai_sw_batch, slab), ours)
    if not args.skip_plain:
        if warm is not None:
            plain.predict_labels(warm, **none)
        step("predict_labels (plain, no clean-up)", lambda: plain.predict_labels(volume, **none).array, ours)
    if not args.skip_postprocess:
        step("predict_labels (pipelined, with clean-up)",
             lambda: seg.predict_labels(volume, postprocess=PostprocessOptions()).array, None)

    res = {r["method"]: r for r in report["results"]}
    first = report["results"][0]["seconds"]
    report["targets"][f"pipelined ≤ {TARGET_SECONDS:.0f} s"] = f"{first:.2f} s ({'met' if first <= TARGET_SECONDS else 'NOT met'})"
    monai = res.get("MONAI SliceInferer (same network)")
    if monai is not None:
        ratio = monai["seconds"] / first
        report["targets"][f"speed-up vs MONAI ≥ {TARGET_VS_MONAI}×"] = (
            f"{ratio:.2f}× ({'met' if ratio >= TARGET_VS_MONAI else 'NOT met'})")
        report["speedup_vs_monai"] = round(ratio, 3)
    cleaned = res.get("predict_labels (pipelined, with clean-up)")
    if cleaned is not None:
        report["targets"]["clean-up adds"] = f"{cleaned['seconds'] - first:.2f} s (CPU)"
    plain = res.get("predict_labels (plain, no clean-up)")
    if plain is not None:
        report["speedup_vs_plain"] = round(plain["seconds"] / first, 3)
    report["mode"] = seg.mode  # backend-precision the timed runs used
    report["peak_host_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    write_json(report, args.json)
    print_table(report)
    print(f"peak host RSS {report['peak_host_rss_gib']} GiB; writing fresh host memory: {touch:.2f} s/GB "
          f"(the labelmap alone: {touch * np.prod(shape) / 1e9:.2f} s of each run); log: " + " | ".join(logs.lines[-4:]))
    return report


if __name__ == "__main__":
    main()
