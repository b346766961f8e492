"""Evaluate a model (and the classical baselines) on labelled specimen folders.

For every specimen: the model's labelmap through :class:`~..inference.predictor.Predictor` (exactly what
users get, clean-up included), global Otsu and seeded region growing (seeds from the truth: an advantage),
each scored with :mod:`.metrics`. Slices and voxel counts are pooled over all specimens, over each
``--data`` folder, and over each phantom family (``phantom.json``). With ``out_dir``: ``report.json``,
``report.md`` (Markdown tables) and ``figure.png`` (rows of slices: scan | truth | model | Otsu | region
growing), written atomically; bad input raises before anything is written.
"""

from __future__ import annotations

import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..atomic import atomic_dir
from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, check_cancelled
from .baselines import otsu_baseline, region_growing_baseline
from .data import SpecimenPaths, find_specimens, read_pair
from .figure import comparison_figure, write_png
from .metrics import ClassScores, class_scores

METHODS = ("model", "otsu", "region_growing")
METHOD_TITLES = {"model": "Model", "otsu": "Otsu (global)", "region_growing": "Region growing (truth seeds)"}
BASELINE_NOTE = (
    "Otsu: one global SimpleITK OtsuThreshold per volume, brighter class = fossil. Region growing: SimpleITK "
    "ConnectedThreshold from 20 seeds drawn from the ground-truth bone (an advantage no real user has), window "
    "= mean ± 2 std of the seeds' 3×3×3 neighbourhoods. Both label everything they find as Bone."
)


def _summaries(pool: dict[str, dict[str, ClassScores]]) -> dict[str, dict[str, Any]]:
    return {m: {c: s.summary() for c, s in per_class.items()} for m, per_class in pool.items()}


def _merge(into: dict[str, dict[str, ClassScores]], scores: dict[str, dict[str, ClassScores]]) -> None:
    for method, per_class in scores.items():
        slot = into.setdefault(method, {})
        for name, s in per_class.items():
            slot[name] = slot[name].merge(s) if name in slot else s


def _as_segmenter(model: Any, device: str) -> Any:
    from ..inference.predictor import Predictor

    return model if isinstance(model, Predictor) else Predictor.load(model, device=device)


def evaluate(
    model: Any,
    data_dirs: Sequence[Path | str],
    baselines: bool = True,
    out_dir: Path | str | None = None,
    device: str = "auto",
    force: bool = False,
    figure_rows: int = 6,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, Any]:
    """Score ``model`` (name, folder or ``Predictor``) on every specimen of ``data_dirs``; returns the report dict.

    Truth labels of classes the model lacks (e.g. teeth, for a bone-only model) count as background.
    """
    if out_dir is not None:
        from ..atomic import check_can_write

        check_can_write(out_dir, force)
    seg = _as_segmenter(model, device)
    classes = seg.classes
    by_dir: list[tuple[str, SpecimenPaths]] = []
    for d in data_dirs:
        by_dir += [(str(d), p) for p in find_specimens([d])]
    if not by_dir:
        raise InputError("no specimen to evaluate")
    methods = METHODS if baselines else METHODS[:1]
    overall: dict[str, dict[str, ClassScores]] = {}
    groups: dict[str, dict[str, dict[str, dict[str, ClassScores]]]] = {"data_dir": {}, "family": {}}
    specimens: list[dict[str, Any]] = []
    figure_candidates: list[dict[str, Any]] = []
    for n, (data_dir, paths) in enumerate(by_dir):
        check_cancelled(cancel)
        volume, labels = read_pair(paths, len(classes), extra_as_background=True)  # e.g. teeth, bone-only model
        truth = labels.array
        info = _phantom_info(paths.folder)
        t0 = time.monotonic()
        preds = {"model": seg.predict_labels(volume, cancel=cancel).array}
        seconds = time.monotonic() - t0
        if baselines:
            preds["otsu"] = otsu_baseline(volume.array)
            preds["region_growing"] = region_growing_baseline(volume.array, truth)
        scores = {m: class_scores(truth, preds[m], classes) for m in methods}
        family = str(info.get("family", "unknown"))
        _merge(overall, scores)
        _merge(groups["data_dir"].setdefault(data_dir, {}), scores)
        _merge(groups["family"].setdefault(family, {}), scores)
        specimens.append({
            "name": paths.name, "folder": str(paths.folder), "data_dir": data_dir, "family": family,
            "seed": info.get("seed"), "shape": list(volume.shape), "model_seconds": round(seconds, 2),
            "metrics": {m: {c: s.summary() for c, s in sc.items()} for m, sc in scores.items()},
        })
        k = int(np.argmax(np.count_nonzero(truth.reshape(truth.shape[0], -1), axis=1)))
        figure_candidates.append({"image": volume.array[k], "labels": {"truth": truth[k], **{m: p[k] for m, p in preds.items()}},
                                  "group": data_dir, "name": f"{paths.name} k={k}"})
        if progress is not None:
            progress(n + 1, len(by_dir))
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": seg.config.name, "architecture": seg.config.describe_architecture(),
                  "weights_sha256": seg.config.weights_sha256},
        "device": str(seg.device), "host": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "data_dirs": [str(d) for d in data_dirs],
        "metric_note": "mean_dice/mean_iou: mean over axial slices where truth or prediction has the class "
                       "(paper's figure); volume_dice/volume_iou: over all voxels. Pooled over specimens.",
        "baseline_note": BASELINE_NOTE if baselines else None,
        "overall": _summaries(overall),
        "by_data_dir": {k: _summaries(v) for k, v in groups["data_dir"].items()},
        "by_family": {k: _summaries(v) for k, v in groups["family"].items()},
        "specimens": specimens,
    }
    if out_dir is not None:
        rows = _pick_rows(figure_candidates, figure_rows)
        report["figure_rows"] = [r["name"] for r in rows]
        report["figure_columns"] = ["scan", "truth", *methods]
        figure = comparison_figure(rows, ["scan", "truth", *methods], classes)
        with atomic_dir(out_dir, force=force) as tmp:
            (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
            (tmp / "report.md").write_text(markdown_report(report), encoding="utf-8")
            write_png(figure, tmp / "figure.png")
    return report


def _phantom_info(folder: Path) -> dict[str, Any]:
    p = folder / "phantom.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
    except (OSError, ValueError):
        data = {}
    return data if isinstance(data, dict) else {}


def _pick_rows(candidates: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` rows, taken round-robin from each data folder."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    for c in candidates:
        by_group.setdefault(c["group"], []).append(c)
    rows: list[dict[str, Any]] = []
    while len(rows) < n and any(by_group.values()):
        for g in list(by_group):
            if by_group[g] and len(rows) < n:
                rows.append(by_group[g].pop(0))
    return rows


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}"


def markdown_table(summaries: dict[str, dict[str, Any]], classes: Iterable[str] | None = None) -> str:
    """Rows = methods, columns = mean Dice / mean IoU / volume Dice / volume IoU per class."""
    names = list(classes) if classes is not None else list(next(iter(summaries.values())).keys())
    head = "| Method | " + " | ".join(f"{c} mean Dice | {c} mean IoU | {c} volume Dice | {c} volume IoU"
                                      for c in names) + " |"
    sep = "|---|" + "---:|" * (4 * len(names))
    lines = [head, sep]
    for method, per_class in summaries.items():
        cells = []
        for c in names:
            s = per_class.get(c) or {}
            cells += [_fmt(s.get("mean_dice")), _fmt(s.get("mean_iou")), _fmt(s.get("volume_dice")),
                      _fmt(s.get("volume_iou"))]
        lines.append(f"| {METHOD_TITLES.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_report(report: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    m = report["model"]
    out = [f"# Evaluation of {m['name']} ({m['architecture']})", "",
           f"Date {report['date']}; device {report['device']}; data {', '.join(report['data_dirs'])}; "
           f"{len(report['specimens'])} specimens.", "", report["metric_note"], ""]
    if report.get("baseline_note"):
        out += [report["baseline_note"], ""]
    out += ["## All specimens", "", markdown_table(report["overall"])]
    for title, key in (("By data folder", "by_data_dir"), ("By phantom family", "by_family")):
        if len(report[key]) > 1 or key == "by_family":
            out += [f"## {title}", ""]
            for name, summ in report[key].items():
                out += [f"### {name}", "", markdown_table(summ)]
    if report.get("figure_rows"):
        out += ["## Figure", "", "`figure.png`: columns " + " | ".join(report["figure_columns"])
                + "; rows " + "; ".join(report["figure_rows"]) + ".", ""]
    return "\n".join(out)
