"""The annotated slices of a fine-tuning run: parsing, checking and the held-back slice."""

from __future__ import annotations

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


def split_holdout(slices: Sequence[int], labels: np.ndarray) -> tuple[list[int], int | None]:
    """With ≥ 3 slices hold back the middle one that has foreground (for early stopping); else none."""
    ks = list(slices)
    if len(ks) < 3:
        return ks, None
    order = sorted(range(len(ks)), key=lambda n: abs(n - (len(ks) - 1) / 2))
    for n in order:
        rest = ks[:n] + ks[n + 1:]
        if np.any(labels[ks[n]] > 0) and np.any(labels[rest] > 0):
            return rest, ks[n]
    return ks, None


# ---- TEMPORARY stand-in (lead's tree) until the learncli branch lands with the real any-axis annotations ----
from dataclasses import dataclass


@dataclass(frozen=True)
class Annotation:
    axis: int
    index: int
    labels: np.ndarray

    @property
    def name(self) -> str:
        return "kji"[self.axis] + str(self.index)


def annotations_from_labelmap(labels: Volume, refs) -> list[Annotation]:
    arr = labels.array
    return [Annotation(a, i, np.array(np.take(arr, i, axis=a))) for a, i in refs]


def check_annotation_set(volume: Volume, annotations, n_classes: int, class_names=None) -> list[Annotation]:
    anns = sorted(annotations, key=lambda a: (a.axis, a.index))
    if not anns or not any(np.any(a.labels > 0) for a in anns):
        raise InputError("no foreground in any annotated slice")
    return anns


def paste_annotations(labels: np.ndarray, annotations) -> None:
    for a in annotations:
        idx = [slice(None)] * 3
        idx[a.axis] = a.index
        labels[tuple(idx)] = a.labels
