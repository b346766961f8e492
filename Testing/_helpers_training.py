"""Tiny labelled specimen folders for the training/evaluation tests (no phantom dependency)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

TINY = dict(arch="unet", arch_options={"encoder": "tu-resnet10t", "encoder_depth": 3, "decoder_channels": 8})


def write_specimen(folder: Path, seed: int, shape=(12, 64, 64), teeth: bool = False,
                   label_spacing: tuple[float, float, float] | None = None) -> Path:
    """A bright disc (bone, +tooth half when ``teeth``) in noisy rock, written as volume.nrrd + labels.nrrd."""
    rng = np.random.default_rng(seed)
    _, j, i = np.mgrid[: shape[0], : shape[1], : shape[2]]
    cy, cx = rng.uniform(22, 42, 2)
    r = rng.uniform(9, 14)
    lab = (((j - cy) ** 2 + (i - cx) ** 2) < r**2).astype(np.uint8)
    lab[:2] = 0
    if teeth:
        lab[(lab == 1) & (i > cx + r / 2)] = 2
    vol = (1000 + 400 * (lab > 0) + rng.normal(0, 60, shape)).astype(np.uint16)
    folder.mkdir(parents=True, exist_ok=True)
    for array, name, spacing in ((vol, "volume.nrrd", (0.5, 0.5, 1.0)), (lab, "labels.nrrd", label_spacing or (0.5, 0.5, 1.0))):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(folder / name), True)
    return folder


def write_dataset(root: Path, n: int = 3, **kw) -> Path:
    for s in range(n):
        write_specimen(root / f"spec{s}", s, **kw)
    return root
