"""The real, unlabelled CT scans the speckle report measures: where each comes from and what it holds.

Two sources, both read in place (never copied into the repository):
- ``../shared/data/real``: the paddlefish slice (stacked into a 3-slice volume, issue 14) and the
  trabecular bone TIFF stack (slices 80–119);
- the example volumes inside the ``qim3d`` wheel (MIT licence), read straight out of the wheel (a zip) or
  from a folder of the extracted ``.tif`` files: ``pip download qim3d==1.5.3 --no-deps -d DIR``.
  Nothing in the product depends on qim3d.

``content`` says what a correct bone segmentation holds: ``bone`` (bone present), ``none`` (no bone at
all: every predicted voxel is a false positive) or ``mineral`` (mineralised non-bone, e.g. a shell: a
fossil-bone model may fairly call it hard tissue; reported, not judged). ``proxy`` names the classical
bright-bone proxy of :mod:`bone_proxy` used to check that bone is kept (``None``: no bone to keep).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from fossilsegment_engine.io.volume_io import read_volume
from fossilsegment_engine.volume import Volume

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"

#: qim3d example volumes that are CT of real material: name → (content, proxy, what it shows).
#: qim3d documents none of them beyond the file name (and the shell as a cowry shell in its docs'
#: screenshots); the descriptions are read off the images. Its synthetic ``blobs`` volume is not used.
QIM3D_SCANS: dict[str, tuple[str, str | None, str]] = {
    "bone_128x128x128": ("bone", "phase", "bone: cortex and trabeculae, dark pores"),
    "shell_225x128x128": ("mineral", "phase", "a cowry shell in air"),
    "cement_128x128x128": ("none", None, "cement with round air voids"),
    "fibers_150x150x150": ("none", None, "a fibre composite"),
    "fly_150x256x256": ("none", None, "an insect (blowfly) in air"),
    "NT_128x128x128": ("none", None, "soft tissue with dark rings (not documented by qim3d)"),
}
QIM3D_PREFIX = "qim3d/examples/"


@dataclass(frozen=True)
class RealScan:
    """One real volume to segment: ``slices`` is the axial range measured (None: all)."""

    name: str
    volume: Volume
    slices: tuple[int, int] | None
    content: str
    proxy: str | None
    source: str


def shared_scans(root: Path) -> list[RealScan]:
    """The scans under ``root`` (``../shared/data/real``) that exist."""
    out: list[RealScan] = []
    slice_file = root / "paddlefish_ct_slice" / "slice_u16.npy"
    if slice_file.is_file():
        stack = np.repeat(np.load(slice_file, allow_pickle=False)[None], 3, axis=0)
        out.append(RealScan("paddlefish_3slice", Volume(stack), None, "bone", "thin",
                            "ml4paleo eda/data.bin (Apache-2.0), one slice ×3"))
    tiff_dir = root / "trabecular_bone_tiff_stack"
    if tiff_dir.is_dir():
        out.append(RealScan("trabecular_stack", read_volume(tiff_dir, spacing=(0.06, 0.06, 0.06)), (80, 120), "bone",
                            "phase", "ciclope LHDL 3155_D_4_bc (MIT), slices 80-119"))
    return out


def _qim3d_files(source: Path) -> dict[str, bytes]:
    """{volume name: TIFF bytes} of the known qim3d volumes in a wheel or a folder."""
    if source.is_file():
        try:
            with zipfile.ZipFile(source) as wheel:
                return {Path(n).stem: wheel.read(n) for n in wheel.namelist()
                        if n.startswith(QIM3D_PREFIX) and Path(n).stem in QIM3D_SCANS and n.endswith(".tif")}
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{source}: not a wheel (zip) file: {exc}") from exc
    if source.is_dir():
        found = {p.stem: p for p in [*source.glob("*.tif"), *source.glob(QIM3D_PREFIX + "*.tif")]}
        return {name: path.read_bytes() for name, path in found.items() if name in QIM3D_SCANS}
    raise ValueError(f"{source}: no such wheel or folder")


def qim3d_scans(source: Path) -> list[RealScan]:
    """The real-CT example volumes of the qim3d wheel (or folder of its ``.tif`` files) ``source``."""
    files = _qim3d_files(source)
    if not files:
        raise ValueError(f"{source}: none of the qim3d volumes {sorted(QIM3D_SCANS)}")
    out = []
    for name in sorted(files):
        array = tifffile.imread(io.BytesIO(files[name]))
        if array.ndim != 3:
            raise ValueError(f"{source}: {name} is {array.ndim}D, expected a 3D volume")
        content, proxy, what = QIM3D_SCANS[name]
        sha = hashlib.sha256(files[name]).hexdigest()[:12]
        out.append(RealScan(f"qim3d_{name}", Volume(array), None, content, proxy,
                            f"qim3d {name}.tif (MIT), sha256 {sha}…: {what}"))
    return out
