"""Voxel grid, smooth random fields and signed-distance primitives used to build phantoms.

Coordinates are ``(z, y, x)`` in *in-plane voxel units*: ``y = j``, ``x = i`` and ``z = k * az`` where
``az = sk / si`` (slice spacing over pixel spacing), so shapes keep their physical proportions when
slices are thicker than pixels. Signed distances are negative inside, in the same units.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

FAR = np.float32(1e4)  # "no shape here" distance


class Grid:
    """The voxel lattice of one phantom and helpers to evaluate fields on sub-boxes of it."""

    def __init__(self, shape: tuple[int, int, int], az: float = 1.0, scale: float | None = None) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.az = float(az)
        nk, nj, ni = self.shape
        self.extent = np.array([nk * self.az, nj, ni], dtype=float)  # (z, y, x) size
        self.centre = (self.extent - np.array([self.az, 1.0, 1.0])) / 2.0
        # feature sizes in voxels scale with this; 1.0 for "small" unless given
        self.scale = float(min(nj, ni)) / 96.0 if scale is None else float(scale)

    def empty(self) -> np.ndarray:
        """A distance field with nothing in it."""
        return np.full(self.shape, FAR, dtype=np.float32)

    def box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices covering the (z, y, x) box ``[lo, hi]``; ``None`` when it misses the grid."""
        lo = np.asarray(lo, float) / (self.az, 1.0, 1.0)
        hi = np.asarray(hi, float) / (self.az, 1.0, 1.0)
        out = []
        for a, b, n in zip(lo, hi, self.shape):
            s, e = max(int(np.floor(a)), 0), min(int(np.ceil(b)) + 1, n)
            if e <= s:
                return None
            out.append(slice(s, e))
        return tuple(out)  # type: ignore[return-value]

    def coords(self, sl: tuple[slice, slice, slice] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable ``z, y, x`` float32 coordinate arrays for the whole grid or a sub-box."""
        sl = sl or tuple(slice(0, n) for n in self.shape)  # type: ignore[assignment]
        z = (np.arange(sl[0].start, sl[0].stop, dtype=np.float32) * np.float32(self.az))[:, None, None]
        y = np.arange(sl[1].start, sl[1].stop, dtype=np.float32)[None, :, None]
        x = np.arange(sl[2].start, sl[2].stop, dtype=np.float32)[None, None, :]
        return z, y, x


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, az: float = 1.0) -> np.ndarray:
    """Gaussian-correlated noise (zero mean, unit std) with correlation length ``sigma`` voxels.

    Large ``sigma`` is generated on a coarse lattice and upsampled, so cost stays low.
    """
    sig = np.array([sigma / az] + [sigma] * (len(shape) - 1), dtype=float)
    factor = max(1.0, float(sigma) / 2.5)
    coarse = tuple(shape) if factor == 1.0 else tuple(max(2, int(np.ceil(n / factor)) + 1) for n in shape)
    white = rng.standard_normal(coarse).astype(np.float32)
    field = ndimage.gaussian_filter(white, np.maximum(sig / factor, 0.3), mode="wrap")
    if coarse != tuple(shape):
        field = upsample_linear(field, tuple(shape))
    field -= field.mean()
    std = float(field.std())
    return field / std if std > 0 else field


def upsample_linear(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Separable linear interpolation of ``arr`` onto ``shape`` (corners aligned); fast and memory-light."""
    out = arr
    for axis, n in enumerate(shape):
        m = out.shape[axis]
        if m == n:
            continue
        pos = np.linspace(0.0, m - 1.0, n, dtype=np.float64)
        i0 = np.minimum(pos.astype(np.int64), m - 2) if m > 1 else np.zeros(n, np.int64)
        w = (pos - i0).astype(np.float32) if m > 1 else np.zeros(n, np.float32)
        view = [None] * out.ndim
        view[axis] = slice(None)
        w = w[tuple(view)]
        lo = np.take(out, i0, axis=axis)
        hi = np.take(out, np.minimum(i0 + 1, m - 1), axis=axis)
        out = lo + w * (hi - lo)
    return out.astype(np.float32, copy=False)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix acting on (z, y, x) vectors."""
    return Rotation.random(random_state=rng).as_matrix().astype(np.float32)


def random_unit(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random unit vector."""
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def random_curve(rng: np.random.Generator, start: np.ndarray, direction: np.ndarray, length: float,
                 n: int = 16, bend: float = 0.25) -> np.ndarray:
    """``n`` points of a smooth random curve (a wandering walk) of about ``length`` from ``start``."""
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    turns = ndimage.gaussian_filter1d(rng.standard_normal((n, 3)), sigma=max(1.0, n / 6), axis=0)
    pts = [np.asarray(start, float)]
    step = length / (n - 1)
    for t in range(1, n):
        d = d + bend * turns[t]
        d /= np.linalg.norm(d)
        pts.append(pts[-1] + step * d)
    return np.array(pts)


def ellipsoid_sdf(grid: Grid, out: np.ndarray, centre: np.ndarray, radii: np.ndarray,
                  rot: np.ndarray, margin: float = 0.0) -> tuple[slice, slice, slice] | None:
    """Union an (approximately signed-distance) ellipsoid into ``out`` (in place); returns its box.

    First-order distance ``(f - 1) * f / |q / r^2|`` with ``f = |q / r|``: exact on the surface and
    good a few voxels around it, so shells of any thickness are ``|sdf| < t / 2``.
    """
    radii = np.asarray(radii, np.float32)
    reach = float(radii.max()) + margin + 1.0
    sl = grid.box(np.asarray(centre) - reach, np.asarray(centre) + reach)
    if sl is None:
        return None
    z, y, x = grid.coords(sl)
    c = np.asarray(centre, np.float32)
    dz, dy, dx = z - c[0], y - c[1], x - c[2]
    qs = [(rot[0, a] * dz + rot[1, a] * dy + rot[2, a] * dx) for a in range(3)]  # R^T (p - c)
    f2 = sum((q / r) ** 2 for q, r in zip(qs, radii))
    g2 = sum((q / r**2) ** 2 for q, r in zip(qs, radii))
    f = np.sqrt(f2)
    d = (f - 1.0) * f / np.sqrt(np.maximum(g2, 1e-12))
    np.minimum(out[sl], d.astype(np.float32), out=out[sl])
    return sl


def capsule_sdf(grid: Grid, out: np.ndarray, points: np.ndarray, radii: np.ndarray) -> None:
    """Union a tube along the polyline ``points`` with per-point ``radii`` (linearly varying)."""
    points = np.asarray(points, np.float32)
    radii = np.broadcast_to(np.asarray(radii, np.float32), (len(points),))
    for a, b, ra, rb in zip(points[:-1], points[1:], radii[:-1], radii[1:]):
        reach = float(max(ra, rb)) + 1.0
        sl = grid.box(np.minimum(a, b) - reach, np.maximum(a, b) + reach)
        if sl is None:
            continue
        z, y, x = grid.coords(sl)
        ab = b - a
        l2 = float(ab @ ab) or 1e-6
        t = np.clip(((z - a[0]) * ab[0] + (y - a[1]) * ab[1] + (x - a[2]) * ab[2]) / l2, 0.0, 1.0)
        d = np.sqrt((z - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (x - a[2] - t * ab[2]) ** 2)
        np.minimum(out[sl], (d - (ra + t * (rb - ra))).astype(np.float32), out=out[sl])


def sheet_sdf(grid: Grid, out: np.ndarray, rng: np.random.Generator, centre: np.ndarray, rot: np.ndarray,
              half_size: tuple[float, float], thickness: float, curvature: tuple[float, float, float],
              wobble: float = 1.0) -> None:
    """Union a thin curved plate: ``w = h(u, v)`` in a local frame, irregular elliptic outline.

    ``thickness`` may be as small as ~1 voxel; the outline and height get low-frequency wobble.
    """
    ru, rv = half_size
    reach = max(ru, rv) + thickness + 4.0 * wobble + 2.0
    sl = grid.box(np.asarray(centre) - reach, np.asarray(centre) + reach)
    if sl is None:
        return
    z, y, x = grid.coords(sl)
    c = np.asarray(centre, np.float32)
    dz, dy, dx = z - c[0], y - c[1], x - c[2]
    u, v, w = [(rot[0, a] * dz + rot[1, a] * dy + rot[2, a] * dx) for a in range(3)]
    shp = tuple(s.stop - s.start for s in sl)
    bumps = smooth_noise(rng, shp, sigma=max(3.0, min(ru, rv) / 2), az=grid.az)
    ku, kv, kuv = curvature
    h = ku * u * u + kv * v * v + kuv * u * v + wobble * bumps
    outline = np.sqrt((u / ru) ** 2 + (v / rv) ** 2) - 1.0 + 0.15 * bumps
    d = np.maximum(np.abs(w - h) - thickness / 2.0, outline * min(ru, rv))
    np.minimum(out[sl], d.astype(np.float32), out=out[sl])


def halfspace_cut(grid: Grid, normal: np.ndarray, point: np.ndarray, rough: np.ndarray | None = None,
                  roughness: float = 0.0) -> np.ndarray:
    """Boolean mask of the side ``n . (p - point) > 0`` of a (optionally rough) plane."""
    z, y, x = grid.coords()
    n = np.asarray(normal, np.float32)
    s = n[0] * (z - point[0]) + n[1] * (y - point[1]) + n[2] * (x - point[2])
    if rough is not None:
        s = s + roughness * rough
    return np.broadcast_to(s > 0, grid.shape)


def _bbox(mask: np.ndarray, pad: int) -> tuple[slice, ...] | None:
    """Index box of the true voxels of ``mask`` grown by ``pad`` (clipped), or ``None`` if empty."""
    sl = ndimage.find_objects(mask.astype(np.uint8))
    if not sl or sl[0] is None:
        return None
    return tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(sl[0], mask.shape))


def distance_inside(mask: np.ndarray, az: float) -> np.ndarray:
    """Distance (in-plane voxel units) from each true voxel to the nearest false one; 0 outside."""
    out = np.zeros(mask.shape, dtype=np.float32)
    box = _bbox(mask, 1)
    if box is not None:
        out[box] = ndimage.distance_transform_edt(mask[box], sampling=(az, 1.0, 1.0))
    return out


def distance_outside(mask: np.ndarray, az: float, reach: float) -> np.ndarray:
    """Distance from each false voxel to the nearest true one, exact up to ``reach`` (``FAR`` beyond)."""
    out = np.full(mask.shape, FAR, dtype=np.float32)
    box = _bbox(mask, int(np.ceil(reach)) + 1)
    if box is not None:
        out[box] = ndimage.distance_transform_edt(~mask[box], sampling=(az, 1.0, 1.0))
    return out
