"""Scanner physics applied to the exact attenuation map (after the labels are fixed).

Order: partial-volume blur, metal-like streaks, beam-hardening cupping, ring artifacts, drift along
k, Poisson-like + Gaussian noise, then gain/offset into a random part of the uint16 range.
Rings and cupping are centred on the rotation axis (parallel to k), as in a cone/fan-beam scanner.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .grid import Grid


def scanner_settings(rng: np.random.Generator) -> dict:
    """Random acquisition settings (stored in the phantom's info)."""
    energy = float(rng.uniform(0.0, 1.0))  # 0: low kV (strong photoelectric contrast), 1: high kV
    return {
        "energy": round(energy, 4),
        "kv_equivalent": round(60 + 165 * energy, 1),
        "contrast": round(float(0.6 + 0.8 * (1 - energy) * rng.uniform(0.5, 1.0)), 4),
        "high_z_factor": round(1.0 + 2.5 * (1 - energy), 4),
        "blur_sigma_vox": round(float(rng.uniform(0.4, 1.1)), 3),
        "blur_sigma_k_vox": round(float(rng.uniform(0.3, 1.0)), 3),
        "noise": round(float(rng.uniform(0.01, 0.08)), 4),
        "noise_correlation": round(float(rng.choice([0.0, rng.uniform(0.4, 0.9)])), 3),
        "cupping": round(float(rng.uniform(0.0, 0.12)), 4),
        "ring_count": int(rng.integers(0, 12)),
        "ring_amplitude": round(float(rng.uniform(0.0, 0.08)), 4),
        "streak_amplitude": round(float(rng.uniform(0.02, 0.25)), 4),
        "drift": round(float(rng.uniform(0.0, 0.1)), 4),
        "axis_offset_vox": [round(float(v), 2) for v in rng.normal(0.0, 2.0, 2)],
    }


def _axis_radius(grid: Grid, st: dict) -> np.ndarray:
    """Distance of each (j, i) pixel from the rotation axis, shape (1, nj, ni)."""
    _, y, x = grid.coords()
    cy, cx = grid.centre[1:] + np.asarray(st["axis_offset_vox"])
    return np.sqrt((y - cy) ** 2 + (x - cx) ** 2)


def streaks(grid: Grid, rng: np.random.Generator, arr: np.ndarray, blobs: list[tuple[np.ndarray, float]],
            amplitude: float) -> None:
    """Bright/dark straight streaks radiating from dense inclusions across their axial slices (in place)."""
    _, y, x = grid.coords()
    y, x = y[0], x[0]
    for c, r in blobs:
        k0 = int(round(c[0] / grid.az))
        kr = int(np.ceil(r / grid.az)) + 1
        ks = slice(max(k0 - kr, 0), min(k0 + kr + 1, grid.shape[0]))
        if ks.stop <= ks.start:
            continue
        pattern = np.zeros(grid.shape[1:], dtype=np.float32)
        dist = np.sqrt((y - c[1]) ** 2 + (x - c[2]) ** 2)
        for _ in range(int(rng.integers(2, 7))):
            a = rng.uniform(0, np.pi)
            perp = np.abs(-np.sin(a) * (x - c[2]) + np.cos(a) * (y - c[1]))
            width = rng.uniform(0.5, 1.5) * max(r, 1.0)
            pattern += np.float32(rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 1.0)) * np.exp(-(perp / width) ** 2)
        pattern *= np.exp(-dist / (0.6 * grid.extent[1:].max())) * np.float32(amplitude * min(r, 3.0))
        ramp = np.exp(-((np.arange(ks.start, ks.stop) - k0) * grid.az / max(r, 1.0)) ** 2).astype(np.float32)
        arr[ks] += ramp[:, None, None] * pattern[None]


def rings(grid: Grid, rng: np.random.Generator, st: dict) -> np.ndarray:
    """Concentric ring offsets around the rotation axis, shape (1, nj, ni)."""
    rad = _axis_radius(grid, st)
    out = np.zeros_like(rad)
    r_max = float(rad.max())
    for _ in range(st["ring_count"]):
        r0, w = rng.uniform(0.0, r_max), rng.uniform(0.3, 1.0)
        out += np.float32(rng.normal(0.0, st["ring_amplitude"])) * np.exp(-((rad - r0) / w) ** 2)
    return out.astype(np.float32)


def apply(grid: Grid, rng: np.random.Generator, att: np.ndarray, blobs: list[tuple[np.ndarray, float]],
          st: dict, block_radius: float) -> np.ndarray:
    """The CT image (float32) seen by the scanner for the exact attenuation map ``att``."""
    sig = (st["blur_sigma_k_vox"], st["blur_sigma_vox"], st["blur_sigma_vox"])
    img = ndimage.gaussian_filter(att, sig, mode="nearest").astype(np.float32)
    streaks(grid, rng, img, blobs, st["streak_amplitude"])
    rad = _axis_radius(grid, st)
    cup = 1.0 - st["cupping"] * np.clip(1.0 - (rad / block_radius) ** 2, 0.0, 1.0)
    img *= cup.astype(np.float32)
    ring = rings(grid, rng, st)
    amp = 1.0 + 0.3 * rng.standard_normal(grid.shape[0]).astype(np.float32)
    img += amp[:, None, None] * ring
    nk = grid.shape[0]
    walk = ndimage.gaussian_filter1d(rng.standard_normal(nk), max(2.0, nk / 8)) if nk > 1 else np.zeros(1)
    walk = walk / (np.abs(walk).max() or 1.0)
    gain = 1.0 + st["drift"] * (rng.uniform(-1, 1) * np.linspace(-1, 1, nk) + walk)
    img *= gain.astype(np.float32)[:, None, None]
    noise = rng.standard_normal(grid.shape, dtype=np.float32)
    if st["noise_correlation"] > 0:
        noise = ndimage.gaussian_filter(noise, st["noise_correlation"])
        noise /= np.float32(noise.std() or 1.0)
    img += np.float32(st["noise"]) * np.sqrt(np.maximum(img, 0.0) + np.float32(0.2)) * noise
    return img


def quantize(rng: np.random.Generator, img: np.ndarray, st: dict) -> np.ndarray:
    """Map to uint16 with a random offset and gain (bright inclusions may saturate)."""
    offset = float(rng.uniform(0, 25000))
    span = float(rng.uniform(2500, 40000))
    gain = span / float(rng.uniform(1.3, 2.5))  # attenuation 1.0 lands at 40-77 % of the span
    st["offset"], st["gain"] = round(offset, 2), round(gain, 3)
    out = np.clip(np.rint(offset + gain * img), 0, 65535)
    return out.astype(np.uint16)
