"""``run_batch``: many scans, model loaded once, resumable, one failure never stops the rest."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..errors import InputError
from ..progress import ProgressCallback
from . import layout
from .scan import BatchOptions, ScanResult, load_segmenter, process_scan, skipped_result
from .summary import write_summary

log = logging.getLogger(__name__)


def _absolute_model(options: BatchOptions) -> BatchOptions:
    """Options whose model is checked now: a bundled name stays a name, a folder becomes absolute (for workers)."""
    from ..models.store import bundled_models, resolve_model_dir

    folder = resolve_model_dir(options.model)
    if options.model is None or (str(options.model) in bundled_models() and "/" not in str(options.model)):
        return options
    return replace(options, model=str(folder.resolve()))


def run_batch(
    inputs: Sequence[Path | str],
    outdir: Path | str,
    options: BatchOptions = BatchOptions(),
    ray_address: Optional[str] = None,
    use_ray: bool = False,
    progress: Optional[ProgressCallback] = None,
    on_result: Optional[Callable[[ScanResult], None]] = None,
) -> list[ScanResult]:
    """Segment every input into ``outdir/<scan>/`` and write ``outdir/summary.csv``; returns one result per input.

    Scans with complete outputs (``done.json``) are skipped unless ``options.force``; incomplete ones are
    redone from scratch. ``use_ray`` runs one Ray task per scan (``ray_address``: ``auto``, an address, or
    None to start a local instance / use the one already initialised).
    """
    if not inputs:
        raise InputError("no input scans given")
    outdir = layout.check_output_dir(outdir)
    summary_path = outdir / layout.SUMMARY_FILE
    names = layout.scan_names(inputs)
    results: dict[str, ScanResult] = {}
    jobs: list[tuple[Path, Path]] = []
    for path, name in zip(inputs, names):
        done = None if options.force else layout.read_done(outdir / name, path)
        if done is not None:
            results[name] = skipped_result(name, Path(path), done)
            log.info("skipping %s: done in an earlier run", path)
        else:
            jobs.append((Path(path), outdir / name))
    total, finished = len(names), len(results)

    def record(result: ScanResult) -> None:
        nonlocal finished
        results[result.scan] = result
        finished += 1
        write_summary([results[n] for n in names if n in results], summary_path)
        if result.status == "failed":
            log.error("scan %s failed: %s", result.input, result.error)
        if on_result is not None:
            on_result(result)
        if progress is not None:
            progress(finished, total)

    if progress is not None:
        progress(finished, total)
    if jobs:
        options = _absolute_model(options)  # a bad model stops the batch before any scan
        if use_ray:
            from .ray_runner import run_on_ray

            run_on_ray(jobs, options, ray_address, record)
        else:
            segmenter = load_segmenter(options)
            for path, scan_dir in jobs:
                record(process_scan(segmenter, path, scan_dir, options))
    write_summary([results[n] for n in names], summary_path)
    return [results[n] for n in names]
