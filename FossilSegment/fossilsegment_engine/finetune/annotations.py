"""Annotated (corrected) slices: parsing, checking and pasting.

``parse_slice_list``/``check_annotations`` serve ``fossilsegment finetune`` (axial slices only); the
:class:`Annotation` functions serve ``fossilsegment learn``, which takes slices along any of the three axes.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..errors import InputError
from ..volume import Volume


def parse_slice_list(text: str) -> list[int]:
    """``"10,80,150"`` (also ``"10 80"``, ranges ``"10-12"``) → sorted unique slice indices."""
    out: set[int] = set()
    for part in text.replace(" ", ",").split(","):
        if not part:
            continue
        try:
            if "-" in part[1:]:  # a range "A-B" (a leading "-" is a negative index, refused later)
                a, b = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except ValueError as exc:
            raise InputError(f"--slices takes comma-separated axial slice indices (e.g. 10,80,150), got {text!r}") from exc
    if not out:
        raise InputError("no annotated slice given: list at least one axial slice index (e.g. --slices 10,80,150)")
    return sorted(out)


def check_annotations(volume: Volume, labels: Volume, slices: Iterable[int], n_classes: int,
                      class_names: Sequence[str] | None = None) -> list[int]:
    """Validate the annotated ``slices`` of ``labels`` against ``volume`` and a model with ``n_classes`` classes.

    Returns the sorted unique slice indices. Out-of-range slices, a labelmap of another geometry, label values
    the model has no class for, or no foreground in any listed slice → :class:`InputError`.
    """
    ks = sorted({int(k) for k in slices})
    if not ks:
        raise InputError("no annotated slice given")
    n = volume.shape[0]
    outside = [k for k in ks if not 0 <= k < n]
    if outside:
        raise InputError(f"annotated slice(s) {', '.join(map(str, outside))} outside the volume's axial slices 0..{n - 1}")
    if not volume.same_geometry(labels, tol=1e-4 * min(volume.spacing)):
        raise InputError(f"the labelmap's geometry (shape {labels.shape}, spacing {labels.spacing}) differs from the "
                         f"volume's (shape {volume.shape}, spacing {volume.spacing}); annotate on the same grid")
    lab = labels.array[ks]
    if not np.issubdtype(lab.dtype, np.integer):
        raise InputError(f"labels must be integers, got {lab.dtype}")
    values = np.unique(lab)
    bad = [int(v) for v in values if v < 0 or v >= n_classes]
    if bad:
        names = ", ".join(f"{i} {c}" for i, c in enumerate(class_names or [])) or f"0..{n_classes - 1}"
        raise InputError(f"the annotated slices hold label value(s) {', '.join(map(str, bad))} that the model has no "
                         f"class for (its classes: {names})")
    if not np.any(lab > 0):
        raise InputError(f"the annotated slices {', '.join(map(str, ks))} contain no foreground (every voxel is 0): "
                         "annotate the bone on them first")
    return ks


#: axis letters in numpy (KJI) order: k = axial (the slowest axis), j = rows, i = columns
AXES = "kji"
SLICE_REFS_HELP = ("comma-separated slices, each an optional axis letter k (axial, the default), j or i, then an "
                   "index or a range: e.g. 10,80,150 or k10,k80,j40,i120-122 (0-based, ranges include both ends)")
_REF = re.compile(r"([kji]?)(\d+)(?:-(\d+))?")


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no single truth value
class Annotation:
    """One corrected 2D slice: ``labels`` is ``labelmap[index]`` (axis 0, k), ``labelmap[:, index]`` (1, j) or
    ``labelmap[:, :, index]`` (2, i) of a KJI labelmap."""

    axis: int
    index: int
    labels: np.ndarray

    @property
    def name(self) -> str:
        """``"k80"``, ``"j40"``, ``"i200"``."""
        return f"{AXES[self.axis]}{self.index}"


def parse_slice_refs(text: str) -> list[tuple[int, int]]:
    """``"k10,80,j40,i120-122"`` → sorted unique ``(axis, index)`` pairs (axis 0 = k, 1 = j, 2 = i)."""
    out: set[tuple[int, int]] = set()
    for part in text.replace(" ", ",").lower().split(","):
        if not part:
            continue
        m = _REF.fullmatch(part)
        lo = int(m.group(2)) if m else 0
        hi = int(m.group(3)) if m and m.group(3) else lo
        if m is None or hi < lo:
            raise InputError(f"--slices takes {SLICE_REFS_HELP}; got {text!r}")
        axis = AXES.index(m.group(1) or "k")
        out.update((axis, n) for n in range(lo, hi + 1))
    if not out:
        raise InputError(f"no annotated slice given: --slices takes {SLICE_REFS_HELP}")
    return sorted(out)


def _slicer(axis: int, index: int) -> tuple:
    """The numpy index of slice ``index`` along ``axis`` of a KJI array."""
    return (slice(None),) * axis + (index,)


def _check_index(shape: Sequence[int], axis: int, index: int) -> None:
    n = shape[axis]
    if not 0 <= index < n:
        raise InputError(f"annotated slice {AXES[axis]}{index} is outside the volume: its {AXES[axis]} slices are "
                         f"0..{n - 1} (volume shape k, j, i = {tuple(shape)})")


def check_same_grid(volume: Volume, labels: Volume) -> None:
    """A labelmap on another grid (shape, spacing, origin, direction) than ``volume`` → :class:`InputError`."""
    if not volume.same_geometry(labels, tol=1e-4 * min(volume.spacing)):
        raise InputError(f"the labelmap's geometry (shape {labels.shape}, spacing {labels.spacing}, origin "
                         f"{labels.origin}) differs from the volume's (shape {volume.shape}, spacing {volume.spacing}, "
                         f"origin {volume.origin}); annotate on the same grid")


def annotations_from_labelmap(labels: Volume, refs: Iterable[tuple[int, int]],
                              like: Volume | None = None) -> list[Annotation]:
    """The slices ``refs`` of ``labels`` as :class:`Annotation` copies; with ``like``, its grid must be ``labels``'."""
    if like is not None:
        check_same_grid(like, labels)
    out = []
    for axis, index in refs:
        _check_index(labels.shape, axis, index)
        out.append(Annotation(axis, index, np.array(labels.array[_slicer(axis, index)])))
    return out


def _line(a: Annotation, axis: int, index: int) -> np.ndarray:
    """The voxels of ``a`` on the plane ``axis = index`` (another axis than ``a.axis``)."""
    return np.take(a.labels, index, axis=axis - (axis > a.axis))


def check_annotation_set(volume: Volume, annotations: Iterable[Annotation], n_classes: int,
                         class_names: Sequence[str] | None = None) -> list[Annotation]:
    """Validate corrected slices against ``volume`` and a model with ``n_classes`` classes.

    Returns them sorted by (axis, index), identical repeats merged. :class:`InputError` for: none given, a slice
    outside the volume, a 2D array of the wrong shape or not integer, a slice given twice with different labels,
    label values the model has no class for, no foreground anywhere, or two crossing slices that disagree.
    """
    by_ref: dict[tuple[int, int], Annotation] = {}
    for a in annotations:
        _check_index(volume.shape, a.axis, a.index)
        want = tuple(n for d, n in enumerate(volume.shape) if d != a.axis)
        if a.labels.shape != want:
            raise InputError(f"annotated slice {a.name} has shape {a.labels.shape}; the volume's {AXES[a.axis]} "
                             f"slices have shape {want}")
        if not np.issubdtype(a.labels.dtype, np.integer):
            raise InputError(f"annotated slice {a.name} holds {a.labels.dtype} values; labels must be integers")
        seen = by_ref.setdefault((a.axis, a.index), a)
        if seen is not a and not np.array_equal(seen.labels, a.labels):
            raise InputError(f"slice {a.name} is annotated twice with different labels")
    if not by_ref:
        raise InputError("no annotated slice given: correct at least one slice")
    anns = [by_ref[ref] for ref in sorted(by_ref)]
    bad = sorted({int(v) for a in anns for v in np.unique(a.labels) if not 0 <= v < n_classes})
    if bad:
        names = ", ".join(f"{i} {c}" for i, c in enumerate(class_names or [])) or f"0..{n_classes - 1}"
        raise InputError(f"the annotated slices hold label value(s) {', '.join(map(str, bad))} that the model has no "
                         f"class for (its classes: {names})")
    if not any(np.any(a.labels > 0) for a in anns):
        raise InputError(f"the annotated slices {', '.join(a.name for a in anns)} contain no foreground (every "
                         "voxel is 0): annotate the bone on at least one of them")
    for a, b in itertools.combinations(anns, 2):
        if a.axis == b.axis:
            continue
        diff = np.count_nonzero(_line(a, b.axis, b.index) != _line(b, a.axis, a.index))
        if diff:
            free = 3 - a.axis - b.axis
            where = {a.axis: f"{AXES[a.axis]}={a.index}", b.axis: f"{AXES[b.axis]}={b.index}",
                     free: f"{AXES[free]}=0..{volume.shape[free] - 1}"}
            raise InputError(f"slices {a.name} and {b.name} cross and disagree on {diff} voxel(s) of the line "
                             f"({', '.join(where[d] for d in range(3))}): make them agree there")
    return anns


def paste_annotations(labels: np.ndarray, annotations: Iterable[Annotation]) -> None:
    """Write each annotated slice, unchanged, into the KJI label array ``labels`` (in place)."""
    for a in annotations:
        labels[_slicer(a.axis, a.index)] = a.labels
