"""Intensity inside fossil bone and teeth, and what fills the cavities they enclose.

Fossil bone is not uniform: a denser outer cortex, a porous interior, patchy diagenetic
mineralisation. Its mean is drawn near the matrix so only texture and context separate them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .grid import Grid, distance_inside, smooth_noise
from .shapes import Parts
from .visibility import WINDOW, local_contrast, windowed_mean

#: the local d' (bone vs the matrix beside it, scanner noise included) every labelled bone voxel gets at least
LOCAL_VISIBILITY = 1.0


def bone_and_tooth(grid: Grid, rng: np.random.Generator, parts: Parts, high_z: float
                   ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Attenuation inside bone and tooth voxels (float32 full grid) and the enamel mask."""
    s = grid.scale
    solid = parts.bone | parts.tooth
    depth = distance_inside(solid, grid.az)
    cortex_t = rng.uniform(0.8, 3.0) * s ** 0.5
    cortex_boost = rng.uniform(-0.02, 0.15)
    patch_amp = rng.uniform(0.02, 0.1)
    arr = np.float32(1.0) + np.float32(patch_amp) * smooth_noise(rng, grid.shape, rng.uniform(5, 15) * s, grid.az)
    arr += np.float32(rng.uniform(0.01, 0.06)) * smooth_noise(rng, grid.shape, rng.uniform(0.5, 1.2), grid.az)
    arr[depth <= cortex_t] += np.float32(cortex_boost)
    # porosity: vascular canals / osteocyte lacunae filled with lighter minerals or left open
    pore_field = smooth_noise(rng, grid.shape, rng.uniform(0.7, 1.6), grid.az)
    porosity = rng.uniform(0.0, 0.25)
    pores = (pore_field > np.quantile(pore_field[::3, ::3, ::3], 1 - porosity)) & (depth > cortex_t)
    pore_drop = rng.uniform(0.05, 0.35)
    arr[pores] -= np.float32(pore_drop)
    # teeth: dentine denser than bone, enamel cap much denser (more so at low energy)
    dentine = 1.0 + rng.uniform(0.05, 0.3)
    enamel_gain = rng.uniform(0.3, 0.8) * high_z
    enamel = parts.tooth & ~parts.bone & (depth <= rng.uniform(1.0, 2.0))
    arr[parts.tooth] += np.float32(dentine - 1.0)
    arr[enamel] += np.float32(enamel_gain)
    return arr, enamel, {"cortex_vox": round(float(cortex_t), 2), "cortex_boost": round(cortex_boost, 4),
                         "bone_patch_amplitude": round(patch_amp, 4), "porosity": round(porosity, 3),
                         "pore_drop": round(pore_drop, 3), "dentine": round(dentine, 3),
                         "enamel_gain": round(float(enamel_gain), 3)}


def cavity_fill(grid: Grid, rng: np.random.Generator, matrix: np.ndarray, cavity: np.ndarray, high_z: float
                ) -> tuple[np.ndarray, str]:
    """Values for voxels of enclosed cavities: sediment, sparry calcite, air, or a geode-like mix."""
    kind = str(rng.choice(["sediment", "calcite", "air", "mixed"], p=[0.55, 0.2, 0.07, 0.18]))
    values = matrix[cavity]
    if kind == "sediment":
        return values + np.float32(rng.normal(0.0, 0.05)), kind
    calcite = np.float32(1.0 + rng.uniform(0.1, 0.5) * high_z) + np.float32(0.02) * rng.standard_normal(
        values.shape, dtype=np.float32)
    if kind == "calcite":
        return calcite, kind
    air = np.float32(0.03) + np.float32(0.01) * rng.standard_normal(values.shape, dtype=np.float32)
    if kind == "air":
        return air, kind
    split = smooth_noise(rng, grid.shape, 4.0 * grid.scale, grid.az)[cavity]
    out = np.where(split > 0.9, air, np.where(split > -0.4, calcite, values))
    return out.astype(np.float32), kind


def rind(grid: Grid, rng: np.random.Generator, dist: np.ndarray) -> tuple[np.ndarray, float, dict]:
    """A thin halo in the matrix around bone: clay/shrinkage gap (dark) or mineral coating (bright).

    ``dist`` is the distance from bone/tooth (0 inside). Returns the halo mask (matrix side only),
    its attenuation offset (0 when absent) and info.
    """
    if rng.random() < 0.35:
        return np.zeros(grid.shape, dtype=bool), 0.0, {"rind": "none"}
    width = float(rng.uniform(0.8, 2.2))
    mask = (dist > 0) & (dist <= width)
    amp = float(rng.uniform(0.06, 0.25)) * (1.0 if rng.random() < 0.4 else -1.0)
    return mask, amp, {"rind": "coating" if amp > 0 else "gap", "rind_width_vox": round(width, 2),
                       "rind_offset": round(amp, 4)}


def contrast_floor(rng: np.random.Generator, att: np.ndarray, solid: np.ndarray, near: np.ndarray,
                   noise: float, blur: tuple[float, float, float]) -> dict:
    """Make the *seen* mean bone / nearby-matrix difference at least a small floor (in place).

    Measured after the scanner blur (thin bone loses contrast to partial volume), so the shift of
    the exact bone values is divided by how much of a bone voxel's blurred value is still bone.
    Local reversals and overlaps remain (patchy texture on both sides), but bone is never
    statistically invisible: the truth must be learnable from the image.
    """
    if not solid.any() or not near.any():
        return {"contrast_floor": 0.0, "contrast_shift": 0.0}
    seen = ndimage.gaussian_filter(att, blur)
    diff = float(seen[solid].mean() - seen[near].mean())
    # 1.5× the noise keeps the contrast subtle but above it
    floor = max(float(rng.uniform(0.08, 0.18)), 1.5 * noise, float(rng.uniform(1.2, 2.0)) * float(seen[near].std()))
    del seen
    kept = float(ndimage.gaussian_filter(solid.astype(np.float32), blur)[solid].mean())
    shift = 0.0
    if abs(diff) < floor:
        sign = np.sign(diff) if abs(diff) > 0.005 else (1.0 if rng.random() < 0.5 else -1.0)
        shift = float(sign * min((floor - abs(diff)) / max(kept, 0.3), 0.4))
        att[solid] += np.float32(shift)
    return {"contrast_floor": round(floor, 4), "seen_bone_minus_matrix": round(diff + shift * kept, 4),
            "contrast_shift": round(shift, 4)}


def local_contrast_floor(att: np.ndarray, bone: np.ndarray, matrix: np.ndarray, noise: float,
                         blur: tuple[float, float, float], rounds: int = 3) -> dict:
    """Raise bone (in place) wherever it is locally invisible, so an expert could draw every labelled voxel.

    In every window where bone and matrix meet, the *seen* (blurred) bone mean must differ from the matrix
    mean by at least :data:`LOCAL_VISIBILITY` × the matrix's local s.d. (its texture and the scanner noise
    together). Where it does not, bone there is shifted by a smooth field towards the scan's overall side of
    the matrix, divided by how much of a voxel's blurred value is bone so thin parts reach the floor too.
    Visible local reversals of the sign stay. Reports the share of bone shifted and the share still below
    half the floor (d' < 0.5) afterwards.
    """
    if not bone.any() or not matrix.any():
        return {"local_floor_shifted": 0.0, "local_invisible": 0.0}
    noise_sd = 1.1 * float(noise)  # Poisson-like noise at the attenuation of bone/matrix (~1)
    kept, _ = windowed_mean(ndimage.gaussian_filter(bone.astype(np.float32), blur), bone)
    overall = float(np.sign(att[bone].mean() - att[matrix].mean())) or 1.0
    shifted = np.zeros(att.shape, dtype=bool)
    for last in [False] * rounds + [True]:
        seen = ndimage.gaussian_filter(att, blur)
        diff, sd, scored = local_contrast(seen, bone, matrix)
        del seen
        floor = LOCAL_VISIBILITY * np.sqrt(sd * sd + noise_sd**2)
        if last:
            scored &= bone
            invisible = float((np.abs(diff) < 0.5 * floor)[scored].mean()) if scored.any() else 0.0
            break
        # too faint: pushed to the floor on the scan's overall side (one direction everywhere, so neighbouring
        # windows never cancel out); already visible reversals are kept
        need = np.where(scored & (np.abs(diff) < floor), floor - overall * diff, np.float32(0))
        field = overall * need * np.float32(1.2) / np.maximum(kept, np.float32(0.3))
        field = ndimage.gaussian_filter(field, 1.0)  # no seams between windows shifted by different amounts
        np.clip(field, -0.6, 0.6, out=field)
        att[bone] += field[bone]
        shifted |= bone & (np.abs(field) > 1e-3)
    n_bone = max(int(bone.sum()), 1)
    return {"local_floor_shifted": round(float(shifted.sum()) / n_bone, 4), "local_invisible": round(invisible, 4)}
