"""Issue 5: RGB/RGBA and 8-bit slice stacks (photographs of serial grinding) are read as BT.601 luminance."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

from fossilsegment_engine.io import read_volume
from fossilsegment_engine.io.validate import LUMA_WEIGHTS, to_luminance


def _rgb_stack(k: int = 3, h: int = 6, w: int = 7) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (k, h, w, 3), dtype=np.uint8)


def _expected(rgb: np.ndarray) -> np.ndarray:
    lum = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return np.rint(lum).astype(np.uint8)


def test_weights_are_bt601() -> None:
    assert LUMA_WEIGHTS == (0.299, 0.587, 0.114)
    pure = np.zeros((1, 1, 3, 3), dtype=np.uint8)
    pure[0, 0, [0, 1, 2], [0, 1, 2]] = 200  # one pure red, green and blue pixel
    lum, note = to_luminance(pure, "x")
    assert lum.tolist() == [[[60, 117, 23]]] and "BT.601" in note


def test_rgb_tiff_folder(tmp_path: Path, caplog) -> None:
    rgb = _rgb_stack()
    for k in range(rgb.shape[0]):
        tifffile.imwrite(tmp_path / f"s{k}.tif", rgb[k], photometric="rgb")
    with caplog.at_level(logging.WARNING):
        v = read_volume(tmp_path)
    assert v.array.dtype == np.uint8 and np.array_equal(v.array, _expected(rgb))
    assert "BT.601" in v.meta["notes"][0] and v.meta["colour_conversion"]["weights"] == list(LUMA_WEIGHTS)
    assert any("luminance" in r.getMessage() for r in caplog.records)


def test_rgba_png_folder_ignores_alpha(tmp_path: Path) -> None:
    rgb = _rgb_stack()
    alpha = np.random.default_rng(2).integers(0, 256, rgb.shape[:3] + (1,), dtype=np.uint8)
    for k in range(rgb.shape[0]):
        img = sitk.GetImageFromArray(np.concatenate([rgb[k], alpha[k]], axis=-1), isVector=True)
        sitk.WriteImage(img, str(tmp_path / f"p{k}.png"))
    v = read_volume(tmp_path)
    assert np.array_equal(v.array, _expected(rgb)) and "alpha ignored" in v.meta["notes"][0]


def test_rgb_multipage_tiff_nrrd_and_npy(tmp_path: Path) -> None:
    rgb = _rgb_stack()
    tifffile.imwrite(tmp_path / "m.tif", rgb, photometric="rgb")
    assert np.array_equal(read_volume(tmp_path / "m.tif").array, _expected(rgb))
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "c.nrrd"))
    assert np.array_equal(read_volume(tmp_path / "c.nrrd").array, _expected(rgb))
    np.save(tmp_path / "c.npy", rgb)
    assert np.array_equal(read_volume(tmp_path / "c.npy").array, _expected(rgb))


def test_8bit_grey_stack_unchanged(tmp_path: Path) -> None:
    grey = _rgb_stack()[..., 0]
    for k in range(grey.shape[0]):
        sitk.WriteImage(sitk.GetImageFromArray(grey[k]), str(tmp_path / f"g{k}.png"))
    v = read_volume(tmp_path)
    assert v.array.dtype == np.uint8 and np.array_equal(v.array, grey) and "notes" not in v.meta


def test_constant_colour_stack_still_refused(tmp_path: Path) -> None:
    from fossilsegment_engine.errors import InputError

    np.save(tmp_path / "flat.npy", np.full((3, 4, 5, 3), 7, dtype=np.uint8))
    with pytest.raises(InputError, match="constant"):
        read_volume(tmp_path / "flat.npy")
