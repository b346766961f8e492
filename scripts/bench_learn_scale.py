#!/usr/bin/env python
"""Issue 13's scale check: ``fossilsegment learn`` from 5 corrected slices of an N×N×N uint16 volume, peak memory.

The volume is the held-out-family phantom 9002 at size "large" (192×384×384, vertebra) mirrored (symmetric
reflection, like ``np.pad(mode="symmetric")``) along every axis to N×N×N and written as a raw uint16 NRRD a slab
at a time (memory-mapped by the reader, as a large scan would be); the labels file (gzip NRRD, zero except the
5 corrected axial slices, evenly spaced) is the phantom's truth there. Then, in its own process::

    nice -n 10 /usr/bin/time -v fossilsegment learn VOL.nrrd LABELS.nrrd --slices K1,...,K5 --labelmap OUT.nrrd \\
        -o OUT.seg.nrrd --device cpu --force

and prints: wall time, peak RSS, the bound (input + output + 1 GiB, issue 6), and Dice / IoU of the unannotated
slices against the mirrored truth (read back a slab at a time). Then, on the same volume and model, the same
figures for ``fossilsegment segment VOL.nrrd --labelmap SEG.nrrd --device cpu --force`` (what learn cannot be
faster than; ``--no-segment`` skips it). A watchdog kills a run if it passes ``--kill-above`` × the bound or the
machine runs low on memory (the machine is shared). Usage::

    python scripts/bench_learn_scale.py --size 300                      # develop
    python scripts/bench_learn_scale.py --size 1000 --json out.json     # the issue's 1000³
    python scripts/bench_learn_scale.py --size 1000 --depth 100         # a 100-slice stack of 1000² slices
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import GIB, _parse_time, _watch, make_model  # noqa: E402

SEED, SIZE, FAMILY = 9002, "large", "vertebra"
SLAB_BYTES = 64 << 20


def mirror_index(n_out: int, n_in: int) -> np.ndarray:
    """Source index of each of ``n_out`` positions when an axis of ``n_in`` is mirrored (symmetric) to ``n_out``."""
    m = np.arange(n_out) % (2 * n_in)
    return np.where(m < n_in, m, 2 * n_in - 1 - m)


class Mirrored:
    """The phantom mirrored to ``shape``: slabs of its image and truth computed on demand."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        from fossilsegment_engine.phantom import generate

        vol, lab, _ = generate(SEED, SIZE, family=FAMILY)
        self.image, self.truth = vol.array, (lab.array > 0).astype(np.uint8)
        self.spacing, self.shape = vol.spacing, shape
        self.idx = [mirror_index(n, m) for n, m in zip(shape, self.image.shape)]

    def slab(self, which: np.ndarray, k0: int, k1: int) -> np.ndarray:
        ks, js, is_ = self.idx
        return which[np.ix_(ks[k0:k1], js, is_)]

    def annotated(self, n: int) -> list[int]:
        """``n`` evenly spaced slices between the first and last holding bone."""
        has = np.flatnonzero(self.truth.reshape(self.truth.shape[0], -1).any(axis=1)[self.idx[0]])
        return sorted({int(round(v)) for v in np.linspace(has[0], has[-1], n)})


def write_inputs(src: Mirrored, volume: Path, labels: Path, ks: list[int]) -> None:
    """The raw uint16 volume (a slab at a time) and the gzip labels (zero but for slices ``ks``)."""
    from fossilsegment_engine.io.nrrd_stream import volume_fields, write_header, write_nrrd

    k_n, j_n, i_n = src.shape
    fields = volume_fields(src.spacing, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    step = max(1, SLAB_BYTES // (j_n * i_n * 2))
    with open(volume, "wb") as fh:
        write_header(fh, src.shape, np.dtype(np.uint16), {**fields, "encoding": "raw"})
        for k0 in range(0, k_n, step):
            fh.write(np.ascontiguousarray(src.slab(src.image, k0, min(k0 + step, k_n)), dtype=np.uint16).tobytes())
    lab = np.zeros(src.shape, np.uint8)  # untouched pages stay unallocated
    for k in ks:
        lab[k] = src.slab(src.truth, k, k + 1)[0]
    write_nrrd(labels, lab, {**fields, "encoding": "gzip"})


def score(src: Mirrored, out: Path, ks: list[int]) -> tuple[float, float]:
    """(Dice, IoU) of bone over the unannotated axial slices, a slab at a time."""
    from fossilsegment_engine.io.volume_io import read_labelmap

    pred = read_labelmap(out).array
    inter = union = total = 0
    step = max(1, SLAB_BYTES // (src.shape[1] * src.shape[2]))
    for k0 in range(0, src.shape[0], step):
        k1 = min(k0 + step, src.shape[0])
        keep = [k - k0 for k in range(k0, k1) if k not in ks]
        t, p = src.slab(src.truth, k0, k1)[keep] > 0, pred[k0:k1][keep] > 0
        inter += int(np.count_nonzero(t & p))
        union += int(np.count_nonzero(t | p))
        total += int(t.sum() + p.sum())
    return 2 * inter / total, inter / union


def timed_run(cmd: list[str], log: Path, kill_above: int, timeout: float) -> dict:
    """Run ``cmd`` (``/usr/bin/time -v`` inside) under the memory watchdog: exit code, wall, peak RSS, stdout."""
    state: dict = {}
    start = time.time()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
        watcher = threading.Thread(target=_watch, args=(proc, kill_above, state), daemon=True)
        watcher.start()
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            stdout, _ = proc.communicate()
            state["killed"] = f"timed out after {timeout:.0f} s"
        watcher.join(timeout=5)
    text = log.read_text(errors="replace")
    figures = _parse_time(text)
    ok = proc.returncode == 0 and "killed" not in state
    run = {"command": " ".join(cmd), "exit_code": proc.returncode, "note": state.get("killed", ""),
           "wall_s": figures["wall_s"] or round(time.time() - start, 1),
           "peak_rss_bytes": figures["peak_rss_bytes"] or state.get("max_polled", 0), "ok": ok,
           "stdout": stdout.strip().splitlines()[-4:] if stdout else []}
    if not ok:
        run["stderr_tail"] = [ln for ln in text.splitlines() if "\r" not in ln][-20:]
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=300, help="N: the volume is N×N×N uint16 (default 300)")
    ap.add_argument("--depth", type=int, default=None,
                    help="axial slices (default N): a depth × N × N stack (1000² slices without 1000 of them)")
    ap.add_argument("--no-segment", action="store_true", help="skip the segment run beside learn")
    ap.add_argument("--slices", type=int, default=5, help="corrected axial slices (default 5)")
    ap.add_argument("--max-minutes", type=float, default=3.0, help="learn's --max-minutes (default 3)")
    ap.add_argument("--model", default=None, help="learn's --model (default: the bundled default model)")
    ap.add_argument("--tiny-model", action="store_true",
                    help="use bench_memory's tiny U-Net instead (memory and the method's own cost: the default "
                         "network alone takes hours at 1000³ on 2 cores)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/fossil_learn_scale"))
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the figures as JSON")
    ap.add_argument("--kill-above", type=float, default=1.5, metavar="F", help="kill the run past F × the bound")
    ap.add_argument("--timeout", type=float, default=2 * 3600, help="seconds (default 2 h)")
    args = ap.parse_args(argv)
    n = args.size
    shape = (args.depth or n, n, n)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    volume, labels, out, seg = (work / name for name in ("volume.nrrd", "labels.nrrd", "out.nrrd", "out.seg.nrrd"))
    try:
        t0 = time.time()
        src = Mirrored(shape)
        ks = src.annotated(args.slices)
        if not volume.exists() or not labels.exists():
            write_inputs(src, volume, labels, ks)
        print(f"{shape} uint16 {volume.stat().st_size / 1e9:.2f} GB, corrected slices {ks} "
              f"({time.time() - t0:.0f} s to generate)", flush=True)
        if args.tiny_model:
            args.model = str(make_model(work / "tiny-model"))
        exe = Path(sys.executable).with_name("fossilsegment")
        cmd = ["nice", "-n", "10", "/usr/bin/time", "-v", str(exe), "learn", str(volume), str(labels),
               "--slices", ",".join(map(str, ks)), "--labelmap", str(out), "-o", str(seg), "--device", "cpu",
               "--max-minutes", str(args.max_minutes), "--force"] + (["--model", args.model] if args.model else [])
        voxels = int(np.prod(shape, dtype=np.int64))
        bound = 2 * voxels + voxels + GIB
        runs = {"learn": timed_run(cmd, work / "time.log", int(args.kill_above * bound), args.timeout)}
        learn = runs["learn"]
        dice, iou = score(src, out, ks) if learn["ok"] else (None, None)
        if not args.no_segment:
            segment = ["nice", "-n", "10", "/usr/bin/time", "-v", str(exe), "segment", str(volume), "--labelmap",
                       str(work / "segment.nrrd"), "--device", "cpu", "--force"] + (
                ["--model", args.model] if args.model else [])
            runs["segment"] = timed_run(segment, work / "segment_time.log", int(args.kill_above * bound), args.timeout)
        report = {
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": learn["command"], "shape_kji": list(shape), "corrected_slices": ks,
            "exit_code": learn["exit_code"], "note": learn["note"], "wall_s": learn["wall_s"],
            "peak_rss_bytes": learn["peak_rss_bytes"], "input_bytes": 2 * voxels, "output_bytes": voxels,
            "bound_bytes": bound, "within_bound": bool(learn["ok"] and learn["peak_rss_bytes"] <= bound),
            "dice_unannotated": dice, "iou_unannotated": iou, "load_average_after": os.getloadavg(), "runs": runs,
        }
        print(json.dumps(report, indent=2))
        print(f"\n{shape}: learn wall {learn['wall_s']:.0f} s, peak RSS {learn['peak_rss_bytes'] / GIB:.2f} GiB, bound "
              f"{bound / GIB:.2f} GiB ({'within' if report['within_bound'] else 'OVER/FAILED'}), "
              f"Dice {dice}, IoU {iou}")
        if "segment" in runs:
            seg_run = runs["segment"]
            print(f"{shape}: segment wall {seg_run['wall_s']:.0f} s, "
                  f"peak RSS {seg_run['peak_rss_bytes'] / GIB:.2f} GiB "
                  f"({'ok' if seg_run['ok'] else 'FAILED'})")
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return 0 if report["within_bound"] else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
