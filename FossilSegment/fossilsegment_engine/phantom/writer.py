"""``write()``: a phantom as ``volume.nrrd`` + ``labels.nrrd`` + ``phantom.json`` in one folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import check_can_write
from ..errors import OutputError
from ..volume import Volume
from .generator import generate

if TYPE_CHECKING:
    import SimpleITK as sitk

OUTPUT_FILES = ("volume.nrrd", "labels.nrrd", "phantom.json")


def _to_image(volume: Volume) -> sitk.Image:
    import SimpleITK as sitk  # here, not at the top: generate() must work where SimpleITK is absent

    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(volume.direction)
    return image


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def write(outdir: Path | str, seed: int, size: str = "small", family: str | None = None, teeth: bool = True,
          force: bool = False) -> dict:
    """Generate a phantom and write its three files into ``outdir``; returns the info dict.

    Existing files are refused without ``force`` before anything is computed. The files are
    written into a temporary folder inside ``outdir`` and then renamed into place.
    """
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"output folder is a file: {outdir}")
    targets = [outdir / name for name in OUTPUT_FILES]
    for target in targets:
        check_can_write(target, force)
    volume, labels, info = generate(seed, size=size, family=family, teeth=teeth)
    info = _jsonable(info)
    info["files"] = list(OUTPUT_FILES)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".phantom.", suffix=".tmp", dir=outdir))
    except OSError as exc:
        raise OutputError(f"cannot create output folder {outdir}: {exc}") from exc
    import SimpleITK as sitk

    try:
        sitk.WriteImage(_to_image(volume), str(tmp / OUTPUT_FILES[0]), True)
        sitk.WriteImage(_to_image(labels), str(tmp / OUTPUT_FILES[1]), True)
        (tmp / OUTPUT_FILES[2]).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        for target in targets:
            check_can_write(target, force)  # appeared meanwhile?
        for name, target in zip(OUTPUT_FILES, targets):
            os.replace(tmp / name, target)
    except (OSError, RuntimeError) as exc:
        raise OutputError(f"cannot write phantom into {outdir}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info
