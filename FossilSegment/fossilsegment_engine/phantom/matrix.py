"""Rock matrix: sandstone texture, tilted bedding, calcite cracks, pyrite inclusions, voids, block outline.

Intensities are linear attenuation relative to fresh fossil bone (bone ~ 1.0, air 0). The matrix mean is
drawn close to bone, on either side, and its low-frequency variation is large enough to reverse the
bone/matrix contrast locally, as in the paper's protoceratopsian sandstone blocks.
"""

from __future__ import annotations

import numpy as np

from .grid import Grid, ellipsoid_sdf, random_rotation, random_unit, smooth_noise


def rock(grid: Grid, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Matrix attenuation: base level + tilted, warped bedding + patchy cementation + grain."""
    s = grid.scale
    sign = -1.0 if rng.random() < 0.65 else 1.0  # matrix usually a little lighter than bone
    base = 1.0 + sign * float(rng.uniform(0.0, 0.22) if rng.random() < 0.8 else rng.uniform(0.22, 0.5))
    z, y, x = grid.coords()
    normal = np.array([1.0, 0.0, 0.0]) + rng.uniform(-0.7, 0.7, 3)  # bedding roughly across k, tilted
    normal /= np.linalg.norm(normal)
    warp = smooth_noise(rng, grid.shape, 16.0 * s, grid.az) * rng.uniform(0.5, 4.0) * s
    depth = normal[0] * z + normal[1] * y + normal[2] * x + warp
    layer_thick = rng.uniform(3.0, 20.0) * s
    n_layers = int(np.ceil(float(np.linalg.norm(grid.extent)) * 2 / layer_thick)) + 4
    levels = rng.normal(0.0, 1.0, n_layers).astype(np.float32)
    idx = np.clip(((depth - depth.min()) / layer_thick).astype(np.int64), 0, n_layers - 1)
    bedding_amp = rng.uniform(0.0, 0.06)
    arr = np.float32(base) + np.float32(bedding_amp) * levels[idx]
    del idx, depth, warp
    patch_amp = rng.uniform(0.01, 0.06)
    arr += np.float32(patch_amp) * smooth_noise(rng, grid.shape, rng.uniform(6.0, 20.0) * s, grid.az)
    grain_amp = rng.uniform(0.01, 0.07)
    grain_sigma = rng.uniform(0.5, 1.5)
    arr += np.float32(grain_amp) * smooth_noise(rng, grid.shape, grain_sigma, grid.az)
    # sparse bright/dark grains (heavy minerals, clay clasts)
    speck = rng.random(grid.shape, dtype=np.float32)
    arr[speck < 0.004] += np.float32(rng.uniform(0.1, 0.4))
    arr[speck > 0.996] -= np.float32(rng.uniform(0.1, 0.3))
    return arr, {"matrix_base": round(base, 4), "bedding_normal": [round(float(v), 3) for v in normal],
                 "bedding_thickness_vox": round(float(layer_thick), 2), "bedding_amplitude": round(bedding_amp, 4),
                 "patch_amplitude": round(patch_amp, 4), "grain_amplitude": round(grain_amp, 4),
                 "grain_sigma": round(grain_sigma, 3)}


def block(grid: Grid, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Where the rock is: the whole field, a cylindrical core, or an irregular block with air around."""
    kind = str(rng.choice(["full", "cylinder", "irregular"], p=[0.5, 0.25, 0.25]))
    if kind == "full":
        return np.ones(grid.shape, dtype=bool), {"block": kind}
    z, y, x = grid.coords()
    cy, cx = grid.centre[1:] + rng.normal(0.0, 0.04, 2) * grid.extent[1:]
    r_max = grid.extent[1:].min() / 2
    radius = r_max * rng.uniform(0.75, 1.05)
    r = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
    if kind == "cylinder":
        mask = np.broadcast_to(r < radius, grid.shape).copy()
    else:
        theta = np.arctan2(y - cy, x - cx)
        wiggle = sum(rng.normal(0, 0.08 / h) * np.cos(h * theta + rng.uniform(0, 2 * np.pi)) for h in range(1, 6))
        rough = smooth_noise(rng, grid.shape, 4.0 * grid.scale, grid.az) * 0.02
        mask = r < radius * (1.0 + wiggle + rough)
    if rng.random() < 0.3:  # block ends inside the scanned range
        top = grid.extent[0] * rng.uniform(0.75, 1.0)
        mask &= np.broadcast_to(z < top, grid.shape)
    return mask, {"block": kind, "block_radius_vox": round(float(radius), 2)}


def cracks(grid: Grid, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Calcite-filled fractures: thin warped discs crossing bone and matrix alike."""
    mask = np.zeros(grid.shape, dtype=bool)
    n = int(rng.integers(0, 5))
    widths = []
    z, y, x = grid.coords()
    for _ in range(n):
        nrm = random_unit(rng)
        c = grid.extent * rng.uniform(0.1, 0.9, 3)
        sd = nrm[0] * (z - c[0]) + nrm[1] * (y - c[1]) + nrm[2] * (x - c[2])
        sd = sd + rng.uniform(0.5, 3.0) * smooth_noise(rng, grid.shape, 8.0 * grid.scale, grid.az)
        w = rng.uniform(0.5, 2.2)
        widths.append(round(float(w), 2))
        reach = float(np.linalg.norm(grid.extent)) * rng.uniform(0.2, 0.7)
        dist2 = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2
        mask |= (np.abs(sd) < w / 2) & (dist2 < reach**2)
    return mask, {"cracks": n, "crack_widths_vox": widths}


def inclusions(grid: Grid, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[np.ndarray, float]], dict]:
    """Pyrite-like dense blobs (some clustered). Returns mask, (centre, radius) list and info."""
    sdf = grid.empty()
    n = int(rng.integers(0, 7))
    blobs: list[tuple[np.ndarray, float]] = []
    for _ in range(n):
        c = grid.extent * rng.uniform(0.1, 0.9, 3)
        for _member in range(int(rng.integers(1, 4))):  # framboid-like clusters
            cc = c + rng.normal(0.0, 2.0, 3)
            r = rng.uniform(0.6, 3.0) * grid.scale ** 0.5
            ellipsoid_sdf(grid, sdf, cc, r * rng.uniform(0.6, 1.3, 3), random_rotation(rng))
            blobs.append((cc, float(r)))
    return sdf < 0, blobs, {"inclusions": len(blobs)}


def voids(grid: Grid, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Air pockets and dissolution voids in the matrix."""
    sdf = grid.empty()
    n = int(rng.integers(0, 6))
    for _ in range(n):
        ellipsoid_sdf(grid, sdf, grid.extent * rng.uniform(0.05, 0.95, 3),
                      rng.uniform(1.0, 8.0, 3) * grid.scale, random_rotation(rng))
    return sdf < 0, {"voids": n}
