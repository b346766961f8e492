"""Jaw-like bones carrying rows of conical teeth (class 2), with sockets and replacement teeth."""

from __future__ import annotations

import numpy as np

from .grid import Grid, capsule_sdf


def _perpendicular(v: np.ndarray, hint: np.ndarray) -> np.ndarray:
    """``hint`` made perpendicular to ``v`` (falls back to any perpendicular)."""
    p = hint - (hint @ v) * v
    if np.linalg.norm(p) < 1e-3:
        p = np.cross(v, [1.0, 0.0, 0.0]) if abs(v[0]) < 0.9 else np.cross(v, [0.0, 1.0, 0.0])
    return p / np.linalg.norm(p)


def tooth_row(grid: Grid, rng: np.random.Generator, jaw: np.ndarray, jaw_radius: float, up_hint: np.ndarray,
              tooth_sdf: np.ndarray, socket_sdf: np.ndarray) -> dict:
    """Place conical teeth along the polyline ``jaw`` (a tube of ``jaw_radius``).

    Each tooth is a slightly recurved cone whose root sits in the jaw. Some positions are empty
    sockets (a cone-shaped hole in the bone, drawn into ``socket_sdf``); some carry a small
    replacement tooth inside the jaw below the functional one.
    """
    seg = np.diff(jaw, axis=0)
    seglen = np.linalg.norm(seg, axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seglen)])
    base_r = float(np.clip(jaw_radius * rng.uniform(0.35, 0.6), 1.2, 12.0))
    spacing = base_r * rng.uniform(1.9, 2.8)
    crown = jaw_radius * rng.uniform(0.8, 2.0)
    n = max(1, int((cum[-1] - 2 * base_r) // spacing))
    placed = missing = replacement = 0
    for s in np.linspace(base_r, cum[-1] - base_r, n):
        idx = min(int(np.searchsorted(cum, s, side="right")) - 1, len(seg) - 1)
        frac = (s - cum[idx]) / max(seglen[idx], 1e-6)
        p = jaw[idx] + frac * seg[idx]
        tangent = seg[idx] / max(seglen[idx], 1e-6)
        up = _perpendicular(tangent, up_hint + 0.15 * rng.standard_normal(3))
        r = base_r * rng.uniform(0.8, 1.15)
        length = crown * rng.uniform(0.75, 1.25)
        recurve = rng.uniform(-0.35, 0.35) * length
        pts = np.array([
            p - up * jaw_radius * 0.55,                      # root tip
            p + up * jaw_radius * 0.6,                       # at the alveolar margin
            p + up * (jaw_radius + 0.55 * length) + tangent * recurve * 0.3,
            p + up * (jaw_radius + length) + tangent * recurve,  # crown tip
        ])
        radii = np.array([0.55 * r, r, 0.7 * r, 0.45])
        if rng.random() < 0.15:
            capsule_sdf(grid, socket_sdf, pts[:2], radii[:2] * 1.1)
            missing += 1
            continue
        capsule_sdf(grid, tooth_sdf, pts, radii)
        placed += 1
        if rng.random() < 0.3:  # replacement tooth growing below, inside the jaw
            below = p - up * jaw_radius * 0.35
            capsule_sdf(grid, tooth_sdf, np.array([below - up * 0.3 * r, below + up * 0.5 * r]),
                        np.array([0.45 * r, 0.3 * r]))
            replacement += 1
    return {"teeth": placed, "empty_sockets": missing, "replacement_teeth": replacement,
            "tooth_radius": round(base_r, 2), "crown_length": round(float(crown), 2)}
