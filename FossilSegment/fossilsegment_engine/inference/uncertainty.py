"""Per-voxel uncertainty of a segmentation, and the axial slices most worth correcting (issue 5).

Methods (each returns the entropy of the mean class probabilities, divided by log(n_classes) → [0, 1]):

- ``"tta"`` — test-time augmentation: the volume as it is and flipped left-right, up-down and both
  (4 passes; each flip undone before averaging).
- ``"views"`` — disagreement between views: the axial model run on axial, coronal and sagittal slices
  (3 passes; the reslices are transposes of the array, no resampling).
- ``"softmax"`` — the single axial pass's own entropy (1 pass; the cheap baseline).

``scripts/bench_finetune.py`` measures which predicts error voxels better (AUROC) and which ranks the worst
slices better (Spearman); :data:`DEFAULT_METHOD` is the winner there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, check_cancelled
from ..roi import Box
from ..volume import Volume
from .passes import AXIAL, CORONAL, MIRROR_I, MIRROR_IJ, MIRROR_J, SAGITTAL, Pass, summed_probabilities

_METHOD_PASSES = {"tta": (AXIAL, MIRROR_I, MIRROR_J, MIRROR_IJ), "views": (AXIAL, CORONAL, SAGITTAL),
                  "softmax": (AXIAL,)}
METHODS = tuple(_METHOD_PASSES)
#: chosen by scripts/bench_finetune.py (AUROC of uncertainty vs error voxels on held-out-family phantoms)
DEFAULT_METHOD = "tta"


def _passes(method: str) -> tuple[Pass, ...]:
    if method not in _METHOD_PASSES:
        raise InputError(f"unknown uncertainty method {method!r}; choose one of: {', '.join(METHODS)}")
    return _METHOD_PASSES[method]


def mean_probabilities(segmenter: Any, volume: Volume, method: str = DEFAULT_METHOD,
                       progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                       roi: Box | None = None) -> np.ndarray:
    """Mean softmax probabilities ``(n_classes, K, J, I)`` float32 over the passes of ``method``.

    ``roi``: only that box is predicted in every pass (all probabilities 0 outside it, entropy 0 there).
    Each pass is the segmenter's single pass (a thorough predictor does not repeat its own passes here).
    """
    passes = _passes(method)
    if roi is not None:
        roi.check_inside(volume.shape)
    single = {"thorough": False} if getattr(segmenter, "thorough", False) else {}

    def predict(array: np.ndarray, box: Box, report: ProgressCallback | None, cancel: CancelToken | None
                ) -> np.ndarray:
        where = {} if roi is None else {"roi": box}
        probs = segmenter.predict_probabilities(Volume(array), progress=report, cancel=cancel, postprocess=None,
                                                **where, **single).probabilities
        return np.stack([p.array for p in probs])

    box = roi if roi is not None else Box.whole(volume.shape)
    acc = summed_probabilities(predict, volume.array, passes, box, progress, cancel)
    return acc.astype(np.float32) / np.float32(255.0 * len(passes))


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy over axis 0 of class probabilities, divided by log(n_classes): float32 in [0, 1]."""
    p = probs / np.maximum(probs.sum(axis=0, keepdims=True), 1e-12)
    ent = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=0)
    return np.clip(ent / np.log(max(probs.shape[0], 2)), 0.0, 1.0).astype(np.float32)


def uncertainty_volume(segmenter: Any, volume: Volume, method: str = DEFAULT_METHOD,
                       progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                       return_labels: bool = False, roi: Box | None = None) -> Volume | tuple[Volume, Volume]:
    """Per-voxel uncertainty (float32 in [0, 1], ``volume``'s geometry); with ``return_labels`` also the
    uint8 labelmap of the averaged probabilities (no clean-up). ``roi``: only that box (0 outside it)."""
    _passes(method)  # unknown method → InputError before any work
    probs = mean_probabilities(segmenter, volume, method, progress, cancel, roi)
    check_cancelled(cancel)
    unc = volume.with_array(normalized_entropy(probs), uncertainty_method=method)
    if not return_labels:
        return unc
    return unc, volume.with_array(probs.argmax(axis=0).astype(np.uint8))


def _as_3d(uncertainty: np.ndarray | Volume) -> np.ndarray:
    array = uncertainty.array if isinstance(uncertainty, Volume) else np.asarray(uncertainty)
    if array.ndim != 3:
        raise InputError(f"uncertainty must be a 3D volume, got shape {array.shape}")
    return array


def slice_means(uncertainty: np.ndarray | Volume, axis: int = 0) -> np.ndarray:
    """Mean uncertainty of each slice along ``axis`` (0 k, 1 j, 2 i of the KJI array)."""
    array = _as_3d(uncertainty)
    return array.mean(axis=tuple(d for d in range(3) if d != axis), dtype=np.float64)


def slice_ranking(uncertainty: np.ndarray | Volume, exclude: Iterable[int] = (),
                  axis: int = 0) -> list[tuple[int, float]]:
    """Slices along ``axis`` (default axial) by mean uncertainty, highest first, as ``(index, mean)``; ``exclude``
    (e.g. corrected) left out."""
    means = slice_means(uncertainty, axis)
    skip = {int(k) for k in exclude}
    order = sorted((k for k in range(len(means)) if k not in skip), key=lambda k: (-means[k], k))
    return [(int(k), float(means[k])) for k in order]


def suggest_slices(uncertainty: np.ndarray | Volume, count: int = 5, axes: Sequence[int] = (0,),
                   exclude: Iterable[tuple[int, int]] = (), min_gap: int | None = None) -> list[tuple[int, int, float]]:
    """Up to ``count`` slices to correct next, ``(axis, index, mean uncertainty)``, along any of ``axes``.

    Greedy and spread out: the slice (of any allowed axis) with the highest mean uncertainty is taken, then the
    slices of the same axis closer than ``min_gap`` to it are passed over (a neighbour of a corrected slice adds
    little: the learn method interpolates between corrected slices); so are those near ``exclude`` (the
    corrected slices, ``(axis, index)``). ``min_gap`` defaults to the axis' slices / (2 × ``count``), at least 1.
    Means are per voxel, so slices of different sizes compare. Ties: lower axis, then lower index.
    """
    array = _as_3d(uncertainty)
    if count < 1 or not axes or any(a not in (0, 1, 2) for a in axes):
        raise InputError(f"suggest at least one slice along axes 0 (k), 1 (j) or 2 (i); got {count} along {axes}")
    means = {a: slice_means(array, a) for a in sorted(set(axes))}
    gaps = {a: max(1, min_gap if min_gap is not None else len(m) // (2 * count)) for a, m in means.items()}
    open_ = {a: np.ones(len(m), bool) for a, m in means.items()}

    def close(axis: int, index: int) -> None:
        if axis in open_:
            g = gaps[axis]
            open_[axis][max(0, index - g + 1):index + g] = False

    for axis, index in exclude:
        close(int(axis), int(index))
    out: list[tuple[int, int, float]] = []
    while len(out) < count:
        best = None
        for a, m in means.items():
            candidates = np.flatnonzero(open_[a])
            if candidates.size:
                k = int(candidates[np.argmax(m[candidates])])  # the first of equal means
                if best is None or m[k] > best[2]:
                    best = (a, k, float(m[k]))
        if best is None:
            break
        out.append(best)
        close(best[0], best[1])
    return out


def as_uint8(uncertainty: Volume) -> Volume:
    """The uncertainty scaled to 0..255 uint8 (255 = maximal entropy)."""
    return uncertainty.with_array(np.rint(np.clip(uncertainty.array, 0, 1) * 255).astype(np.uint8))


def write_uncertainty(uncertainty: Volume, path: Path | str, force: bool = False, scaled_uint8: bool = False) -> Path:
    """Write the uncertainty volume (float32 in [0, 1], or uint8 0..255 with ``scaled_uint8``), same geometry."""
    from ..io.volume_io import write_volume

    return write_volume(as_uint8(uncertainty) if scaled_uint8 else uncertainty, path, force=force)


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for the boolean ``positive`` (rank formula, ties averaged)."""
    from scipy.stats import rankdata

    s = np.asarray(score, dtype=np.float64).ravel()
    pos = np.asarray(positive, dtype=bool).ravel()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (nan when either is constant)."""
    from scipy.stats import spearmanr

    if np.ptp(np.asarray(a, float)) == 0 or np.ptp(np.asarray(b, float)) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)
