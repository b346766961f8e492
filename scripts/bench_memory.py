#!/usr/bin/env python
"""Benchmark (issue 6, part 2): peak memory of ``fossilsegment segment`` grows linearly with the scan.

Generates raw uint16 NRRD volumes of three sizes (about 0.5, 1.6 and 4.3 GB; the largest has the paper's
1228 x 1902 slices), then runs, each in its own process under ``/usr/bin/time -v``::

    fossilsegment segment VOL.nrrd --labelmap L.nrrd -o S.seg.nrrd --model TINY --device cpu [--min-island 0 --no-fill-holes]

with a tiny U-Net saved by the engine's model store (the default model would take hours on 2 cores; memory
is what is measured here, and the tiny model's per-batch temporaries are the same kind). It prints, per run:
input bytes, output bytes (the uint8 labelmap), the bound = input + output + 1 GiB, the peak resident set
size ("Maximum resident set size"), whether the peak is within the bound, and the wall time. A watchdog
kills a run whose memory passes ``--kill-above`` x the bound or leaves less than 1 GiB free (the machine
is shared); such a run is reported as over the bound. Files go under ``--workdir`` and are deleted
afterwards unless ``--keep``. Usage::

    python scripts/bench_memory.py                       # three sizes, post-processing on and off
    python scripts/bench_memory.py --sizes 0.5 --postprocess off --json mem.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from fossilsegment_engine.io.nrrd_stream import volume_fields, write_header

GIB = 1 << 30
#: (slices, rows, columns) per size label: ~0.05 (a quick check), 0.52, 1.61 and 4.30 GB as uint16.
SHAPES = {"0.05": (100, 512, 512), "0.5": (640, 640, 640), "1.6": (768, 1024, 1024), "4.3": (920, 1902, 1228)}
SPACING = (0.05, 0.05, 0.05)
REPO = Path(__file__).resolve().parents[1]


def make_volume(path: Path, shape: tuple[int, int, int], seed: int = 0) -> int:
    """A raw uint16 NRRD of "bone" blobs (~2500) in "rock" (~1200) with noise, written a slab at a time."""
    k_n, j_n, i_n = shape
    rng = np.random.default_rng(seed)
    y = np.sin(np.arange(j_n, dtype=np.float32) / 23.0)[:, None]
    x = np.sin(np.arange(i_n, dtype=np.float32) / 31.0)[None, :]
    fields = {**volume_fields(SPACING, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)), "encoding": "raw"}
    step = max(1, (64 << 20) // (j_n * i_n * 2))
    with open(path, "wb") as fh:
        write_header(fh, shape, np.dtype(np.uint16), fields)
        for k0 in range(0, k_n, step):
            z = np.sin(np.arange(k0, min(k0 + step, k_n), dtype=np.float32) / 17.0)[:, None, None]
            bone = (x + y + z) > 1.1
            slab = rng.normal(1200.0, 150.0, size=bone.shape).astype(np.float32)
            slab[bone] += 1300.0
            fh.write(np.clip(slab, 0, 65535).astype(np.uint16).tobytes())
    return path.stat().st_size


def make_model(folder: Path) -> Path:
    """A tiny U-Net (random fixed weights) in a model folder, one tile per slice."""
    import torch

    from fossilsegment_engine.models import ModelConfig, build_model, save_model

    torch.manual_seed(0)
    config = ModelConfig(name="bench-memory-tiny-unet", arch="unet",
                         arch_options={"encoder": "tu-mobilenetv3_small_050", "encoder_depth": 3, "decoder_channels": 4},
                         tile_size=2048, tile_overlap=32)
    return save_model(build_model(config), config, folder, force=True)


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (Linux /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next((int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmRSS")), 0)
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except (OSError, ValueError):
            continue
    return total


def _available() -> int:
    with open("/proc/meminfo") as fh:
        return next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("MemAvailable"))


def _watch(proc: subprocess.Popen, limit: int, state: dict) -> None:
    """Kill ``proc``'s process group when it passes ``limit`` bytes or the machine runs low on memory."""
    while proc.poll() is None:
        rss = _tree_rss(proc.pid)
        state["max_polled"] = max(state.get("max_polled", 0), rss)
        if rss > limit or _available() < GIB:
            state["killed"] = f"killed at {rss / GIB:.2f} GiB resident ({_available() / GIB:.1f} GiB free)"
            os.killpg(proc.pid, signal.SIGKILL)
            return
        time.sleep(0.25)


def _parse_time(text: str) -> dict:
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    seconds = None
    if wall:
        parts = [float(p) for p in wall.group(1).split(":")]
        seconds = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
    return {"peak_rss_bytes": int(peak.group(1)) * 1024 if peak else None, "wall_s": seconds}


def run_one(volume: Path, model: Path, workdir: Path, postprocess: bool, bound: int, kill_factor: float,
            timeout: float) -> dict:
    """One ``fossilsegment segment`` run under /usr/bin/time -v; returns its figures."""
    exe = Path(sys.executable).with_name("fossilsegment")
    outputs = [workdir / "out_labels.nrrd", workdir / "out.seg.nrrd"]
    cmd = ["/usr/bin/time", "-v", str(exe), "segment", str(volume), "--labelmap", str(outputs[0]),
           "-o", str(outputs[1]), "--model", str(model), "--device", "cpu", "--force"]
    if not postprocess:
        cmd += ["--min-island", "0", "--no-fill-holes"]
    log = workdir / "time.log"
    state: dict = {}
    start = time.time()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
        watcher = threading.Thread(target=_watch, args=(proc, int(kill_factor * bound), state), daemon=True)
        watcher.start()
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, _ = proc.communicate()
            state["killed"] = f"timed out after {timeout:.0f} s"
        watcher.join(timeout=5)
    text = log.read_text(errors="replace")
    figures = _parse_time(text)
    if figures["peak_rss_bytes"] is None:  # killed before /usr/bin/time could report: the watchdog's figure
        figures["peak_rss_bytes"] = state.get("max_polled")
    figures["wall_s"] = figures["wall_s"] or round(time.time() - start, 1)
    ok = proc.returncode == 0 and "killed" not in state
    result = {
        "command": " ".join(cmd[2:]), "exit_code": proc.returncode, "ok": ok, "note": state.get("killed", ""),
        **figures, "output_files_bytes": sum(p.stat().st_size for p in outputs if p.exists()),
        "stdout": stdout.strip().splitlines()[-4:] if stdout else [],
    }
    if not ok:
        result["stderr_tail"] = [ln for ln in text.splitlines() if "\r" not in ln][-15:]
    for p in outputs:
        p.unlink(missing_ok=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="0.5,1.6,4.3", help=f"comma list of {', '.join(SHAPES)} (GB)")
    ap.add_argument("--postprocess", choices=["both", "on", "off"], default="both",
                    help="run with the default clean-up, with --min-island 0 --no-fill-holes, or both")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/fossil_mem"))
    ap.add_argument("--keep", action="store_true", help="keep the generated volumes and model")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the results as JSON")
    ap.add_argument("--kill-above", type=float, default=1.5, metavar="F",
                    help="kill a run whose memory passes F x its bound (default 1.5; the machine is shared)")
    ap.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per run (default 3 h)")
    args = ap.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SHAPES]
    if unknown:
        ap.error(f"unknown size(s) {unknown}; choose from {list(SHAPES)}")
    modes = {"both": [True, False], "on": [True], "off": [False]}[args.postprocess]
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        model = make_model(args.workdir / "model")
        for size in sizes:
            shape = SHAPES[size]
            volume = args.workdir / f"volume_{size}GB.nrrd"
            t0 = time.time()
            if not volume.exists():
                make_volume(volume, shape)
            print(f"volume {volume.name}: {shape} uint16, {volume.stat().st_size / 1e9:.2f} GB "
                  f"({time.time() - t0:.0f} s to generate)", flush=True)
            n = int(np.prod(shape, dtype=np.int64))
            input_bytes, output_bytes = 2 * n, n
            bound = input_bytes + output_bytes + GIB
            for postprocess in modes:
                res = run_one(volume, model, args.workdir, postprocess, bound, args.kill_above, args.timeout)
                peak = res["peak_rss_bytes"] or 0
                row = {"size": f"{size} GB", "shape_kji": list(shape), "postprocess": postprocess,
                       "input_bytes": input_bytes, "output_bytes": output_bytes, "bound_bytes": bound,
                       "within_bound": bool(res["ok"] and peak <= bound), **res}
                rows.append(row)
                print(f"  postprocess {'on ' if postprocess else 'off'}: peak {peak / GIB:.2f} GiB, bound "
                      f"{bound / GIB:.2f} GiB, {'within' if row['within_bound'] else 'OVER/FAILED'}, "
                      f"{res['wall_s']:.0f} s {res['note']}", flush=True)
            if not args.keep:
                volume.unlink(missing_ok=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print_table(rows)
    if args.json:
        report = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
                  "machine": {"cpus": os.cpu_count(), "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
                              "platform": platform.platform()},
                  "runs": rows}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r["within_bound"] for r in rows) else 1


def print_table(rows: list[dict]) -> None:
    """Markdown table of the runs."""
    print("\n| size | shape (k, j, i) | post-processing | input GiB | output GiB | bound GiB | peak RSS GiB "
          "| peak - input - output GiB | within bound | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        peak = (r["peak_rss_bytes"] or 0) / GIB
        print(f"| {r['size']} | {'x'.join(map(str, r['shape_kji']))} | {'on' if r['postprocess'] else 'off'} | "
              f"{r['input_bytes'] / GIB:.2f} | {r['output_bytes'] / GIB:.2f} | {r['bound_bytes'] / GIB:.2f} | "
              f"{peak:.2f} | {peak - (r['input_bytes'] + r['output_bytes']) / GIB:.2f} | {'yes' if r['within_bound'] else 'NO ' + r['note']} | {r['wall_s']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
