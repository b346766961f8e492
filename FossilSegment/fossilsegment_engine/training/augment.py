"""CT-appropriate augmentation of training batches (torch, on the batch's device, seeded generator).

Geometry (applied identically to image and labels): flips, 90° rotations, and a random affine
(zoom 0.8–1.25, small rotation, shift) resampled bilinearly (image) / nearest (labels). Training also
zooms in strongly (1.25–4×) on some crops, so that bone several times thicker in voxels than the
training phantoms' (finer scans, larger animals) is still bone to the network.
Intensity (image only, all context channels alike): scale/shift, gamma, Gaussian blur, Gaussian noise,
ring artifacts (concentric rings around a random centre, as from miscalibrated detector elements) and
streaks (bright/dark lines through a point, as from beam hardening / metal).
Field-of-view edge (image and labels): the edge of a reconstruction circle crosses some crops, with a constant
fill outside and a smooth blend towards the fill inside, as real scans have and the phantoms lack; all of it is
matrix, so a bright band along the edge is not taken for bone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentOptions:
    """Probabilities and ranges; ``AugmentOptions(enabled=False)`` turns everything off."""

    enabled: bool = True
    p_flip: float = 0.5
    p_rot90: float = 0.5
    p_affine: float = 0.5
    zoom: tuple[float, float] = (0.8, 1.25)
    p_zoom_in: float = 0.0
    zoom_in: tuple[float, float] = (1.25, 4.0)
    max_rotation_deg: float = 15.0
    p_intensity: float = 0.8
    scale: tuple[float, float] = (0.85, 1.15)
    shift: tuple[float, float] = (-0.08, 0.08)
    gamma: tuple[float, float] = (0.7, 1.5)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.2)
    p_noise: float = 0.4
    noise_sigma: tuple[float, float] = (0.005, 0.04)
    p_rings: float = 0.2
    p_streaks: float = 0.2
    p_fov_edge: float = 0.0


#: share of training crops zoomed in 1.25–4× by the ``full`` and ``light`` presets (0 for ``learn``'s defaults)
TRAINING_ZOOM_IN = 0.3
#: share of training crops crossed by a field-of-view edge in the ``full`` and ``light`` presets
TRAINING_FOV_EDGE = 0.15


def augment_preset(level: str) -> AugmentOptions:
    """``full`` (everything above), ``light`` (geometry + scale/shift/gamma; no blur, noise, rings, streaks:
    faster to learn fine texture from) or ``none``."""
    if level == "full":
        return AugmentOptions(p_zoom_in=TRAINING_ZOOM_IN, p_fov_edge=TRAINING_FOV_EDGE)
    if level == "light":
        return AugmentOptions(p_zoom_in=TRAINING_ZOOM_IN, p_fov_edge=TRAINING_FOV_EDGE, p_blur=0.0, p_noise=0.0,
                              p_rings=0.0, p_streaks=0.0)
    if level == "none":
        return AugmentOptions(enabled=False)
    raise ValueError(f"augmentation level must be full, light or none, got {level!r}")


def _u(gen: torch.Generator, lo: float, hi: float, n: int = 1) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _coin(gen: torch.Generator, p: float) -> bool:
    return bool(torch.rand(1, generator=gen).item() < p)


def augment_batch(
    image: torch.Tensor, labels: torch.Tensor, gen: torch.Generator, opts: AugmentOptions | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment ``image`` (N, C, H, W) float in [0, 1] and ``labels`` (N, H, W) int64; returns new tensors.

    ``gen`` is a CPU ``torch.Generator`` (reproducible draws whatever the device).
    """
    opts = opts or AugmentOptions()
    if not opts.enabled:
        return image, labels
    out_i, out_l = [], []
    for n in range(image.shape[0]):
        x, y = _geometry(image[n], labels[n], gen, opts)
        x = _intensity(x, gen, opts)
        if opts.p_fov_edge > 0 and _coin(gen, opts.p_fov_edge):  # no draw when off: `learn`'s sequence is unchanged
            x, y = field_of_view_edge(x, y, gen)
        out_i.append(x)
        out_l.append(y)
    return torch.stack(out_i), torch.stack(out_l)


def _geometry(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
              o: AugmentOptions) -> tuple[torch.Tensor, torch.Tensor]:
    if _coin(gen, o.p_flip):
        x, y = x.flip(-1), y.flip(-1)
    if _coin(gen, o.p_flip):
        x, y = x.flip(-2), y.flip(-2)
    if _coin(gen, o.p_rot90) and x.shape[-1] == x.shape[-2]:
        k = int(torch.randint(1, 4, (1,), generator=gen).item())
        x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
    zoom_in = o.p_zoom_in > 0 and _coin(gen, o.p_zoom_in)  # no draw when off: `learn`'s sequence is unchanged
    if zoom_in or _coin(gen, o.p_affine):
        lo, hi = o.zoom_in if zoom_in else o.zoom
        zoom = math.exp(_u(gen, math.log(lo), math.log(hi)).item())
        angle = math.radians(_u(gen, -o.max_rotation_deg, o.max_rotation_deg).item())
        tx, ty = _u(gen, -0.1, 0.1, 2).tolist()
        c, s = math.cos(angle) / zoom, math.sin(angle) / zoom
        theta = torch.tensor([[c, -s, tx], [s, c, ty]], dtype=torch.float32, device=x.device)[None]
        grid = F.affine_grid(theta, [1, 1, *x.shape[-2:]], align_corners=False)
        x = F.grid_sample(x[None].float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]
        y = F.grid_sample(y[None, None].float(), grid, mode="nearest", padding_mode="reflection",
                          align_corners=False)[0, 0].round().long()
    return x.contiguous(), y.contiguous()


def _intensity(x: torch.Tensor, gen: torch.Generator, o: AugmentOptions) -> torch.Tensor:
    h, w = x.shape[-2:]
    if _coin(gen, o.p_intensity):
        x = x * _u(gen, *o.scale).item() + _u(gen, *o.shift).item()
        x = x.clamp(0.0, 1.0) ** _u(gen, *o.gamma).item()
    if _coin(gen, o.p_blur):
        x = gaussian_blur(x, _u(gen, *o.blur_sigma).item())
    if _coin(gen, o.p_rings):
        x = x + ring_artifacts(h, w, gen, x.device)
    if _coin(gen, o.p_streaks):
        x = x + streak_artifacts(h, w, gen, x.device)
    if _coin(gen, o.p_noise):
        sigma = _u(gen, *o.noise_sigma).item()
        x = x + sigma * torch.randn(x.shape, generator=gen).to(x.device)
    return x.clamp(0.0, 1.0)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (C, H, W) with reflect padding."""
    radius = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[0]
    xx = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    xx = F.conv2d(xx, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    xx = F.conv2d(xx, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return xx[0]


def _distance_from(cy: float, cx: float, h: int, w: int, device: torch.device) -> torch.Tensor:
    """(H, W) distance of each pixel from the point (cy, cx)."""
    yy = torch.arange(h, dtype=torch.float32, device=device)[:, None] - cy
    xx = torch.arange(w, dtype=torch.float32, device=device)[None, :] - cx
    return torch.sqrt(yy**2 + xx**2)


def _centre_and_radius(h: int, w: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    cy, cx = _u(gen, -0.25 * h, 1.25 * h).item(), _u(gen, -0.25 * w, 1.25 * w).item()
    return _distance_from(cy, cx, h, w, device)


def ring_artifacts(h: int, w: int, gen: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W) additive pattern: 2–8 thin rings (±0.03–0.12) around one random centre."""
    r = _centre_and_radius(h, w, gen, torch.device(device))
    out = torch.zeros(h, w, device=device)
    n = int(torch.randint(2, 9, (1,), generator=gen).item())
    for _ in range(n):
        radius = _u(gen, 2.0, float(max(h, w))).item()
        width = _u(gen, 0.6, 2.0).item()
        amp = _u(gen, 0.03, 0.12).item() * (1 if _coin(gen, 0.5) else -1)
        out += amp * torch.exp(-0.5 * ((r - radius) / width) ** 2)
    return out


def streak_artifacts(h: int, w: int, gen: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W) additive pattern: 1–4 straight streaks (±0.03–0.15, fading along the line) through a point."""
    out = torch.zeros(h, w, device=device)
    yy = torch.arange(h, dtype=torch.float32, device=device)[:, None]
    xx = torch.arange(w, dtype=torch.float32, device=device)[None, :]
    py, px = _u(gen, 0, h).item(), _u(gen, 0, w).item()
    n = int(torch.randint(1, 5, (1,), generator=gen).item())
    for _ in range(n):
        a = _u(gen, 0.0, math.pi).item()
        dist = torch.abs((yy - py) * math.cos(a) - (xx - px) * math.sin(a))
        along = torch.abs((yy - py) * math.sin(a) + (xx - px) * math.cos(a))
        width = _u(gen, 0.7, 3.0).item()
        amp = _u(gen, 0.03, 0.15).item() * (1 if _coin(gen, 0.5) else -1)
        out += amp * torch.exp(-0.5 * (dist / width) ** 2) * torch.exp(-along / max(h, w))
    return out


def field_of_view_edge(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, H, W) image and (H, W) labels crossed by the edge of a reconstruction circle (radius 0.5–4 crops).

    Outside: one constant fill for all channels (black, white or grey, as reconstructions write it). Inside: a
    blend towards the fill that fades over 1–40 px (the brightening or darkening at a real scan's edge). Labels
    outside, and where the blend hides more than half of the image, become matrix.
    """
    h, w = x.shape[-2:]
    radius = _u(gen, 0.5, 4.0).item() * max(h, w)
    angle = _u(gen, 0.0, 2 * math.pi).item()
    py, px = _u(gen, 0.0, h).item(), _u(gen, 0.0, w).item()  # a point on the edge, inside the crop
    cy, cx = py - radius * math.sin(angle), px - radius * math.cos(angle)
    depth = radius - _distance_from(cy, cx, h, w, x.device)  # px inside the circle; negative outside
    kind = torch.rand(1, generator=gen).item()
    fill = 0.0 if kind < 0.35 else 1.0 if kind < 0.7 else _u(gen, 0.0, 1.0).item()
    width = math.exp(_u(gen, 0.0, math.log(40.0)).item())
    blend = _u(gen, 0.3, 1.0).item() * torch.exp(-depth.clamp(min=0.0) / width)
    blend = blend.masked_fill(depth < 0, 1.0)
    x = x + (fill - x) * blend
    y = y.masked_fill(blend > 0.5, 0)
    return x.clamp(0.0, 1.0), y
