"""Learn from corrected slices and segment the whole volume: shape from the annotations, appearance from the image.

The method (chosen by measurement: docs/benchmarks/fewshot_method.md; against its peers: fewshot.md):

1. the network is fine-tuned on the axial annotated slices (:func:`.tune.finetune_in_memory`, part of the budget);
2. a per-specimen gradient-boosted classifier (scikit-learn ``HistGradientBoostingClassifier``) learns each voxel's
   class from the fine-tuned network's probabilities, multiscale image features (:mod:`.features`) and the shape
   prior of every annotated axis (:mod:`.priors`). It is trained on the annotated slices' voxels, each slice's prior
   computed *without* that slice (from its neighbours), so the classifier learns how far this specimen's shape
   can be trusted between annotated slices and how far its appearance can;
   (A J or I slice's voxels are drawn from at most ``TRAINING_ROWS`` axial slices, so training never reads the
   whole volume.)
3. the volume is classified slab by slab (memory bounded by the slab; a memory-mapped input's pages handed back
   after each): the network everywhere, the classifier only where it can change the answer (:mod:`.classify`);
   then cleaned as ``segment`` does, and the annotated slices are copied in unchanged. The result does not depend
   on the slab size.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from ..errors import InputError
from ..inference.device import choose_device
from ..inference.normalize import apply_intensity_range, volume_intensity_range
from ..inference.postprocess import PostprocessOptions, postprocess
from ..mapped_pages import release_pages
from ..progress import CancelToken, ProgressCallback, check_cancelled, phases
from ..volume import Volume
from .annotations import Annotation, check_annotation_set, paste_annotations
from .classify import classify_slab
from .features import NetworkProbabilities, image_features
from .priors import AxisPrior, prior_features
from .tune import FinetuneOptions, FinetuneResult, ModelSpec, _load_parent, finetune_in_memory

log = logging.getLogger(__name__)

#: training voxels drawn from the annotated slices (uniformly, split evenly between the slices)
TRAINING_VOXELS = 60_000
SLAB_VOXELS = 2_000_000  # voxels classified at a time (bounds the features' memory)
#: at most this many axial slices are read for the training voxels of slices annotated along J or I
TRAINING_ROWS = 64
#: the fine-tuning gets what the budget leaves after the estimated classification, within these shares of it
FINETUNE_SHARE = (0.25, 0.85)
#: below this the fine-tuning is skipped (a budget already spent reading and timing the volume)
MIN_FINETUNE_SECONDS = 1.0
#: classifying a slice costs at most this many times computing its network and image features (an over-estimate
#: since the trees see only the unsure voxels; kept so the fine-tuning's share is as measured: speed_scale.md §5)
CLASSIFY_OVERHEAD = 1.5


@dataclass
class LearnOptions:
    """Knobs of :func:`learn_and_segment` (defaults: about 3 minutes for 5 slices of 350×350 on 2 CPU cores)."""

    max_minutes: float = 3.0  # the whole job, classifying the volume included
    finetune_steps: int = 400
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    postprocess: PostprocessOptions = field(default_factory=PostprocessOptions)
    #: fine-tune even when the budget is spent before it (the caller keeps the network, e.g. ``--save-model``)
    always_finetune: bool = False

    def __post_init__(self) -> None:
        if not self.max_minutes > 0:
            raise InputError(f"the time budget must be positive, got {self.max_minutes} minutes")


@dataclass
class LearnResult:
    """The labelmap (input geometry, annotated slices unchanged), the fine-tuned network and a report."""

    labels: Volume
    finetuned: FinetuneResult | None  # None when no axial slice holds foreground (the network learns from those)
    report: dict[str, Any]


def _classifier(seed: int) -> HistGradientBoostingClassifier:
    # shallow, strongly regularised trees: a few annotated slices are few independent samples
    return HistGradientBoostingClassifier(max_iter=30, learning_rate=0.25, max_leaf_nodes=15, min_samples_leaf=200,
                                          l2_regularization=1.0, early_stopping=False, random_state=seed)


def _finetune_minutes(seconds_left: float, parent: NetworkProbabilities, array: np.ndarray) -> float:
    """The fine-tuning's share of the budget: what is left after classifying the volume, estimated from timing the
    parent network and the image features on one slab (within FINETUNE_SHARE of the budget)."""
    n = array.shape[0]
    size = _slab_size(array.shape)
    k0 = max(0, n // 2 - size // 2)
    k1 = min(n, k0 + size)
    t0 = time.monotonic()
    _slab_features(array, k0, k1, parent)
    classify = CLASSIFY_OVERHEAD * (time.monotonic() - t0) / (k1 - k0) * n
    left = seconds_left - (time.monotonic() - t0)
    lo, hi = FINETUNE_SHARE
    return float(np.clip(left - classify, lo * left, hi * left)) / 60.0


def _slab_size(shape: Sequence[int]) -> int:
    """Axial slices per slab: about SLAB_VOXELS voxels, so memory stays bounded whatever the slice size."""
    return max(1, min(32, SLAB_VOXELS // (int(shape[1]) * int(shape[2]))))


def _slabs(n: int, size: int) -> list[tuple[int, int]]:
    return [(k, min(k + size, n)) for k in range(0, n, size)]


def _slab_features(array: np.ndarray, k0: int, k1: int, net: NetworkProbabilities,
                   priors: Sequence[AxisPrior] = ()) -> np.ndarray:
    """(k1-k0, J, I, F) network probabilities, image features and (with ``priors``) shape priors of axial slices
    k0..k1-1, assembled into one array (no intermediate concatenations: at 1000² a slab's features are ~128 MB)."""
    image = apply_intensity_range(np.asarray(array[k0:k1]), net.lo, net.hi)
    parts = [net(array, k0, k1), image_features(image)] + ([prior_features(priors, k0, k1)] if priors else [])
    out = np.empty(parts[0].shape[:3] + (sum(p.shape[-1] for p in parts),), np.float32)
    start = 0
    for part in parts:
        out[..., start:start + part.shape[-1]] = part
        start += part.shape[-1]
    return out


def _with_priors(base: np.ndarray, priors: Sequence[AxisPrior], k0: int, k1: int) -> np.ndarray:
    if not priors:  # none with fewer than two annotated slices on every axis
        return base
    return np.concatenate([base, prior_features(priors, k0, k1)], axis=-1)


def prior_axes(anns: Sequence[Annotation]) -> list[int]:
    """Axes with at least two annotated slices: only there can a slice's prior be learnt from its neighbours."""
    return [axis for axis in range(3) if sum(a.axis == axis for a in anns) >= 2]


def training_rows(n: int) -> np.ndarray:
    """The axial slices whose voxels of annotated J or I slices train the classifier: at most TRAINING_ROWS, evenly
    spread (every slice of a volume with fewer), so training never runs the network over the whole volume."""
    return np.unique(np.linspace(0, n - 1, min(n, TRAINING_ROWS)).round().astype(np.int64))


def _rows_of(ann: Annotation, rows: np.ndarray) -> np.ndarray:
    """The axial slices that hold the training voxels of ``ann``."""
    return np.array([ann.index]) if ann.axis == 0 else rows


def _row_voxels(block: np.ndarray, ann: Annotation, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(features (m, F), labels (m,)) of ``ann``'s voxels in axial slice k, from that slice's features (1, J, I, F)."""
    if ann.axis == 0:
        return block[0].reshape(-1, block.shape[-1]), ann.labels.reshape(-1)
    if ann.axis == 1:
        return block[0, ann.index], ann.labels[k]
    return block[0, :, ann.index], ann.labels[k]


def _training_set(array: np.ndarray, anns: list[Annotation], net: NetworkProbabilities, spacing: Sequence[float],
                  rng: np.random.Generator, progress: ProgressCallback | None,
                  cancel: CancelToken | None) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of voxels drawn from the annotated slices, each slice's prior computed without it.

    The voxels are drawn first (uniformly, an even share per slice; a J or I slice's from its rows in
    :func:`training_rows`), then only the axial slices holding them are read, one at a time, and only the drawn
    voxels are kept: memory and time do not grow with the number of slices.
    """
    shape = array.shape
    axes = prior_axes(anns)
    sdf_cache: dict[int, np.ndarray] = {}  # each slice's signed distance, shared by the leave-one-out priors
    loo = {id(a): [AxisPrior(axis, [b for b in anns if b is not a], shape, spacing, sdf_cache) for axis in axes]
           for a in anns}
    rows = training_rows(shape[0])
    per = max(1, TRAINING_VOXELS // len(anns))
    draws = {}  # per annotation: the drawn voxels, as flat indices into its rows' voxels in k order
    for a in anns:
        width = a.labels.size if a.axis == 0 else a.labels.shape[1]
        total = len(_rows_of(a, rows)) * width
        draws[id(a)] = (width, rng.choice(total, size=min(per, total), replace=False))
    xs = {id(a): np.zeros((len(draws[id(a)][1]), 0), np.float32) for a in anns}
    ys = {id(a): np.zeros(len(draws[id(a)][1]), np.uint8) for a in anns}
    needed = sorted({int(k) for a in anns for k in _rows_of(a, rows)})
    for n, k in enumerate(needed):
        check_cancelled(cancel)
        base = _slab_features(array, k, k + 1, net)
        release_pages(array)
        for a in anns:
            where = np.flatnonzero(_rows_of(a, rows) == k)
            if not len(where):
                continue
            width, take = draws[id(a)]
            pick = np.flatnonzero(take // width == where[0])
            if not len(pick):
                continue
            f, y = _row_voxels(_with_priors(base, loo[id(a)], k, k + 1), a, k)
            if xs[id(a)].shape[1] != f.shape[-1]:
                xs[id(a)] = np.zeros((len(take), f.shape[-1]), np.float32)
            xs[id(a)][pick] = f[take[pick] % width]
            ys[id(a)][pick] = np.asarray(y)[take[pick] % width]
        if progress is not None:
            progress(n + 1, len(needed))
    return np.concatenate([xs[id(a)] for a in anns]), np.concatenate([ys[id(a)] for a in anns])


def learn_and_segment(volume: Volume, annotations: Sequence[Annotation], model: ModelSpec = None,
                      options: LearnOptions | None = None, progress: ProgressCallback | None = None,
                      cancel: CancelToken | None = None) -> LearnResult:
    """Segment ``volume`` from corrected slices ``annotations`` (any axis) and ``model``; see the module docstring.

    Bad input (see :func:`.annotations.check_annotation_set`) → :class:`InputError` before any work;
    ``cancel`` → :class:`~fossilsegment_engine.errors.Cancelled`.
    """
    opts = options or LearnOptions()
    t_start = time.monotonic()
    module, config, parent = _load_parent(model)
    anns = check_annotation_set(volume, annotations, config.n_classes, config.class_names)
    tune_p, train_p, seg_p, clean_p = phases(progress, [4, 1, 4, 1])
    array = volume.array
    out = np.zeros(volume.shape, dtype=np.uint8)
    paste_annotations(out, anns)
    axial = [a.index for a in anns if a.axis == 0]
    finetuned, tune_report = None, None
    device = choose_device(opts.device)
    intensity = volume_intensity_range(array, config.normalization)
    tune_minutes = 0.0
    if axial and np.any(out[axial] > 0):  # the network learns from the axial slices' foreground
        tune_minutes = _finetune_minutes(opts.max_minutes * 60 - (time.monotonic() - t_start),
                                         NetworkProbabilities(module, config, device, opts.precision, intensity),
                                         array)
        if opts.always_finetune:
            tune_minutes = max(tune_minutes, MIN_FINETUNE_SECONDS / 60)
    if tune_minutes * 60 >= MIN_FINETUNE_SECONDS:  # else the budget is spent: classify with the parent network
        res = finetune_in_memory(volume, volume.with_array(out), axial, (module, config),
                                 FinetuneOptions(max_minutes=tune_minutes,
                                                 max_steps=opts.finetune_steps, device=opts.device,
                                                 precision=opts.precision, seed=opts.seed),
                                 tune_p, cancel)
        module, config, tune_report, finetuned = res.module, res.config, res.report, res
    net = NetworkProbabilities(module, config, device, opts.precision, intensity)
    spacing_kji = tuple(reversed(volume.spacing))
    rng = np.random.default_rng(opts.seed)
    t0 = time.monotonic()
    x, y = _training_set(array, anns, net, spacing_kji, rng, train_p, cancel)
    if len(np.unique(y)) < 2:
        raise InputError("every annotated voxel has the same label: annotate some matrix (0) beside the bone")
    clf = _classifier(opts.seed).fit(x, y)
    train_s = time.monotonic() - t0
    priors = [AxisPrior(axis, anns, volume.shape, spacing_kji) for axis in prior_axes(anns)]
    release_pages(array)
    t0 = time.monotonic()
    halo = config.context_slices // 2  # the network reads this many slices on each side of a slab
    tree_voxels = 0
    for k0, k1 in _slabs(volume.shape[0], _slab_size(volume.shape)):
        check_cancelled(cancel)
        out[k0:k1], gated = classify_slab(clf, array, k0, k1, net, priors)
        tree_voxels += gated
        release_pages(array, 0, k1 - halo)  # a memory-mapped input never stays resident
        if seg_p is not None:
            seg_p(k1, volume.shape[0])
    predict_s = time.monotonic() - t0
    if opts.postprocess is not None:
        out = postprocess(out, [c["value"] for c in config.classes if c["value"] > 0], opts.postprocess,
                          inplace=True, progress=clean_p, cancel=cancel)
    paste_annotations(out, anns)  # a corrected slice is never changed
    module.to("cpu", memory_format=torch.contiguous_format)
    report = {
        "method": "fine-tuned network + gradient-boosted voxel classifier on image features and shape priors",
        "annotations": [a.name for a in anns], "parent": parent, "finetune": tune_report,
        "training_voxels": int(len(y)), "classify_seconds": round(predict_s, 1), "train_seconds": round(train_s, 1),
        "tree_share": round(tree_voxels / out.size, 4),  # of the voxels, those the classifier re-classified
        "seconds": round(time.monotonic() - t_start, 1),
        "options": {k: v for k, v in asdict(opts).items() if k != "postprocess"},
    }
    log.info("learned from %d slice(s) in %.0f s", len(anns), report["seconds"])
    return LearnResult(volume.with_array(out), finetuned, report)
