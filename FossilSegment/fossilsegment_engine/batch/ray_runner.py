"""Scale-out on a Ray cluster: one task per scan, each worker loading the model once.

Every node must see the inputs, the model folder and the output folder at the same paths (a shared
file system): workers write the scan folders themselves, exactly as the local run does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import FossilSegmentError
from .scan import BatchOptions, ScanResult, load_segmenter, process_scan

log = logging.getLogger(__name__)

#: Segmenters already loaded in this (worker) process, by options
_LOADED: dict[tuple, Any] = {}


def _segmenter(options: BatchOptions) -> Any:
    key = (options.model, options.device, options.batch_size, options.precision, options.backend, options.thorough)
    if key not in _LOADED:
        _LOADED[key] = load_segmenter(options)
    return _LOADED[key]


def _scan_task(input_path: str, scan_dir: str, options: BatchOptions) -> ScanResult:
    """Body of the Ray task (runs on a worker)."""
    from ..errors import ModelError

    try:
        segmenter = _segmenter(options)
    except ModelError as exc:
        return ScanResult(scan=Path(scan_dir).name, input=input_path, status="failed", error=str(exc))
    return process_scan(segmenter, input_path, scan_dir, options)


def import_ray() -> Any:
    """The ``ray`` module, or a clear error telling how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise FossilSegmentError("--ray needs the Ray package: pip install 'fossilsegment[ray]'") from exc
    return ray


def run_on_ray(jobs: Sequence[tuple[Path, Path]], options: BatchOptions, address: str | None,
               on_result: Callable[[ScanResult], None]) -> list[ScanResult]:
    """Run ``(input, scan_dir)`` jobs as Ray tasks; ``on_result`` is called as each finishes.

    Connects with ``ray.init(address)`` unless Ray is already initialised (then that instance is used and
    left running). Tasks ask for one GPU each when the cluster has GPUs, else one CPU.
    """
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise FossilSegmentError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from exc
    try:
        gpus = float(ray.cluster_resources().get("GPU", 0))
        resources = {"num_gpus": 1, "num_cpus": 1} if gpus >= 1 else {"num_cpus": 1}
        log.info("Ray cluster: %s; one task per scan with %s", ray.cluster_resources(), resources)
        task = ray.remote(max_retries=0, **resources)(_scan_task)
        pending = [task.remote(str(inp), str(out), options) for inp, out in jobs]
        results: list[ScanResult] = []
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            result = ray.get(ready[0])
            results.append(result)
            on_result(result)
        return results
    finally:
        if started:
            ray.shutdown()
