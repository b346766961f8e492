"""``generate()``: one synthetic fossil CT volume and its exact labels, deterministic per seed.

Labels are decided on the voxel grid first (anatomy, then cracks/inclusions/block cut them); the
attenuation map built from them is then blurred, corrupted and quantised, so the truth never
depends on the scanner effects.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..volume import Volume
from . import artifacts
from .grid import Grid, distance_outside, upsample_linear
from .matrix import block, cracks, inclusions, rock, voids
from .limbs_and_armour import LIMB_AND_ARMOUR_BUILDERS
from .shapes import FAMILY_BUILDERS as FIRST_BUILDERS, Parts
from .texture import bone_and_tooth, cavity_fill, contrast_floor, local_contrast_floor, rind

GENERATOR_VERSION = "phantom-3"
BUILDERS = {**FIRST_BUILDERS, **LIMB_AND_ARMOUR_BUILDERS}
FAMILIES: tuple[str, ...] = tuple(BUILDERS)
#: families drawn when none is named: the first six only, so every seed keeps the specimen it always made
DRAWN_FAMILIES: tuple[str, ...] = tuple(FIRST_BUILDERS)
#: size name -> array shape (k, j, i)
SIZES: dict[str, tuple[int, int, int]] = {
    "small": (48, 96, 96),
    "medium": (96, 192, 192),
    "large": (192, 384, 384),
}
#: label values
MATRIX, BONE, TOOTH = 0, 1, 2
#: share of specimens imaged at higher resolution, and how much higher (anatomy zoom, log-uniform)
ZOOMED_SHARE, ZOOM_RANGE = 0.5, (1.5, 3.5)


def _check(seed: int, size: str, family: str | None) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"phantom seed must be a non-negative integer, got {seed!r}")
    if size not in SIZES:
        raise InputError(f"unknown phantom size {size!r}; choose one of: {', '.join(SIZES)}")
    if family is not None and family not in FAMILIES:
        raise InputError(f"unknown phantom family {family!r}; choose one of: {', '.join(FAMILIES)}")


def generate(seed: int, size: str = "small", family: str | None = None, teeth: bool = True
             ) -> tuple[Volume, Volume, dict]:
    """A synthetic fossil CT: (uint16 CT volume, uint8 labels 0/1/2 on the same geometry, info dict).

    ``family=None`` draws one of :data:`DRAWN_FAMILIES` from the seed. Same arguments -> identical output.
    """
    _check(seed, size, family)
    rng = np.random.default_rng(int(seed))
    drawn = DRAWN_FAMILIES[int(rng.integers(len(DRAWN_FAMILIES)))]  # always drawn: the stream stays aligned
    family = family or drawn
    shape = SIZES[size]
    si = float(rng.uniform(0.02, 0.1))
    sk = si * (1.0 if rng.random() < 0.6 else float(rng.uniform(1.0, 2.5)))
    spacing = (si, si, sk)
    origin = tuple(float(v) for v in rng.uniform(-50.0, 50.0, 3))
    grid = Grid(shape, az=sk / si)
    zoom = 1.0 if rng.random() >= ZOOMED_SHARE else float(np.exp(rng.uniform(*np.log(ZOOM_RANGE))))

    parts = _anatomy(family, grid, rng, teeth, zoom)
    in_block, block_info = block(grid, rng)
    st = artifacts.scanner_settings(rng)
    contrast, high_z = st["contrast"], st["high_z_factor"]
    matrix_att, matrix_info = rock(grid, rng)
    solid_att, enamel, texture_info = bone_and_tooth(grid, rng, parts, high_z)
    crack, crack_info = cracks(grid, rng)
    pyrite, blobs, incl_info = inclusions(grid, rng)
    void, void_info = voids(grid, rng)

    labels = np.zeros(shape, dtype=np.uint8)
    labels[parts.bone] = BONE
    labels[parts.tooth] = TOOTH
    labels[crack | pyrite | ~in_block] = MATRIX

    # exact attenuation map (low-Z materials scaled by the energy contrast, high-Z ones by high_z)
    att = np.float32(1.0) + (matrix_att - np.float32(1.0)) * np.float32(contrast)
    cavity = parts.cavity & (labels == MATRIX)
    fill, fill_kind = cavity_fill(grid, rng, att, cavity, high_z)
    att[cavity] = fill
    att[void & (labels == MATRIX) & ~cavity] = np.float32(0.02)
    solid = labels > 0
    dist = distance_outside(solid, grid.az, reach=6.0)
    halo, halo_amp, halo_info = rind(grid, rng, dist)
    att[halo] += np.float32(halo_amp)
    att[solid] = np.float32(1.0) + (solid_att[solid] - np.float32(1.0)) * np.float32(contrast)
    near = (dist > 2.5) & (dist <= 6.0) & in_block & ~(crack | pyrite | void)
    blur = (st["blur_sigma_k_vox"], st["blur_sigma_vox"], st["blur_sigma_vox"])
    bone = labels == BONE
    floor_info = contrast_floor(rng, att, bone, near, st["noise"], blur)
    del dist, near
    rock_seen = (labels == MATRIX) & in_block & ~(crack | pyrite | void) & (att > 0.2)
    floor_info.update(local_contrast_floor(att, bone, rock_seen, st["noise"], blur))
    del rock_seen, bone
    del solid_att, matrix_att
    calcite = 1.0 + rng.uniform(0.15, 0.6) * high_z
    att[crack] = np.float32(calcite) + np.float32(0.02) * rng.standard_normal(int(crack.sum()), dtype=np.float32)
    pyrite_att = 1.0 + rng.uniform(2.0, 6.0) * high_z
    att[pyrite] = np.float32(pyrite_att)
    att[~in_block] = np.float32(0.0)

    full_r = float(np.linalg.norm(grid.extent[1:])) / 2
    blobs = [(c, r) for c, r in blobs if _inside(in_block, grid, c)]
    img = artifacts.apply(grid, rng, att, blobs, st, block_info.get("block_radius_vox", full_r))
    ct = artifacts.quantize(rng, img, st)

    n_vox = labels.size
    info = {
        "generator": GENERATOR_VERSION,
        "seed": int(seed),
        "family": family,
        "size": size,
        "shape_kji": list(shape),
        "spacing": list(spacing),
        "origin": list(origin),
        "teeth": bool(teeth),
        "anatomy_zoom": round(zoom, 3),
        "bone_fraction": round(float((labels == BONE).sum()) / n_vox, 5),
        "tooth_fraction": round(float((labels == TOOTH).sum()) / n_vox, 5),
        "labels": {"0": "matrix/air", "1": "bone", "2": "tooth"},
        "scanner": st,
        "parameters": {
            "shape": parts.params, "block": block_info, "matrix": matrix_info, "bone_texture": texture_info,
            "cavity_fill": fill_kind, "rind": halo_info, "contrast": floor_info, "cracks": crack_info,
            "inclusions": incl_info, "voids": void_info,
            "calcite_attenuation": round(float(calcite), 4), "pyrite_attenuation": round(float(pyrite_att), 4),
            "enamel_voxels": int(enamel.sum()),
        },
    }
    meta = {"source": "fossilsegment phantom", "seed": int(seed), "family": family}
    volume = Volume(ct, spacing=spacing, origin=origin, meta=meta)
    return volume, volume.with_array(labels), info


def _anatomy(family: str, grid: Grid, rng: np.random.Generator, teeth: bool, zoom: float) -> Parts:
    """The family's anatomy; with ``zoom`` > 1 built on a coarser grid and upsampled, so every part is
    ``zoom`` times thicker in voxels (a specimen scanned at higher resolution: thin parts 1–3 voxels at
    zoom 1, up to ~10 at 3.5)."""
    if zoom == 1.0:
        return BUILDERS[family](grid, rng, teeth)
    coarse = Grid(tuple(max(8, round(n / zoom)) for n in grid.shape), az=grid.az, scale=grid.scale)
    parts = BUILDERS[family](coarse, rng, teeth)

    def up(mask: np.ndarray) -> np.ndarray:
        return upsample_linear(mask.astype(np.float32), grid.shape) > 0.5

    return Parts(up(parts.bone), up(parts.tooth), up(parts.cavity), up(parts.cancellous), parts.params)


def _inside(mask: np.ndarray, grid: Grid, c: np.ndarray) -> bool:
    """Whether the (z, y, x) point ``c`` falls on a true voxel of ``mask``."""
    idx = np.round(np.asarray(c) / (grid.az, 1.0, 1.0)).astype(int)
    if np.any(idx < 0) or np.any(idx >= np.array(grid.shape)):
        return False
    return bool(mask[tuple(idx)])
