"""Passes of a 2D slice model over one volume, and the sum of several passes' class probabilities.

A pass shows the model the volume one way: the axial slices as they are or mirrored, or the volume resliced
along its other two axes (transposes of the array, no resampling). Its probabilities are put back in the
volume's layout before they are summed. Used by thorough segmentation (:class:`~.predictor.Predictor`,
:data:`THOROUGH`) and by the uncertainty methods (:mod:`.uncertainty`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..progress import CancelToken, ProgressCallback, check_cancelled
from ..roi import Box

#: ``predict(array, box, progress, cancel)`` → uint8 probabilities ``(classes, *array.shape)``, 0 outside ``box``
PredictFn = Callable[[np.ndarray, Box, "ProgressCallback | None", "CancelToken | None"], np.ndarray]

#: a resliced view is used only where its slices look like those the model learnt from: at least this many
#: pixels a side (a 3-slice stack has 3-pixel-high coronal slices) …
MIN_VIEW_PIXELS = 32
#: … and pixels at most this much longer one way than the other (docs/benchmarks/thorough.md)
MAX_VIEW_ASPECT = 2.5


@dataclass(frozen=True)
class Pass:
    """One way of showing the volume to the model."""

    name: str
    forward: Callable[[np.ndarray], np.ndarray]  # (K, J, I) array → the array this pass slices along axis 0
    back: Callable[[np.ndarray], np.ndarray]  # its probabilities (C, …) → the volume's layout
    move: Callable[[Box, tuple[int, ...]], Box]  # a box of the volume (of that shape) → the same voxels there
    plane: tuple[int, int] = (1, 2)  # the volume's axes (0 k, 1 j, 2 i) that span this pass's slices


def _mirror_j(b: Box, shape: tuple[int, ...]) -> Box:
    return Box(b.k0, b.k1, shape[1] - b.j1, shape[1] - b.j0, b.i0, b.i1)


def _mirror_i(b: Box, shape: tuple[int, ...]) -> Box:
    return Box(b.k0, b.k1, b.j0, b.j1, shape[2] - b.i1, shape[2] - b.i0)


AXIAL = Pass("axial", lambda a: a, lambda p: p, lambda b, s: b)
MIRROR_I = Pass("axial mirrored left-right", lambda a: a[:, :, ::-1], lambda p: p[..., ::-1], _mirror_i)
MIRROR_J = Pass("axial mirrored up-down", lambda a: a[:, ::-1, :], lambda p: p[..., ::-1, :], _mirror_j)
MIRROR_IJ = Pass("axial mirrored both ways", lambda a: a[:, ::-1, ::-1], lambda p: p[..., ::-1, ::-1],
                 lambda b, s: _mirror_i(_mirror_j(b, s), s))
CORONAL = Pass("coronal", lambda a: a.transpose(1, 0, 2), lambda p: p.transpose(0, 2, 1, 3),
               lambda b, s: Box(b.j0, b.j1, b.k0, b.k1, b.i0, b.i1), plane=(0, 2))
SAGITTAL = Pass("sagittal", lambda a: a.transpose(2, 0, 1), lambda p: p.transpose(0, 2, 3, 1),
                lambda b, s: Box(b.i0, b.i1, b.k0, b.k1, b.j0, b.j1), plane=(0, 1))

#: thorough segmentation: three views and two mirrors (best of the sets measured, docs/benchmarks/thorough.md)
THOROUGH = (AXIAL, CORONAL, SAGITTAL, MIRROR_I, MIRROR_J)


def usable_passes(passes: Sequence[Pass], shape: tuple[int, ...], spacing: Sequence[float]) -> tuple[Pass, ...]:
    """``passes`` without the resliced views whose slices are under :data:`MIN_VIEW_PIXELS` a side or whose
    pixels are more than :data:`MAX_VIEW_ASPECT` times longer one way (``spacing`` is ``(si, sj, sk)``)."""
    by_axis = (float(spacing[2]), float(spacing[1]), float(spacing[0]))  # k, j, i

    def ok(p: Pass) -> bool:
        if p.plane == (1, 2):
            return True
        a, b = p.plane
        sides, steps = (shape[a], shape[b]), (by_axis[a], by_axis[b])
        return min(sides) >= MIN_VIEW_PIXELS and max(steps) <= MAX_VIEW_ASPECT * min(steps)

    return tuple(p for p in passes if ok(p))


def summed_probabilities(predict: PredictFn, array: np.ndarray, passes: Sequence[Pass], box: Box,
                         progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> np.ndarray:
    """The sum over ``passes`` of the uint8 probabilities of ``box``, as uint16 ``(classes, *array.shape)``.

    ``progress(done, total)`` counts the slices of every pass (each pass slices the box along its own axis).
    """
    if not passes or len(passes) > 257:  # 257 × 255 still fits uint16
        raise ValueError(f"between 1 and 257 passes, got {len(passes)}")
    boxes = [p.move(box, array.shape) for p in passes]
    total = sum(b.shape[0] for b in boxes)
    acc: np.ndarray | None = None
    done = 0
    for p, b in zip(passes, boxes):
        check_cancelled(cancel)

        def report(d: int, _t: int, offset: int = done) -> None:
            if progress is not None:
                progress(offset + d, total)

        probs = p.back(predict(np.ascontiguousarray(p.forward(array)), b, report, cancel))
        if acc is None:
            acc = np.zeros(probs.shape, dtype=np.uint16)
        acc += probs
        done += b.shape[0]
    assert acc is not None
    return acc
