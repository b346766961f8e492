"""Training data: specimen folders, geometry/label checks, the split by specimen and slice selection.

Layout. A *specimen folder* holds one scan ``volume.*`` (or a ``volume/`` slice folder) and its truth
``labels.*`` — the layout ``phantom.write`` produces. Each ``--data DIR`` is a specimen folder or a folder
whose sub-folders (searched recursively) are specimen folders. One specimen = one scan, and the
train/validation split is made by specimen (never by slice), seeded, so no scan leaks across the split.

Slice selection (the paper excluded slices "with too little information"); per axial slice:
- *foreground* slice: at least ``FOREGROUND_MIN_FRACTION`` = 0.1 % of its pixels are non-background;
- *blank* slice: not foreground and its normalised intensity std < ``BLANK_MAX_STD`` = 0.01 (air,
  padding, constant rock: nothing to learn) — blank slices are excluded;
- the other matrix-only slices are kept, but at most ``EMPTY_SHARE`` = 10 % of a specimen's training
  slices (a seeded random choice), so the model also learns to answer "no bone" in plain rock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..errors import InputError
from ..inference.normalize import apply_intensity_range, volume_intensity_range
from ..volume import Volume

FOREGROUND_MIN_FRACTION = 0.001
BLANK_MAX_STD = 0.01
EMPTY_SHARE = 0.10

_VOLUME_STEMS = ("volume",)
_LABEL_STEMS = ("labels", "label")


@dataclass(frozen=True)
class SpecimenPaths:
    """Where one specimen's scan and truth are."""

    name: str
    folder: Path
    volume: Path
    labels: Path


@dataclass
class Specimen:
    """A loaded specimen: the normalised scan (float16 in [0, 1]), its labels and its kept slices."""

    paths: SpecimenPaths
    volume: Volume
    labels: Volume
    image: np.ndarray
    slices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.paths.name


def _entries(folder: Path, stems: Sequence[str]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.split(".")[0].lower() in stems and not p.name.startswith("."))


def _as_specimen(folder: Path) -> SpecimenPaths | None:
    vols, labs = _entries(folder, _VOLUME_STEMS), _entries(folder, _LABEL_STEMS)
    if not vols and not labs:
        return None
    if not vols or not labs:
        missing = "volume.*" if not vols else "labels.*"
        raise InputError(f"specimen folder {folder} has no {missing} file")
    if len(vols) > 1 or len(labs) > 1:
        names = ", ".join(p.name for p in vols + labs)
        raise InputError(f"specimen folder {folder} is ambiguous: several scans or label files ({names})")
    return SpecimenPaths(folder.name, folder, vols[0], labs[0])


def find_specimens(data_dirs: Iterable[Path | str]) -> list[SpecimenPaths]:
    """All specimen folders in ``data_dirs`` (each a specimen folder or a tree of them), sorted, unique."""
    found: dict[Path, SpecimenPaths] = {}
    dirs = [Path(d) for d in data_dirs]
    if not dirs:
        raise InputError("no data folder given")
    for d in dirs:
        if not d.is_dir():
            raise InputError(f"data folder not found: {d}")
        before = len(found)
        for folder in [d, *sorted(p for p in d.rglob("*") if p.is_dir() and not p.name.startswith("."))]:
            spec = _as_specimen(folder)
            if spec is not None:
                found[folder.resolve()] = spec
        if len(found) == before:
            raise InputError(f"no specimen in {d} (expected volume.* + labels.* in it or in its sub-folders)")
    specs = sorted(found.values(), key=lambda s: str(s.folder))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):  # make names unique with the parent folder
        specs = [SpecimenPaths(f"{s.folder.parent.name}/{s.name}", s.folder, s.volume, s.labels) for s in specs]
    return specs


def check_labels(labels: np.ndarray, n_classes: int, where: str) -> None:
    """Labels must be integers in ``0 … n_classes-1``; otherwise ``InputError`` naming the values."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{where}: labels must be integers, got {labels.dtype}")
    values = np.unique(labels)
    bad = values[(values < 0) | (values >= n_classes)]
    if bad.size:
        hint = " (value 2 is Tooth: train with --teeth)" if n_classes == 2 and 2 in bad.tolist() else ""
        raise InputError(
            f"{where}: label value(s) {', '.join(str(int(v)) for v in bad[:10])} outside the model's classes "
            f"0..{n_classes - 1}{hint}"
        )


def read_pair(paths: SpecimenPaths, n_classes: int, extra_as_background: bool = False) -> tuple[Volume, Volume]:
    """Read scan and labels; different geometry or labels outside the classes → ``InputError``.

    ``extra_as_background``: label values ≥ ``n_classes`` (e.g. Tooth for a bone-only model) become 0
    instead (for scoring a model on the classes it has; the truth of the others is not scored).
    """
    from ..io.volume_io import read_labelmap, read_volume

    volume = read_volume(paths.volume)
    labels = read_labelmap(paths.labels, like=volume)  # geometry mismatch → InputError
    if extra_as_background and np.issubdtype(labels.array.dtype, np.integer):
        labels = labels.with_array(np.where(labels.array >= n_classes, 0, labels.array).astype(labels.array.dtype))
    check_labels(labels.array, n_classes, f"specimen {paths.folder}")
    return volume, labels


def select_slices(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of the axial slices to train on (rule in the module docstring), sorted."""
    n_pix = labels.shape[1] * labels.shape[2]
    fg_frac = np.count_nonzero(labels.reshape(labels.shape[0], -1), axis=1) / n_pix
    std = image.reshape(image.shape[0], -1).astype(np.float32).std(axis=1)
    foreground = np.flatnonzero(fg_frac >= FOREGROUND_MIN_FRACTION)
    empty = np.flatnonzero((fg_frac < FOREGROUND_MIN_FRACTION) & (std >= BLANK_MAX_STD))
    cap = int(np.ceil(EMPTY_SHARE / (1 - EMPTY_SHARE) * len(foreground))) if len(foreground) else len(empty)
    if len(empty) > cap:
        empty = rng.choice(empty, size=cap, replace=False)
    return np.sort(np.concatenate([foreground, empty]).astype(np.int64))


#: reads one specimen's (scan, labels) and checks them, as :func:`read_pair` does
PairReader = Callable[[SpecimenPaths, int], tuple[Volume, Volume]]


def load_specimen(
    paths: SpecimenPaths, n_classes: int, normalization: dict[str, Any] | None, rng: np.random.Generator,
    reader: PairReader = read_pair,
) -> Specimen:
    """Read (``reader``), check and normalise one specimen (same normalisation as inference) and pick its slices."""
    volume, labels = reader(paths, n_classes)
    lo, hi = volume_intensity_range(volume.array, normalization)
    image = apply_intensity_range(volume.array, lo, hi).astype(np.float16)  # half the memory; ample for [0, 1]
    lab = np.ascontiguousarray(labels.array.astype(np.uint8))
    spec = Specimen(paths, volume, labels.with_array(lab), image, info=_read_info(paths.folder))
    spec.slices = select_slices(image, lab, rng)
    return spec


def _read_info(folder: Path) -> dict[str, Any]:
    """The phantom's ``phantom.json`` (family, seed...) when present, else {}."""
    import json

    p = folder / "phantom.json"
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def split_by_specimen(
    specs: Sequence[SpecimenPaths], val_fraction: float, seed: int
) -> tuple[list[SpecimenPaths], list[SpecimenPaths]]:
    """Seeded split into (train, validation) by specimen; at least one of each when there are ≥ 2."""
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"validation fraction must be in [0, 1), got {val_fraction}")
    if not specs:
        raise InputError("no specimen to train on")
    order = np.random.default_rng(seed).permutation(len(specs))
    n_val = int(round(val_fraction * len(specs)))
    if val_fraction > 0 and len(specs) >= 2:
        n_val = min(max(n_val, 1), len(specs) - 1)
    elif len(specs) < 2:
        n_val = 0
    val = sorted((specs[i] for i in order[:n_val]), key=lambda s: str(s.folder))
    train = sorted((specs[i] for i in order[n_val:]), key=lambda s: str(s.folder))
    return train, val
