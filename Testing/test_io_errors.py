"""Every bad input gives an InputError whose message names the problem and the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

from _helpers_io import oblique_volume
from fossilsegment_engine.errors import InputError
from fossilsegment_engine.io import read_labelmap, read_volume, write_volume
from fossilsegment_engine.volume import Volume


def _write_itk(array: np.ndarray, path: Path, is_vector: bool = False) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=is_vector), str(path), True)
    return path


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found: .*nothing.nrrd"):
        read_volume(tmp_path / "nothing.nrrd")


def test_truncated_nrrd(tmp_path: Path) -> None:
    path = write_volume(oblique_volume((16, 16, 16)), tmp_path / "v.nrrd")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cannot read .*v\.nrrd: "):
        read_volume(path)


def test_corrupt_and_truncated_tiff(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"this is not a TIFF file at all" * 10)
    with pytest.raises(InputError, match=r"cannot read .*bad\.tif"):
        read_volume(bad)
    cut = tmp_path / "cut.tif"
    tifffile.imwrite(cut, np.arange(4 * 32 * 32, dtype=np.uint16).reshape(4, 32, 32), photometric="minisblack")
    data = cut.read_bytes()
    for keep in (200, len(data) * 6 // 10):
        cut.write_bytes(data[:keep])
        with pytest.raises(InputError, match=r"cannot read .*cut\.tif"):
            read_volume(cut)


def test_2d_image(tmp_path: Path) -> None:
    path = _write_itk(np.arange(64, dtype=np.uint8).reshape(8, 8), tmp_path / "flat.png")
    with pytest.raises(InputError, match=r"flat\.png is 2D .*need a 3D volume"):
        read_volume(path)
    np.save(tmp_path / "flat.npy", np.arange(64.0).reshape(8, 8))
    with pytest.raises(InputError, match="is 2D"):
        read_volume(tmp_path / "flat.npy")


def test_single_slice_volume_is_2d(tmp_path: Path) -> None:
    path = _write_itk(np.arange(64, dtype=np.uint8).reshape(1, 8, 8), tmp_path / "one.nrrd")
    with pytest.raises(InputError, match="is 2D"):
        read_volume(path)


def test_4d_image(tmp_path: Path) -> None:
    path = _write_itk(np.arange(3 * 4 * 5 * 6, dtype=np.int16).reshape(3, 4, 5, 6), tmp_path / "t.nrrd")
    with pytest.raises(InputError, match=r"t\.nrrd is 4D"):
        read_volume(path)


def test_rgb_is_accepted_but_vector_images_and_rgb_labelmaps_are_not(tmp_path: Path) -> None:
    """Issue 5: RGB volumes become luminance (tested in test_io_colour.py); vectors are still refused."""
    rgb = _write_itk(np.arange(4 * 5 * 6 * 3, dtype=np.uint8).reshape(4, 5, 6, 3), tmp_path / "rgb.nrrd", True)
    assert read_volume(rgb).shape == (4, 5, 6)
    with pytest.raises(InputError, match=r"labelmap .*rgb\.nrrd has RGB/RGBA pixels"):
        read_labelmap(rgb)
    vec = _write_itk(np.zeros((4, 5, 6, 2), dtype=np.float32), tmp_path / "vec.mha", True)
    with pytest.raises(InputError, match="2 components per voxel"):
        read_volume(vec)
    folder = tmp_path / "rgb_slices"
    folder.mkdir()
    tifffile.imwrite(folder / "s0.tif", np.full((6, 7, 3), 9, dtype=np.uint8), photometric="rgb")
    with pytest.raises(InputError, match=r"single slice"):
        read_volume(folder)


def test_nan_and_inf(tmp_path: Path) -> None:
    array = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    array[1, 2, 3] = np.nan
    array[4, 0, 0] = np.inf
    path = _write_itk(array, tmp_path / "nan.nrrd")
    with pytest.raises(InputError, match=r"nan\.nrrd has 2 non-finite voxel"):
        read_volume(path)


def test_empty_and_constant(tmp_path: Path) -> None:
    np.save(tmp_path / "empty.npy", np.zeros((0, 5, 5), dtype=np.uint8))
    with pytest.raises(InputError, match=r"empty\.npy is empty"):
        read_volume(tmp_path / "empty.npy")
    path = _write_itk(np.full((4, 5, 6), 7, dtype=np.uint16), tmp_path / "const.nrrd")
    with pytest.raises(InputError, match=r"const\.nrrd is constant \(every voxel is 7\)"):
        read_volume(path)


def test_mixed_slice_sizes_names_first_odd_file(tmp_path: Path) -> None:
    for k in range(12):
        shape = (9, 9) if k in (3, 11) else (8, 8)
        tifffile.imwrite(tmp_path / f"img{k}.tif", np.full(shape, k, dtype=np.uint8))
    with pytest.raises(InputError, match=r"slice .*img3\.tif differs from the first slice img0\.tif"):
        read_volume(tmp_path)


def test_mixed_slice_types(tmp_path: Path) -> None:
    for k in range(3):
        tifffile.imwrite(tmp_path / f"img{k}.tif", np.full((8, 8), k, dtype=np.uint16 if k == 2 else np.uint8))
    with pytest.raises(InputError, match=r"img2\.tif differs"):
        read_volume(tmp_path)


def test_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM series and no TIFF/PNG slices"):
        read_volume(tmp_path)


def test_labelmap_geometry_mismatch_and_type(tmp_path: Path) -> None:
    vol = oblique_volume()
    labels = vol.with_array((vol.array > 2000).astype(np.uint8))
    path = write_volume(labels, tmp_path / "labels.nrrd")
    assert np.array_equal(read_labelmap(path, like=vol).array, labels.array)
    shifted = Volume(vol.array, vol.spacing, (vol.origin[0] + 0.01, *vol.origin[1:]), vol.direction)
    with pytest.raises(InputError, match=r"labels\.nrrd does not match .*labelmap .*origin \(-12\.5,.*volume .*origin \(-12\.49,"):
        read_labelmap(path, like=shifted)
    floats = write_volume(vol.with_array(vol.array.astype(np.float32) + 0.5), tmp_path / "f.nrrd")
    with pytest.raises(InputError, match="not whole non-negative numbers"):
        read_labelmap(floats)
