"""3D connected components of a large volume in bounded memory, one slab of axial slices at a time.

:func:`select_components` labels each slab ``[k0, k1)`` with :func:`scipy.ndimage.label`, joins labels
across slab boundaries (the two slices either side of a boundary are labelled together with the same
structure, so connectivity is exactly that of a whole-volume labelling), and merges them into global
components with :func:`scipy.sparse.csgraph.connected_components`. Per global component it knows the voxel
count and whether it touches the border of the volume. A caller's ``choose`` picks components from those
figures; a second slab pass hands the chosen voxels of each slab to the caller's ``apply``.

Memory: a few bytes per voxel of one slab (mask, int32 labels, chosen mask) plus small per-component
tables — never a whole-volume label array. :func:`slab_length` turns a byte budget into slices per slab.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

#: 26-connectivity (faces, edges and corners)
FULL = ndimage.generate_binary_structure(3, 3)
#: default temporary-memory budget of one slab
DEFAULT_MAX_BYTES = 256 * 1024**2
#: slab size used when the volume does not fit the budget in one slab
SLAB_BYTES = 64 * 1024**2
#: peak temporaries per slab voxel: bool mask + int32 labels + bool chosen + the caller's bool temporaries
BYTES_PER_VOXEL = 8
_COUNT_CHUNK = 1 << 20  # voxels per np.bincount call (it copies its input to int64)

SlabCallback = Callable[[int, int], None]
"""``on_slab(phase, done)``: phase 0 (labelling) or 1 (applying), slices of that pass done so far."""
MaskOf = Callable[[int, int], np.ndarray]
"""``mask_of(k0, k1)`` → the boolean foreground of slices ``k0 .. k1-1``, shape (k1 - k0, H, W)."""


@dataclass(frozen=True)
class ComponentStats:
    """Per global component (index 0 .. n-1): its voxel count and whether it touches the volume border."""

    sizes: np.ndarray
    touches_border: np.ndarray


def slab_length(slice_voxels: int, n_slices: int, max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """Slices per slab so that one slab's temporaries stay within ``max_bytes`` (at least 1 slice).

    All ``n_slices`` when they fit (one labelling pass, no second one); otherwise slabs of at most
    ``SLAB_BYTES`` — labelling runs faster on a cache-sized slab than on a big one.
    """
    per_slice = BYTES_PER_VOXEL * max(1, int(slice_voxels))
    if n_slices * per_slice <= max_bytes:
        return max(1, int(n_slices))
    return max(1, min(int(max_bytes), SLAB_BYTES) // per_slice)


def _label(mask: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray, int]:
    out = np.empty(mask.shape, dtype=np.int32)
    n = ndimage.label(mask, structure=structure, output=out)
    return out, int(n)


def _counts(lab: np.ndarray, n: int) -> np.ndarray:
    """Voxels per label 1..n of ``lab``, counted a chunk at a time."""
    flat = lab.reshape(-1)
    sizes = np.zeros(n + 1, dtype=np.int64)
    for start in range(0, flat.size, _COUNT_CHUNK):
        sizes += np.bincount(flat[start : start + _COUNT_CHUNK], minlength=n + 1)
    return sizes[1:]


def _on_border(lab: np.ndarray, n: int, first: bool, last: bool) -> np.ndarray:
    """Which labels 1..n of a slab touch the volume border (side faces; top/bottom when first/last slab)."""
    faces = [lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]]
    if first:
        faces.append(lab[0])
    if last:
        faces.append(lab[-1])
    touch = np.zeros(n + 1, dtype=bool)
    for face in faces:
        touch[np.unique(face)] = True
    return touch[1:]


def _distinct_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (a, b) pairs of two equal-length non-negative integer arrays."""
    if a.size == 0:
        return a.astype(np.int64), b.astype(np.int64)
    m = int(b.max()) + 1
    key = a.astype(np.int64) * m + b
    key = key[np.r_[True, key[1:] != key[:-1]]]  # runs along a row are mostly one pair: drop them cheaply
    key = np.unique(key)
    return key // m, key % m


def _seam_edges(tail: np.ndarray, tail_base: int, head: np.ndarray, head_base: int,
                structure: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges (seam component, slab node) joining the last slice of one slab to the first of the next.

    The two slices are labelled together with ``structure``; every slab label inside one seam component
    belongs to one global component. Seam component ids are 0-based and local to this seam.
    """
    seam, _ = _label(np.stack([tail > 0, head > 0]), structure)
    seams, nodes = [], []
    for seam_slice, lab, base in ((seam[0], tail, tail_base), (seam[1], head, head_base)):
        fg = lab > 0
        s, local = _distinct_pairs(seam_slice[fg], lab[fg])
        seams.append(s - 1)
        nodes.append(local - 1 + base)
    return np.concatenate(seams), np.concatenate(nodes)


def select_components(
    mask_of: MaskOf,
    n_slices: int,
    choose: Callable[[ComponentStats], np.ndarray],
    apply: Callable[[int, int, np.ndarray], None],
    slab: int,
    structure: np.ndarray = FULL,
    on_slab: SlabCallback | None = None,
) -> int:
    """Find the 3D components of the mask that ``mask_of`` yields slab by slab, let ``choose`` pick some,
    and call ``apply(k0, k1, chosen)`` with the boolean voxels of the chosen components in slices k0..k1-1.

    ``choose(stats)`` returns a boolean array over components. ``mask_of`` must return the same mask in
    both passes; ``apply`` may change the data behind ``mask_of`` only inside its own slices. Slabs holding
    no chosen voxel are not visited again. Returns the number of chosen components. ``on_slab(phase, done)``
    after each slab (``phase`` 0: labelling, 1: applying; ``done``: slices of that pass finished) is where a
    caller reports progress or raises to cancel.
    """
    if n_slices <= 0:
        return 0
    slab = max(1, int(slab))
    starts = list(range(0, n_slices, slab))
    bases: list[int] = []  # global node index of each slab's label 1
    counts: list[int] = []  # labels per slab
    sizes: list[np.ndarray] = []
    border: list[np.ndarray] = []
    edge_seam: list[np.ndarray] = []
    edge_node: list[np.ndarray] = []
    n_nodes = n_seams = 0
    tail = None
    lab = None
    for k0 in starts:
        k1 = min(k0 + slab, n_slices)
        lab, n = _label(mask_of(k0, k1), structure)
        bases.append(n_nodes)
        counts.append(n)
        sizes.append(_counts(lab, n))
        border.append(_on_border(lab, n, k0 == 0, k1 == n_slices))
        if tail is not None:
            seam, node = _seam_edges(tail, bases[-2], lab[0], n_nodes, structure)
            edge_seam.append(seam + n_seams)
            edge_node.append(node)
            n_seams += int(seam.max()) + 1 if seam.size else 0
        tail = lab[-1].copy()
        n_nodes += n
        if on_slab is not None:
            on_slab(0, k1)
        if k1 < n_slices:
            del lab
            lab = None
    del tail
    if n_nodes == 0:
        return 0

    # global components: slab labels are nodes 0..n_nodes-1, seam components n_nodes..n_nodes+n_seams-1
    total = n_nodes + n_seams
    seam_ids = np.concatenate(edge_seam) + n_nodes if edge_seam else np.zeros(0, np.int64)
    nodes = np.concatenate(edge_node) if edge_node else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(nodes.size, np.int8), (seam_ids, nodes)), shape=(total, total))
    n_comp, comp = connected_components(graph, directed=False)
    comp = comp[:n_nodes]
    stats = ComponentStats(
        sizes=np.bincount(comp, weights=np.concatenate(sizes) if sizes else None, minlength=n_comp).astype(np.int64),
        touches_border=np.bincount(comp, weights=np.concatenate(border) if border else None, minlength=n_comp) > 0,
    )
    chosen = np.asarray(choose(stats), dtype=bool)
    if chosen.shape != (n_comp,):
        raise ValueError(f"choose must return {n_comp} booleans, got shape {chosen.shape}")
    node_chosen = chosen[comp]
    del comp

    # second pass, last slab first: its labels are still in hand from the first pass
    for index in reversed(range(len(starts))):
        k0, base, n = starts[index], bases[index], counts[index]
        k1 = min(k0 + slab, n_slices)
        lut = np.zeros(n + 1, dtype=bool)
        lut[1:] = node_chosen[base : base + n]
        if lut.any():
            if lab is None:
                lab, n_again = _label(mask_of(k0, k1), structure)
                if n_again != n:
                    raise RuntimeError("mask_of returned a different mask in the second pass")
            apply(k0, k1, lut[lab])
        lab = None
        if on_slab is not None:
            on_slab(1, n_slices - k0)
    return int(chosen.sum())
