"""More shape families: limb girdles, digits and armour carapaces.

They add what the first six families lack: broad blades whose thickness varies from a 1-voxel centre to a
thick rim, chains of short bones separated by joint gaps, and cortex–diploë–cortex sandwiches split by
sutures into polygonal plates. Same contract as :mod:`.shapes` (a builder returns :class:`Parts`).
"""

from __future__ import annotations

import numpy as np

from .grid import Grid, capsule_sdf, ellipsoid_sdf, random_curve, random_rotation, random_unit, sheet_sdf, \
    smooth_noise
from .shapes import Parts, _empty, _in_volume_point, _trabecular


def girdle(grid: Grid, rng: np.random.Generator, teeth: bool) -> Parts:
    """A scapula/ilium-like blade: thin centre, thick cancellous rim, a neck and a socket (cup)."""
    s = grid.scale
    rot = random_rotation(rng)
    centre = grid.centre + grid.extent * rng.uniform(-0.1, 0.1, 3)
    a, b = grid.extent[1:].min() * rng.uniform(0.3, 0.5), grid.extent[1:].min() * rng.uniform(0.15, 0.3)
    # blade: a curved sheet, thin (0.9-3 vox) in the middle
    blade = grid.empty()
    t_blade = float(rng.uniform(0.9, 3.0))
    sheet_sdf(grid, blade, rng, centre, rot, (a, b), t_blade, tuple(rng.uniform(-0.008, 0.008, 3)),
              wobble=rng.uniform(0.3, 1.5) * s)
    # thick rim along part of the outline, and the neck from the blade's end to a socket
    th = np.linspace(rng.uniform(-0.5, 0.5), rng.uniform(1.5, 3.5), 14)
    u, v = rot[:, 0], rot[:, 1]
    rim_pts = centre + 0.92 * (a * np.cos(th)[:, None] * u + b * np.sin(th)[:, None] * v)
    rim_r = rng.uniform(1.5, 4.0) * s ** 0.5
    outer, inner = grid.empty(), grid.empty()
    capsule_sdf(grid, outer, rim_pts, np.linspace(rim_r, rim_r * rng.uniform(0.5, 1.2), len(rim_pts)))
    neck_end = centre - u * a * rng.uniform(1.0, 1.25)
    neck_r = rng.uniform(3.0, 6.0) * s ** 0.5
    neck = np.array([centre - u * a * 0.6, neck_end])
    capsule_sdf(grid, outer, neck, np.array([neck_r * 0.8, neck_r]))
    cortex = float(np.clip(rng.uniform(0.8, 2.2) * s ** 0.5, 0.8, 4.0))
    capsule_sdf(grid, inner, rim_pts, np.maximum(np.linspace(rim_r, rim_r * 0.8, len(rim_pts)) - cortex, 0.3))
    capsule_sdf(grid, inner, neck, np.maximum(np.array([neck_r * 0.8, neck_r]) - cortex, 0.3))
    # socket: a thick hemispherical cup opening away from the neck
    cup_r = neck_r * rng.uniform(1.1, 1.6)
    cup_c = neck_end - u * cup_r * 0.6
    cup = grid.empty()
    ellipsoid_sdf(grid, cup, cup_c, np.full(3, cup_r), rot)
    cup_wall = float(rng.uniform(1.0, 2.5) * s ** 0.5)
    z, y, x = grid.coords()
    facing = (u[0] * (z - cup_c[0]) + u[1] * (y - cup_c[1]) + u[2] * (x - cup_c[2])) < cup_r * 0.2
    socket = (np.abs(cup) < cup_wall) & ~facing
    # a foramen through the blade
    holes = grid.empty()
    n_holes = int(rng.integers(0, 3))
    for _ in range(n_holes):
        p = centre + a * rng.uniform(-0.5, 0.5) * u + b * rng.uniform(-0.4, 0.4) * v
        ellipsoid_sdf(grid, holes, p, np.array([b, b, b]) * rng.uniform(0.1, 0.3), random_rotation(rng))
    trab = _trabecular(rng, grid, rng.uniform(1.2, 2.2) * s ** 0.5, rng.uniform(0.2, 0.4))
    core = inner < 0
    bone = ((blade < 0) & (holes >= 0)) | ((outer < 0) & ~core) | (core & trab) | socket
    return Parts(bone, _empty(grid), core & ~bone, core,
                 {"blade_thickness": round(t_blade, 2), "rim_radius": round(float(rim_r), 2),
                  "neck_radius": round(float(neck_r), 2), "cortex": round(cortex, 2), "foramina": n_holes})


def digits(grid: Grid, rng: np.random.Generator, teeth: bool) -> Parts:
    """A hand or foot: 2-5 fanning rays of short bones (cortex, cancellous ends) with joint gaps, a curved
    claw at the tip of some rays, and small cancellous carpal/tarsal nodules at the base."""
    s = grid.scale
    main = random_unit(rng)
    spread = np.cross(main, random_unit(rng))
    spread /= np.linalg.norm(spread)
    n_rays = int(rng.integers(2, 6))
    total = float(grid.extent.min()) * rng.uniform(0.6, 1.0)
    base = grid.centre - main * total * 0.5 + grid.extent * rng.uniform(-0.08, 0.08, 3)
    outer, inner, claws, nodules = grid.empty(), grid.empty(), grid.empty(), grid.empty()
    cortex = float(np.clip(rng.uniform(0.7, 2.0) * s ** 0.5, 0.7, 4.0))
    r_main = rng.uniform(2.5, 6.0) * s ** 0.5
    n_bones = []
    for ray in range(n_rays):
        ang = (ray - (n_rays - 1) / 2) * rng.uniform(0.15, 0.35)
        d = np.cos(ang) * main + np.sin(ang) * spread
        p = base + d * r_main * 2
        n_b = int(rng.integers(2, 5))
        n_bones.append(n_b)
        lengths = total * np.sort(rng.dirichlet(np.ones(n_b)))[::-1] * rng.uniform(0.7, 1.0)
        r = r_main * rng.uniform(0.7, 1.1)
        for k, length in enumerate(lengths):
            gap = rng.uniform(0.8, 2.5) * s ** 0.5
            pts = random_curve(rng, p, d, max(length - gap, 2.0 * r), n=6, bend=0.05)
            if k == n_b - 1 and rng.random() < 0.6:  # claw: a curved, tapering solid cone
                capsule_sdf(grid, claws, random_curve(rng, p, d, max(length, 3 * r), n=6, bend=0.2),
                            np.linspace(r * 0.9, 0.5, 6))
                break
            t = np.linspace(0, 1, len(pts))
            radius = r * (1 + 0.35 * (np.exp(-(t / 0.2) ** 2) + np.exp(-((1 - t) / 0.2) ** 2)))
            capsule_sdf(grid, outer, pts, radius)
            capsule_sdf(grid, inner, pts, np.maximum(radius - cortex, 0.3))
            d = pts[-1] - pts[-2]
            d /= np.linalg.norm(d)
            p = pts[-1] + d * (gap + radius[-1] * 1.5)
            r *= rng.uniform(0.7, 0.95)
    n_nod = int(rng.integers(0, 6))
    for _ in range(n_nod):
        c = base - main * r_main * rng.uniform(0.5, 3.0) + spread * r_main * rng.uniform(-3, 3)
        ellipsoid_sdf(grid, nodules, c, r_main * rng.uniform(0.7, 1.5, 3), random_rotation(rng))
    trab = _trabecular(rng, grid, rng.uniform(1.0, 2.0) * s ** 0.5, rng.uniform(0.2, 0.45))
    core = (inner < 0) | (nodules < -cortex)
    shell = ((outer < 0) & (inner >= 0)) | ((nodules < 0) & (nodules >= -cortex))
    bone = shell | (core & trab) | (claws < 0)
    return Parts(bone, _empty(grid), core & ~bone, core,
                 {"rays": n_rays, "bones_per_ray": n_bones, "radius": round(float(r_main), 2),
                  "cortex": round(cortex, 2), "nodules": n_nod})


def carapace(grid: Grid, rng: np.random.Generator, teeth: bool) -> Parts:
    """A turtle-shell-like dome: cortex–diploë–cortex sandwich split into polygonal plates by sutures,
    with a sculptured (pitted) outer surface."""
    s = grid.scale
    rot = random_rotation(rng)
    centre = grid.centre + grid.extent * rng.uniform(-0.1, 0.1, 3)
    half = tuple(grid.extent[1:].min() * rng.uniform(0.3, 0.55, 2))
    thick = float(rng.uniform(3.0, 9.0) * s ** 0.5)
    dome = grid.empty()
    k = rng.uniform(0.002, 0.012) / s
    sheet_sdf(grid, dome, rng, centre, rot, half, thick, (k, k * rng.uniform(0.5, 1.0), 0.0),
              wobble=rng.uniform(0.3, 1.5) * s)
    cortex = float(np.clip(rng.uniform(0.15, 0.35) * thick, 0.8, 3.0))
    # plates: Voronoi cells of random points; sutures where the two nearest points are nearly equidistant
    n_plates = int(rng.integers(4, 16))
    pts = centre + (rng.uniform(-1, 1, (n_plates, 2)) * np.array(half)) @ rot[:, :2].T
    z, y, x = grid.coords()
    d1 = np.full(grid.shape, np.inf, np.float32)
    d2 = np.full(grid.shape, np.inf, np.float32)
    for p in pts:
        d = np.sqrt((z - p[0]) ** 2 + (y - p[1]) ** 2 + (x - p[2]) ** 2)
        d2 = np.minimum(d2, np.maximum(d1, d))
        d1 = np.minimum(d1, d)
    wiggle = 1.5 * s * smooth_noise(rng, grid.shape, 3.0 * s, grid.az)
    gap = float(rng.uniform(0.6, 1.6))
    suture = (d2 - d1 + wiggle) < gap
    # pits on one face: small spheres just above the mid-surface's outer side
    pits = grid.empty()
    n_pits = int(rng.integers(0, 60))
    for _ in range(n_pits):
        q = centre + (rng.uniform(-1, 1, 2) * np.array(half)) @ rot[:, :2].T + rot[:, 2] * thick / 2
        ellipsoid_sdf(grid, pits, q, np.full(3, rng.uniform(0.8, 2.0) * s ** 0.5), rot)
    trab = _trabecular(rng, grid, rng.uniform(1.0, 2.0) * s ** 0.5, rng.uniform(0.25, 0.45))
    plate = (dome < 0) & ~suture & (pits >= 0)
    core = dome < -cortex
    bone = plate & (~core | trab)
    return Parts(bone, _empty(grid), core & ~bone, core & plate,
                 {"thickness": round(thick, 2), "cortex": round(cortex, 2), "plates": n_plates,
                  "suture_gap": round(gap, 2), "pits": n_pits})


LIMB_AND_ARMOUR_BUILDERS = {"girdle": girdle, "digits": digits, "carapace": carapace}
