#!/usr/bin/env python
"""Inference speed benchmark: each backend/precision mode against a naive fp32 loop, in the same run.

    PYTHONPATH=FossilSegment python scripts/bench_inference.py [--model M] [--device cpu] [--size 512]
        [--slices 16] [--batch-size B] [--modes MODE ...] [--repeat 2] [--threads T] [--json OUT.json] [--force]

The input is realistic, not noise: the bundled demo scan (a synthetic fossil CT) mirrored in-plane to
``size`` × ``size`` and along the slices as needed, at its own voxel scale. Every mode segments the
same slices through ``Predictor.predict_labels`` (raw argmax, no clean-up); the naive baseline is
``model.eval()`` in fp32, one slice at a time, contiguous memory, under ``torch.no_grad``. Agreement is
the share of voxels whose label equals the naive fp32 one. After an untimed first run per mode (which
includes compiling), the modes are timed in turns, ``repeat`` rounds, and each keeps its best round,
so a busy machine hurts all modes alike. Peak host memory is the process's peak RSS during the mode's
timed runs (Linux resets it per mode; elsewhere it is the process's peak so far).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FossilSegment"))

from fossilsegment_engine.atomic import atomic_path, check_can_write  # noqa: E402
from fossilsegment_engine.errors import DeviceError, FossilSegmentError  # noqa: E402
from fossilsegment_engine.inference.backends import (COMPILE_MIN_PIXELS, auto_compiles, can_compile,  # noqa: E402
                                                     check_backend, torchao_available)
from fossilsegment_engine.inference.context import context_slices  # noqa: E402
from fossilsegment_engine.inference.device import choose_device, cpu_name, resolve_precision  # noqa: E402
from fossilsegment_engine.inference.normalize import apply_intensity_range, volume_intensity_range  # noqa: E402
from fossilsegment_engine.inference.tiling import predict_tiled  # noqa: E402
from fossilsegment_engine.progress import ProgressCallback  # noqa: E402
from fossilsegment_engine.volume import Volume  # noqa: E402

#: mode name → (backend, precision); ``auto`` is what a user gets by default for the benchmark's job size
MODES: dict[str, tuple[str, str]] = {
    "eager-fp32": ("eager", "fp32"), "eager-bf16": ("eager", "bf16"), "eager-fp16": ("eager", "fp16"),
    "compiled-fp32": ("compiled", "fp32"), "compiled-bf16": ("compiled", "bf16"),
    "compiled-fp16": ("compiled", "fp16"), "int8-fp32": ("int8", "fp32"), "int8-bf16": ("int8", "bf16"),
    "auto": ("auto", "auto"),
}
ALIASES = {"fp32": "eager-fp32", "bf16": "eager-bf16", "fp16": "eager-fp16", "compiled": "compiled-bf16",
           "eager": "eager-fp32", "int8": "int8-bf16"}
NAIVE = "naive-fp32"


@dataclass
class ModeResult:
    """One row of the benchmark table."""

    mode: str
    batch_size: int | str  # "auto" on a GPU without --batch-size
    slices: int
    seconds: float
    slices_per_s: float
    voxels_per_s: float
    first_run_s: float  # the untimed first run (includes compiling)
    peak_rss_mib: float
    peak_gpu_mib: float | None
    speedup_vs_naive: float
    agreement: float  # fraction of voxels labelled as the naive fp32 loop labels them
    runs_as: str = ""  # what an "auto" row resolved to


@dataclass
class BenchResult:
    """Everything one benchmark run measured, with its context."""

    date: str
    model: str
    device: str
    threads: int
    cpu: str
    torch: str
    size: int
    slices: int
    repeat: int
    auto_mode: str
    auto_rule: str
    rows: list[ModeResult] = field(default_factory=list)
    load_average: list[float | None] = field(default_factory=list)  # 1-minute load before and after (others' work)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)


def parse_modes(names: list[str] | None, device: torch.device) -> list[str]:
    """Canonical mode names (defaults: fp32, the device's low precision, compiled where it can work, and int8 on
    a CPU with torchao)."""
    if not names:
        low = "fp16" if device.type == "cuda" and not torch.cuda.is_bf16_supported() else "bf16"
        names = ["eager-fp32", f"eager-{low}"] + ([f"compiled-{low}"] if can_compile(device) else [])
        if device.type == "cpu" and can_compile(device) and torchao_available():
            names.append(f"int8-{low}")
    out: list[str] = []
    for raw in names:
        for name in str(raw).split(","):
            key = ALIASES.get(name.strip().lower(), name.strip().lower())
            if key not in MODES:
                raise DeviceError(f"unknown benchmark mode {name!r}; use {', '.join([*MODES, *ALIASES])}")
            check_backend(MODES[key][0])
            resolve_precision(MODES[key][1], device)  # fp16 on a CPU → clear error
            if key not in out:
                out.append(key)
    return out


def bench_volume(size: int, slices: int) -> Volume:
    """The demo scan mirrored to ``slices`` × ``size`` × ``size`` voxels (its central slices, its spacing)."""
    from fossilsegment_engine.io.volume_io import read_volume
    from fossilsegment_engine.resources import resource_path

    if size < 16 or slices < 1:
        raise FossilSegmentError(f"benchmark size must be ≥ 16 pixels and slices ≥ 1, got {size} and {slices}")
    demo = read_volume(resource_path("SampleData/fossil_demo_phantom.nrrd"))
    a = demo.array
    reps = [-(-n // s) + 1 for n, s in zip((slices, size, size), a.shape)]
    big = np.pad(a, [(0, (r - 1) * s) for r, s in zip(reps, a.shape)], mode="symmetric")
    k0 = max(0, (a.shape[0] - slices) // 2) if slices <= a.shape[0] else 0
    return Volume(np.ascontiguousarray(big[k0 : k0 + slices, :size, :size]), spacing=demo.spacing)


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # not on Windows

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 1024


def naive_labels(module: torch.nn.Module, config: Any, volume: Volume, device: torch.device) -> np.ndarray:
    """Labels from a plain fp32 ``model.eval()`` loop, one slice at a time, contiguous memory (the baseline); each
    slice read (whole or tiled) as the Predictor reads it at its default CPU batch."""
    from fossilsegment_engine.inference.predictor import CPU_BATCH
    from fossilsegment_engine.inference.slice_inferer import SliceInferer

    array = volume.array
    inferer, _ = SliceInferer.from_config(config).fit_to_slices(array.shape[1], array.shape[2], CPU_BATCH)
    lo, hi = volume_intensity_range(array, config.normalization)
    out = np.zeros(array.shape, np.uint8)
    module = module.eval()
    with torch.no_grad():
        for k in range(array.shape[0]):
            x = torch.from_numpy(apply_intensity_range(context_slices(array, [k], config.context_slices), lo, hi))
            logits = predict_tiled(lambda t: module(t.contiguous()), x.to(device), inferer.tile_size,
                                   inferer.tile_overlap, inferer.multiple)
            out[k] = logits.argmax(dim=1)[0].cpu().numpy()
    return out


def run_benchmark(
    model: str | Path | None = None,
    device: str = "auto",
    size: int = 512,
    slices: int = 16,
    batch_size: int | None = None,
    modes: list[str] | None = None,
    repeat: int = 2,
    progress: ProgressCallback | None = None,
) -> BenchResult:
    """Time the naive fp32 loop and each mode on the same ``slices`` × ``size``² input; see the module docstring."""
    from fossilsegment_engine.inference.predictor import CPU_BATCH, Predictor
    from fossilsegment_engine.models.store import load_model

    if repeat < 1:
        raise FossilSegmentError(f"repeat must be ≥ 1, got {repeat}")
    dev = choose_device(device)
    names = parse_modes(modes, dev)
    load_before = _load_average()
    volume = bench_volume(size, slices)
    naive_module, config = load_model(model, device=str(dev))
    batch = batch_size or CPU_BATCH
    cuda = dev.type == "cuda"
    steps, total = [0], 1 + (len(names) + 1) * repeat * slices + len(names) * slices

    def tick(n: int) -> None:
        steps[0] += n
        if progress is not None:
            progress(steps[0], total)

    segmenters = {n: Predictor.load(model, device=dev, batch_size=batch_size, precision=MODES[n][1],
                                    backend=MODES[n][0]) for n in names}
    runs: dict[str, Callable[[], np.ndarray]] = {NAIVE: lambda: naive_labels(naive_module, config, volume, dev)}
    for n, seg in segmenters.items():
        runs[n] = lambda seg=seg: seg.predict_labels(volume, postprocess=None).array

    warmup: dict[str, float] = {}
    for n, run in runs.items():  # untimed first runs: oneDNN primitive creation, compilation
        t = time.perf_counter()
        if n == NAIVE:
            naive_labels(naive_module, config, Volume(volume.array[:1]), dev)
        else:
            run()
        warmup[n] = time.perf_counter() - t
        tick(1 if n == NAIVE else slices)

    best = {n: float("inf") for n in runs}
    rss = {n: 0.0 for n in runs}
    gpu = {n: 0.0 for n in runs}
    labels: dict[str, np.ndarray] = {}
    for _ in range(repeat):
        for n, run in runs.items():
            _reset_peak_rss()
            if cuda:
                torch.cuda.synchronize(dev)
                torch.cuda.reset_peak_memory_stats(dev)
            t = time.perf_counter()
            labels[n] = run()
            if cuda:
                torch.cuda.synchronize(dev)
            best[n] = min(best[n], time.perf_counter() - t)
            rss[n] = max(rss[n], _peak_rss_mib())
            if cuda:
                gpu[n] = max(gpu[n], torch.cuda.max_memory_allocated(dev) / 2**20)
            tick(slices)

    ref = labels[NAIVE]
    rows = []
    for n in runs:
        seg = segmenters.get(n)
        rows.append(ModeResult(
            mode=n, batch_size=1 if seg is None else (batch_size or ("auto" if cuda else CPU_BATCH)), slices=slices,
            seconds=best[n], slices_per_s=slices / best[n], voxels_per_s=slices * size * size / best[n],
            first_run_s=warmup[n],
            peak_rss_mib=rss[n], peak_gpu_mib=gpu[n] if cuda else None, speedup_vs_naive=best[NAIVE] / best[n],
            agreement=float((labels[n] == ref).mean()), runs_as="" if seg is None else seg.mode))

    auto_mode = _auto_choice(segmenters.get("auto"), dev, slices, size)
    return BenchResult(
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"), model=config.name, device=str(dev),
        threads=torch.get_num_threads(), cpu=cpu_name(dev), torch=torch.__version__, size=size, slices=slices,
        repeat=repeat, auto_mode=auto_mode, auto_rule=auto_rule(), rows=rows,
        load_average=[load_before, _load_average()])


def auto_rule() -> str:
    """What backend ``auto`` runs, in words (:func:`fossilsegment_engine.inference.backends.auto_compiles`)."""
    return (f"on a CPU in bf16/fp16 with a C++ compiler, jobs of ≥ {COMPILE_MIN_PIXELS / 512**2:.0f} slices of "
            f"512² ({COMPILE_MIN_PIXELS / 1e6:.0f} M pixels) run compiled; otherwise eager; never int8 (opt-in)")


def _auto_choice(seg: Any, dev: torch.device, slices: int, size: int) -> str:
    """The mode ``auto`` runs for this job: from its timed row when there is one, else by the rule."""
    if seg is not None:
        return seg.mode
    dtype = resolve_precision("auto", dev)
    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    return f"{'compiled' if auto_compiles(dev, dtype, slices * size * size) else 'eager'}-{precision}"


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # Windows
        return None


def format_table(result: BenchResult) -> str:
    """The printed benchmark: a header, one row per mode, and what ``auto`` picks."""
    head = (f"model {result.model} on {result.device} ({result.cpu}, {result.threads} threads), "
            f"{result.slices} slices of {result.size}x{result.size}, best of {result.repeat}, torch {result.torch}")
    if any(v is not None for v in result.load_average):
        head += f"\nload average (1 min) before/after: {' / '.join(str(v) for v in result.load_average)}"
    cols = ["mode", "batch", "slices/s", "voxels/s", "peak RSS MiB", "x naive", "agree %", "first run s"]
    gpu = any(r.peak_gpu_mib is not None for r in result.rows)
    if gpu:
        cols.insert(5, "peak GPU MiB")
    lines = [head, "  ".join(f"{c:>13}" if i else f"{c:<18}" for i, c in enumerate(cols))]
    for r in result.rows:
        mode = r.mode if r.mode != "auto" else f"auto={r.runs_as}"
        vals = [f"{mode:<18}", f"{r.batch_size:>13}", f"{r.slices_per_s:>13.2f}", f"{r.voxels_per_s:>13.3g}",
                f"{r.peak_rss_mib:>13.0f}", f"{r.speedup_vs_naive:>13.2f}", f"{100 * r.agreement:>13.3f}",
                f"{r.first_run_s:>13.1f}"]
        if gpu:
            vals.insert(5, f"{r.peak_gpu_mib or 0:>13.0f}")
        lines.append("  ".join(vals))
    lines.append(f"auto picks {result.auto_mode} for this job; rule: {result.auto_rule}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the benchmark, print the table (and write ``--json``); 2 on a bad option."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None, metavar="NAME|DIR", help="bundled model name or folder (None: default)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--size", type=int, default=512, metavar="PIXELS", help="slice size in pixels")
    p.add_argument("--slices", type=int, default=16, metavar="N", help="slices per timed run")
    p.add_argument("--batch-size", type=int, default=None, metavar="B", help="slices per batch (None: as segment)")
    p.add_argument("--modes", nargs="+", default=None, metavar="MODE",
                   help=f"modes to time, of {', '.join([*MODES, *ALIASES])} (None: eager-fp32, eager-bf16, "
                        "compiled-bf16 where a compiler exists, int8-bf16 on a CPU with torchao)")
    p.add_argument("--repeat", type=int, default=2, metavar="R", help="timed rounds; each mode keeps its best")
    p.add_argument("--threads", type=int, default=None, metavar="T", help="CPU threads for torch (None: torch's)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT.json", help="also write the results as JSON")
    p.add_argument("--force", action="store_true", help="overwrite --json if it exists")
    args = p.parse_args(argv)
    try:
        if args.json is not None:
            check_can_write(args.json, args.force)  # before the slow part
        if args.threads is not None:
            if args.threads < 1:
                raise FossilSegmentError(f"--threads must be ≥ 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        result = run_benchmark(model=args.model, device=args.device, size=args.size, slices=args.slices,
                               batch_size=args.batch_size, modes=args.modes, repeat=args.repeat)
    except FossilSegmentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json is not None:
        with atomic_path(args.json, args.force) as tmp:
            tmp.write_text(result.to_json() + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
