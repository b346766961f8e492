"""Shape families: each turns a random stream into exact bone / tooth masks on the voxel grid.

Families differ in their primitives (deformed ellipsoid shells, tubes along random curves, thin
curved sheets, trabecular noise networks, broken chunks) so that a model trained on some of them
has to learn "bone texture and boundaries", not one shape. Every family mixes thick parts and
1-3 voxel thin parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import ndimage

from .grid import (FAR, Grid, capsule_sdf, ellipsoid_sdf, random_curve, random_rotation, random_unit,
                   sheet_sdf, smooth_noise)
from .teeth import tooth_row


@dataclass
class Parts:
    """The exact anatomy of one phantom before any rock or scanner effect."""

    bone: np.ndarray                 # bool, bone material
    tooth: np.ndarray                # bool, tooth material (wins over bone)
    cavity: np.ndarray               # bool, spaces enclosed by bone (medulla, sinus): filled later
    cancellous: np.ndarray           # bool, region where bone is trabecular (for intensity texture)
    params: dict = field(default_factory=dict)


def _trabecular(rng: np.random.Generator, grid: Grid, sigma: float, fraction: float) -> np.ndarray:
    """A connected plate-and-rod network: the band ``|n| < w`` of a smooth noise field."""
    n = smooth_noise(rng, grid.shape, sigma, grid.az)
    w = float(np.quantile(np.abs(n[:: 2, :: 2, :: 2]), fraction))
    return np.abs(n) < w


def _empty(grid: Grid) -> np.ndarray:
    return np.zeros(grid.shape, dtype=bool)


def _in_volume_point(rng: np.random.Generator, grid: Grid, margin: float = 0.15) -> np.ndarray:
    """A random (z, y, x) point away from the borders by ``margin`` of the extent."""
    return grid.extent * rng.uniform(margin, 1.0 - margin, 3)


def skull(grid: Grid, rng: np.random.Generator, teeth: bool) -> Parts:
    """Skull-like shell of varying thickness, with fenestrae, foramina, sutures, septa and a jaw."""
    s = grid.scale
    centre = grid.centre + grid.extent * rng.uniform(-0.08, 0.08, 3)
    radii = grid.extent * rng.uniform(0.28, 0.5, 3)
    radii[0] = max(radii[0], 6.0)
    rot = random_rotation(rng)
    sdf = grid.empty()
    ellipsoid_sdf(grid, sdf, centre, radii, rot)
    sdf += rng.uniform(1.0, 4.0) * s * smooth_noise(rng, grid.shape, rng.uniform(6, 14) * s, grid.az)
    t0 = rng.uniform(1.2, 4.0) * s ** 0.5
    thick = np.clip(t0 + rng.uniform(0.5, 2.5) * s ** 0.5 * smooth_noise(rng, grid.shape, 10 * s, grid.az),
                    0.9, 9.0)
    shell = np.abs(sdf) < thick / 2
    inside = sdf < 0
    # fenestrae (large openings) and foramina (small holes crossing the wall)
    holes = grid.empty()
    n_fen = int(rng.integers(1, 4))
    for _ in range(n_fen):
        d = random_unit(rng)
        p = centre + rot @ (radii * d)
        ellipsoid_sdf(grid, holes, p, radii.min() * rng.uniform(0.2, 0.45, 3), random_rotation(rng))
    n_for = int(rng.integers(3, 14))
    for _ in range(n_for):
        d = rot @ (radii * random_unit(rng))
        u = d / np.linalg.norm(d)
        p = centre + d
        capsule_sdf(grid, holes, np.array([p - u * 12 * s, p + u * 12 * s]), rng.uniform(0.8, 2.5) * s ** 0.5)
    shell &= holes >= 0
    # sutures: thin interdigitating gaps splitting the plates
    sig = rng.uniform(7, 14) * s
    n = smooth_noise(rng, grid.shape, sig, grid.az) + 0.25 * smooth_noise(rng, grid.shape, 2.0, grid.az)
    n_sut = int(rng.integers(1, 4))
    gap = rng.uniform(0.6, 1.3)
    for c in rng.uniform(-0.8, 0.8, n_sut):
        shell &= np.abs(n - c) > gap * 0.55 / sig
    # internal septa / palate: thin sheets inside the braincase
    sheets = grid.empty()
    n_septa = int(rng.integers(0, 3))
    for _ in range(n_septa):
        sheet_sdf(grid, sheets, rng, centre + radii.min() * 0.3 * random_unit(rng), random_rotation(rng),
                  tuple(radii.max() * rng.uniform(0.4, 0.9, 2)), rng.uniform(0.9, 2.5),
                  tuple(rng.uniform(-0.01, 0.01, 3)), wobble=rng.uniform(0.5, 2.0))
    bone = shell | ((sheets < 0) & inside)
    # jaw with a tooth row along the lower rim
    tooth = _empty(grid)
    params: dict = {"wall_thickness": round(float(t0), 2), "fenestrae": n_fen, "foramina": n_for,
                    "sutures": n_sut, "septa": n_septa}
    if rng.random() < 0.85:
        down = rot @ np.array([0.0, 1.0, 0.0]) * (1 if rng.random() < 0.5 else -1)
        along = rot @ np.array([0.0, 0.0, 1.0])
        jr = rng.uniform(2.5, 6.0) * s
        start = centre + down * radii.min() * rng.uniform(0.6, 1.0) - along * radii.max() * 0.8
        jaw = random_curve(rng, start, along, radii.max() * rng.uniform(1.2, 1.8), n=12, bend=0.08)
        jaw_sdf, tsdf, sockets = grid.empty(), grid.empty(), grid.empty()
        capsule_sdf(grid, jaw_sdf, jaw, jr)
        jaw_bone = (jaw_sdf < 0) & ~((jaw_sdf < -jr * 0.45) & (rng.random() < 0.6))  # hollow canal or not
        params["jaw_radius"] = round(float(jr), 2)
        if teeth:
            params.update(tooth_row(grid, rng, jaw, jr, -down, tsdf, sockets))
            tooth = tsdf < 0
            jaw_bone &= sockets >= 0
        bone |= jaw_bone
    cavity = inside & ~bone & (holes >= 0)
    return Parts(bone, tooth, cavity, _empty(grid), params)


def long_bone(grid: Grid, rng: np.random.Generator, teeth: bool) -> Parts:
    """1-3 hollow shafts along random curves: cortex, medullary cavity, cancellous flared ends."""
    s = grid.scale
    outer, inner, medulla = grid.empty(), grid.empty(), grid.empty()
    n_bones = int(rng.integers(1, 4))
    info = []
    for _ in range(n_bones):
        length = float(np.linalg.norm(grid.extent[1:])) * rng.uniform(0.5, 1.0)
        start = _in_volume_point(rng, grid, 0.1)
        d = random_unit(rng)
        start = start - d * length * rng.uniform(0.3, 0.6)
        pts = random_curve(rng, start, d, length, n=18, bend=rng.uniform(0.02, 0.12))
        r0 = rng.uniform(3.0, 11.0) * s
        t = np.linspace(0, 1, len(pts))
        flare = rng.uniform(1.2, 2.2)
        ends = np.exp(-(t / 0.12) ** 2) + np.exp(-((1 - t) / 0.12) ** 2)
        radius = r0 * (1 + (flare - 1) * ends)
        cortex = float(np.clip(rng.uniform(0.12, 0.45) * r0, 0.9, 8.0))
        capsule_sdf(grid, outer, pts, radius)
        capsule_sdf(grid, inner, pts, np.maximum(radius - cortex, 0.3))
        mid = slice(int(0.25 * len(pts)), int(0.75 * len(pts)) + 1)
        capsule_sdf(grid, medulla, pts[mid], np.maximum(radius[mid] - cortex, 0.3))
        info.append({"radius": round(float(r0), 2), "cortex": round(cortex, 2), "flare": round(float(flare), 2)})
    trab = _trabecular(rng, grid, rng.uniform(1.2, 2.5) * s ** 0.5, rng.uniform(0.2, 0.4))
    ends = (inner < 0) & (medulla >= 0)
    bone = ((outer < 0) & (inner >= 0)) | (ends & trab)
    broken = bool(rng.random() < 0.4)
    if broken:  # a rough fracture gap across the field
        n = random_unit(rng)
        z, y, x = grid.coords()
        c = _in_volume_point(rng, grid, 0.3)
        sd = n[0] * (z - c[0]) + n[1] * (y - c[1]) + n[2] * (x - c[2])
        sd = sd + 2.0 * s * smooth_noise(rng, grid.shape, 4.0 * s, grid.az)
        bone &= np.abs(sd) > rng.uniform(0.6, 3.0) * s
    cavity = (inner < 0) & ~bone
    return Parts(bone, _empty(grid), cavity, ends, {"bones": info, "broken": broken})


def vertebra(grid: Grid, rng: np.random.Generator, teeth: bool) -> Parts:
    """1-4 vertebrae along a curved column: cancellous body, neural arch, spinous/transverse processes."""
    s = grid.scale
    n_v = int(rng.integers(1, 5))
    rb = rng.uniform(0.1, 0.2) * grid.extent[1:].min() * (1.4 if n_v == 1 else 1.0)
    body_len = rb * rng.uniform(0.7, 1.4)
    pitch = body_len + rng.uniform(1.0, 4.0) * s
    axis0 = random_unit(rng)
    start = grid.centre - axis0 * pitch * (n_v - 1) / 2
    column = random_curve(rng, start, axis0, pitch * max(n_v - 1, 1), n=max(n_v, 2), bend=0.1)
    dorsal0 = np.cross(axis0, random_unit(rng))
    dorsal0 /= np.linalg.norm(dorsal0)
    body, inner, solid = grid.empty(), grid.empty(), grid.empty()
    cortex = rng.uniform(0.9, 2.5) * s ** 0.5
    for v in range(n_v):
        c = column[v]
        a = column[min(v + 1, len(column) - 1)] - column[max(v - 1, 0)]
        a = a / np.linalg.norm(a)
        dv = dorsal0 - (dorsal0 @ a) * a
        dv /= np.linalg.norm(dv)
        e1 = np.cross(a, dv)
        ends = np.array([c - a * body_len / 2, c + a * body_len / 2])
        capsule_sdf(grid, body, ends, rb)
        capsule_sdf(grid, inner, ends, rb - cortex)
        rc = rb * rng.uniform(0.45, 0.8)  # neural canal radius
        ar = rng.uniform(1.0, 3.0) * s ** 0.5  # arch half-thickness
        ring_c = c + dv * (rb + rc * 0.8)
        th = np.linspace(-0.25, np.pi + 0.25, 10)
        arch = ring_c + (rc + ar) * (np.cos(th)[:, None] * e1 + np.sin(th)[:, None] * dv)
        capsule_sdf(grid, solid, arch, ar)
        top = ring_c + dv * (rc + ar)
        spine = random_curve(rng, top, dv - a * rng.uniform(0, 0.6), rb * rng.uniform(1.0, 2.5), n=5, bend=0.1)
        capsule_sdf(grid, solid, spine, np.linspace(ar * 1.2, max(0.6, ar * 0.4), 5))
        for side in (-1.0, 1.0):
            root = ring_c + side * e1 * (rc + ar) - dv * rc * 0.3
            proc = random_curve(rng, root, side * e1 + 0.3 * rng.standard_normal(3), rb * rng.uniform(0.6, 1.8),
                                n=4, bend=0.1)
            capsule_sdf(grid, solid, proc, np.linspace(ar, max(0.5, ar * 0.5), 4))
    trab = _trabecular(rng, grid, rng.uniform(1.2, 2.2) * s ** 0.5, rng.uniform(0.2, 0.4))
    centrum = body < 0
    core = inner < 0
    bone = (centrum & ~core) | (core & trab) | (solid < 0)
    return Parts(bone, _empty(grid), core & ~bone, core,
                 {"vertebrae": n_v, "body_radius": round(float(rb), 2), "cortex": round(float(cortex), 2)})


def plates(grid: Grid, rng: np.random.Generator, teeth: bool) -> Parts:
    """Thin curved sheets (1-3 voxels), thicker scutes with keels, and slender curved ribs."""
    s = grid.scale
    sheets, solid = grid.empty(), grid.empty()
    n_sheets = int(rng.integers(2, 7))
    thick = []
    for _ in range(n_sheets):
        t = rng.uniform(0.9, 3.2) if rng.random() < 0.7 else rng.uniform(3.0, 6.0) * s ** 0.5
        thick.append(round(float(t), 2))
        rot = random_rotation(rng)
        c = _in_volume_point(rng, grid, 0.2)
        half = tuple(grid.extent[1:].min() * rng.uniform(0.12, 0.4, 2))
        sheet_sdf(grid, sheets, rng, c, rot, half, t, tuple(rng.uniform(-0.02, 0.02, 3)) ,
                  wobble=rng.uniform(0.3, 2.5) * s)
        if t > 2.5 and rng.random() < 0.5:  # keel along a scute
            w = rot[:, 2]
            u = rot[:, 0]
            capsule_sdf(grid, solid, np.array([c - u * half[0] * 0.7, c + u * half[0] * 0.7]) + w * t * 0.4,
                        t * 0.6)
    n_ribs = int(rng.integers(0, 6))
    for _ in range(n_ribs):
        length = grid.extent[1:].min() * rng.uniform(0.4, 1.1)
        d = random_unit(rng)
        pts = random_curve(rng, _in_volume_point(rng, grid, 0.2) - d * length / 2, d, length, n=14,
                           bend=rng.uniform(0.05, 0.2))
        capsule_sdf(grid, solid, pts, np.linspace(rng.uniform(1.0, 3.0) * s ** 0.5, rng.uniform(0.6, 1.5), 14))
    bone = (sheets < 0) | (solid < 0)
    return Parts(bone, _empty(grid), _empty(grid), _empty(grid),
                 {"sheets": n_sheets, "sheet_thickness": thick, "ribs": n_ribs})


def fragments(grid: Grid, rng: np.random.Generator, teeth: bool) -> Parts:
    """Scattered broken pieces: chunks, shell shards, splinters and rib bits, plus isolated teeth."""
    s = grid.scale
    bone = _empty(grid)
    tooth = _empty(grid)
    n_pieces = int(rng.integers(10, 36))
    ribs, scratch = grid.empty(), grid.empty()
    kinds = []
    for _ in range(n_pieces):
        kind = str(rng.choice(["chunk", "shard", "splinter", "rib"]))
        kinds.append(kind)
        c = _in_volume_point(rng, grid, 0.05)
        size = rng.uniform(4.0, 18.0) * s
        if kind == "rib":
            capsule_sdf(grid, ribs, random_curve(rng, c, random_unit(rng), size * 2.5, n=6, bend=0.15),
                        rng.uniform(0.7, 2.5) * s ** 0.5)
            continue
        radii = size * rng.uniform(0.4, 1.0, 3)
        if kind == "splinter":
            radii = np.array([size * 1.5, rng.uniform(0.8, 2.5), rng.uniform(0.8, 2.5)])
        sl = ellipsoid_sdf(grid, scratch, c, radii, random_rotation(rng), margin=3.0)
        if sl is None:
            continue
        sub = scratch[sl].copy()
        scratch[sl] = FAR  # reuse the scratch field for the next piece
        shp = sub.shape
        sub += rng.uniform(0.3, 1.5) * smooth_noise(rng, shp, max(2.0, size / 3), grid.az)
        piece = np.abs(sub) < rng.uniform(0.5, 1.6) if kind == "shard" else sub < 0
        z, y, x = grid.coords(sl)
        for _cut in range(int(rng.integers(1, 4))):  # broken surfaces
            n = random_unit(rng)
            off = rng.uniform(-0.4, 0.6) * radii.min()
            sd = n[0] * (z - c[0]) + n[1] * (y - c[1]) + n[2] * (x - c[2]) - off
            piece &= (sd + 0.7 * smooth_noise(rng, shp, 2.0, grid.az)) < 0
        bone[sl] |= piece
    bone |= ribs < 0
    params: dict = {"pieces": n_pieces, "kinds": kinds}
    if teeth:
        tsdf = grid.empty()
        n_teeth = int(rng.integers(1, 6))
        for _ in range(n_teeth):
            base = _in_volume_point(rng, grid, 0.1)
            r = rng.uniform(1.5, 4.0) * s ** 0.5
            length = r * rng.uniform(2.5, 5.0)
            pts = random_curve(rng, base, random_unit(rng), length, n=4, bend=0.15)
            capsule_sdf(grid, tsdf, pts, np.array([0.7 * r, r, 0.7 * r, 0.4]))
        tooth = tsdf < 0
        params["teeth"] = n_teeth
    return Parts(bone, tooth, _empty(grid), _empty(grid), params)


def trabecular(grid: Grid, rng: np.random.Generator, teeth: bool) -> Parts:
    """Blocks of cancellous bone (plate/rod networks) partly wrapped in a thin cortical shell."""
    s = grid.scale
    region = grid.empty()
    n_blocks = int(rng.integers(1, 3))
    for _ in range(n_blocks):
        ellipsoid_sdf(grid, region, _in_volume_point(rng, grid, 0.3),
                      grid.extent * rng.uniform(0.2, 0.45, 3), random_rotation(rng))
    region += rng.uniform(1.0, 4.0) * s * smooth_noise(rng, grid.shape, 8.0 * s, grid.az)
    sigma = rng.uniform(1.3, 3.5) * s ** 0.5
    fraction = rng.uniform(0.15, 0.4)
    if rng.random() < 0.5:
        net = _trabecular(rng, grid, sigma, fraction)
        style = "plates"
    else:  # rod-like: high values of the field
        n = smooth_noise(rng, grid.shape, sigma, grid.az)
        net = n > np.quantile(n[::2, ::2, ::2], 1 - fraction)
        net = ndimage.binary_opening(net, iterations=1) | (net & (rng.random() < 0.5))
        style = "rods"
    cortex = rng.uniform(0.9, 3.0) * s ** 0.5
    shell = (region < 0) & (region > -cortex)
    open_side = smooth_noise(rng, grid.shape, 12.0 * s, grid.az) > rng.uniform(-0.5, 0.8)
    bone = ((region < 0) & net) | (shell & ~open_side)
    return Parts(bone, _empty(grid), (region < 0) & ~bone, region < 0,
                 {"blocks": n_blocks, "style": style, "strut_sigma": round(float(sigma), 2),
                  "bone_fraction_target": round(float(fraction), 2), "cortex": round(float(cortex), 2)})


FAMILY_BUILDERS: dict[str, Callable[[Grid, np.random.Generator, bool], Parts]] = {
    "skull": skull,
    "long_bone": long_bone,
    "vertebra": vertebra,
    "plates": plates,
    "fragments": fragments,
    "trabecular": trabecular,
}
