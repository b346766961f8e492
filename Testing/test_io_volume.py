"""Volume reading/writing keeps voxels, dtype and geometry for every supported format."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

from _helpers_io import OBLIQUE, ORIGIN, SPACING, oblique_volume, write_dicom_series
from fossilsegment_engine.io import read_volume, write_volume
from fossilsegment_engine.io.tiff_stack import natural_key

from conftest import SHARED_DATA

REAL_STACK = SHARED_DATA / "real" / "trabecular_bone_tiff_stack"


@pytest.mark.parametrize(("ext", "fmt", "tol"), [(".nrrd", "nrrd", 1e-12), (".mha", "metaimage", 0), (".nii.gz", "nifti", 1e-6), (".nii", "nifti", 1e-6)])
def test_round_trip_keeps_geometry(tmp_path: Path, ext: str, fmt: str, tol: float) -> None:
    vol = oblique_volume()
    path = write_volume(vol, tmp_path / f"v{ext}")
    back = read_volume(path)
    assert back.array.dtype == np.uint16
    np.testing.assert_array_equal(back.array, vol.array)
    # NRRD stores spacing x direction (1 ulp off when split again); NIfTI stores float32: exact to that.
    np.testing.assert_allclose(back.spacing, SPACING, rtol=0, atol=tol)
    np.testing.assert_allclose(back.origin, ORIGIN, rtol=0, atol=tol * 100)
    np.testing.assert_allclose(back.direction, OBLIQUE, rtol=0, atol=tol)
    assert back.meta == {"source_path": str(path), "source_format": fmt}


def test_write_refuses_existing_output_unless_forced(tmp_path: Path) -> None:
    from fossilsegment_engine.errors import OutputError

    path = tmp_path / "v.nrrd"
    path.write_bytes(b"precious")
    with pytest.raises(OutputError, match="exists"):
        write_volume(oblique_volume(), path)
    assert path.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.nrrd"]  # no temporary left behind
    write_volume(oblique_volume(), path, force=True)
    assert read_volume(path).shape == (8, 9, 10)


def test_dicom_series_geometry_and_largest_series(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    vol = oblique_volume((6, 12, 10), dtype=np.uint16)
    write_dicom_series(vol, tmp_path / "dcm", "1.2.826.0.1.3680043.2.1125.77.1")
    write_dicom_series(oblique_volume((3, 12, 10), seed=1), tmp_path / "dcm", "1.2.826.0.1.3680043.2.1125.77.2")
    with caplog.at_level(logging.WARNING):
        back = read_volume(tmp_path / "dcm")
    assert "2 DICOM series" in caplog.text
    assert back.meta["source_format"] == "dicom"
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.spacing, SPACING, atol=1e-4)
    np.testing.assert_allclose(back.origin, ORIGIN, atol=1e-4)
    np.testing.assert_allclose(back.direction, OBLIQUE, atol=1e-4)


def test_natural_key_orders_numbers_numerically() -> None:
    assert sorted(["s10.png", "s2.png", "s1.png"], key=natural_key) == ["s1.png", "s2.png", "s10.png"]


def _slices(n: int = 12) -> np.ndarray:
    """Slice k is filled with k*10 plus a gradient, so the stacking order is checkable."""
    base = np.add.outer(np.arange(7), np.arange(9)).astype(np.uint16)
    return np.stack([base + 10 * k for k in range(n)])


@pytest.mark.parametrize("kind", ["png", "tif"])
def test_slice_folder_natural_order_and_spacing_argument(tmp_path: Path, kind: str) -> None:
    stack = _slices()
    for k, sl in enumerate(stack):  # plain sort would put slice10 before slice2
        path = tmp_path / f"slice{k}.{kind}"
        sitk.WriteImage(sitk.GetImageFromArray(sl), str(path)) if kind == "png" else tifffile.imwrite(path, sl)
    (tmp_path / "README.txt").write_text("not an image")
    back = read_volume(tmp_path, spacing=(0.02, 0.03, 0.05))
    np.testing.assert_array_equal(back.array, stack)
    assert back.array.dtype == np.uint16
    assert back.spacing == (0.02, 0.03, 0.05)
    assert back.meta["source_format"] == ("png-slices" if kind == "png" else "tiff-slices")


def test_tiff_resolution_metadata_gives_spacing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for k, sl in enumerate(_slices(4)):  # 100 pixels per cm = 0.1 mm; no slice step: isotropic assumed
        tifffile.imwrite(tmp_path / f"s_{k}.tif", sl, resolution=(100, 100), resolutionunit="CENTIMETER")
    with caplog.at_level(logging.WARNING):
        back = read_volume(tmp_path)
    np.testing.assert_allclose(back.spacing, (0.1, 0.1, 0.1))
    assert "isotropic" in caplog.text


def test_multipage_imagej_tiff_spacing(tmp_path: Path) -> None:
    stack = _slices(5)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, imagej=True, resolution=(1 / 5.0, 1 / 4.0), metadata={"spacing": 10.0, "unit": "micron"})
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, stack)
    np.testing.assert_allclose(back.spacing, (0.005, 0.004, 0.01))
    assert back.meta["source_format"] == "tiff-multipage"
    assert read_volume(path, spacing=(1, 2, 3)).spacing == (1.0, 2.0, 3.0)  # the argument wins


def test_npy_volume(tmp_path: Path) -> None:
    array = np.random.default_rng(3).random((5, 6, 7)).astype(np.float32)
    np.save(tmp_path / "a.npy", array)
    back = read_volume(tmp_path / "a.npy", spacing=(0.5, 0.5, 2.0))
    np.testing.assert_array_equal(back.array, array)
    assert back.spacing == (0.5, 0.5, 2.0) and back.origin == (0.0, 0.0, 0.0)


@pytest.mark.skipif(not REAL_STACK.is_dir(), reason="real micro-CT stack not present")
def test_real_micro_ct_stack() -> None:
    vol = read_volume(REAL_STACK)
    assert vol.shape == (200, 200, 200)
    assert vol.array.dtype == np.uint8
    first = tifffile.imread(REAL_STACK / "3155_D_4_bc_0000.tif")
    last = tifffile.imread(REAL_STACK / "3155_D_4_bc_0199.tif")
    np.testing.assert_array_equal(vol.array[0], first)
    np.testing.assert_array_equal(vol.array[-1], last)


def test_dicom_file_path_reads_its_series(tmp_path: Path) -> None:
    vol = oblique_volume((4, 6, 5))
    write_dicom_series(vol, tmp_path, "1.2.826.0.1.3680043.2.1125.78.1")
    one_file = sorted(tmp_path.iterdir())[0].rename(tmp_path / "first.dcm")
    back = read_volume(one_file)
    np.testing.assert_array_equal(back.array, vol.array)


def test_spacing_argument_overrides_stored_spacing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_volume(oblique_volume(), tmp_path / "v.nrrd")
    with caplog.at_level(logging.WARNING):
        back = read_volume(path, spacing=(1, 1, 2))
    assert back.spacing == (1.0, 1.0, 2.0) and back.origin == ORIGIN
    assert "overriding" in caplog.text


def test_labelmap_without_geometry_takes_the_reference_geometry(tmp_path: Path) -> None:
    from fossilsegment_engine.io import read_labelmap

    vol = oblique_volume()
    np.save(tmp_path / "labels.npy", (vol.array > 2000).astype(np.int64))
    labels = read_labelmap(tmp_path / "labels.npy", like=vol)
    assert labels.same_geometry(vol)
    np.testing.assert_array_equal(labels.array, vol.array > 2000)
    empty = write_volume(vol.with_array(np.zeros(vol.shape, np.uint8)), tmp_path / "empty.nrrd")
    assert read_labelmap(empty, like=vol).array.max() == 0  # an all-background labelmap is valid
