"""Lazy reading (issue 6): memory-mapped / streamed voxels equal SimpleITK's, with the same geometry."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import nrrd
import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

from _helpers_io import OBLIQUE, ORIGIN, SPACING, oblique_volume
from fossilsegment_engine.errors import InputError
from fossilsegment_engine.io import read_volume
from fossilsegment_engine.io.lazy_readers import read_voxels
from fossilsegment_engine.mapped_pages import is_memory_mapped, release_pages
from fossilsegment_engine.io.validate import read_itk_information


def _nrrd_fields(encoding: str) -> dict:
    axes = np.asarray(OBLIQUE).reshape(3, 3) * np.asarray(SPACING)
    return {"encoding": encoding, "space": "left-posterior-superior", "kinds": ["domain"] * 3,
            "space directions": axes.T, "space origin": np.asarray(ORIGIN)}


def _write(kind: str, array: np.ndarray, folder: Path) -> Path:
    """``array`` ([k, j, i]) on the oblique grid in one of the layouts the lazy readers handle."""
    if kind.startswith("nrrd") or kind.startswith("nhdr"):
        encoding = "gzip" if kind.endswith("gz") else "raw"
        path = folder / ("v.nhdr" if kind.startswith("nhdr") else "v.nrrd")
        nrrd.write(str(path), array, _nrrd_fields(encoding), index_order="C", compression_level=1)
        return path
    image = sitk.GetImageFromArray(array.astype(array.dtype.newbyteorder("=")))
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(OBLIQUE)
    path = folder / ("v.mhd" if kind.startswith("mhd") else "v.mha")
    sitk.WriteImage(image, str(path), kind.endswith("gz"))
    return path


CASES = [
    ("nrrd-raw", "<u2"), ("nrrd-raw", ">u2"), ("nrrd-raw", "<f4"), ("nrrd-raw", ">i2"), ("nrrd-raw", "u1"),
    ("nrrd-gz", "<u2"), ("nrrd-gz", ">f4"), ("nhdr-raw", "<i2"), ("nhdr-raw", ">u2"), ("nhdr-gz", "<u2"),
    ("mha-raw", "<u2"), ("mha-raw", "<f4"), ("mha-gz", "<u2"), ("mhd-raw", "<i2"), ("mhd-gz", "<u2"),
]


@pytest.mark.parametrize(("kind", "dtype"), CASES)
def test_lazy_reader_equals_simpleitk(tmp_path: Path, kind: str, dtype: str) -> None:
    array = oblique_volume((7, 9, 11)).array.astype(dtype)
    path = _write(kind, array, tmp_path)
    assert read_voxels(path, read_itk_information(path)) is not None, "the lazy reader must handle this layout"
    reference = sitk.ReadImage(str(path))
    back = read_volume(path)
    expected = sitk.GetArrayFromImage(reference)
    assert back.array.dtype == expected.dtype and back.array.dtype.isnative
    np.testing.assert_array_equal(back.array, expected)
    np.testing.assert_array_equal(back.array, array)
    assert back.spacing == reference.GetSpacing()
    assert back.origin == reference.GetOrigin()
    assert back.direction == reference.GetDirection()
    np.testing.assert_allclose(back.direction, OBLIQUE, atol=1e-12)
    native_raw = kind.endswith("raw") and (array.dtype.isnative or array.dtype.itemsize == 1)
    assert is_memory_mapped(back.array) == native_raw


def test_raw_nrrd_with_byte_skip_at_end(tmp_path: Path) -> None:
    """``byte skip: -1``: the voxels are the file's last bytes (whatever precedes them)."""
    array = oblique_volume((5, 6, 7)).array
    data = tmp_path / "v.raw"
    data.write_bytes(b"junk header of another program" + array.tobytes())
    path = tmp_path / "v.nhdr"
    nrrd.write(str(path), array, _nrrd_fields("raw"), index_order="C", detached_header=True)
    text = path.read_text().replace("data file: v.raw\n", "data file: v.raw\nbyte skip: -1\n")
    path.write_text(text)
    np.testing.assert_array_equal(read_volume(path).array, sitk.GetArrayFromImage(sitk.ReadImage(str(path))))


@pytest.mark.parametrize("kind", ["nrrd-raw", "mha-raw", "nhdr-raw", "nrrd-gz", "mha-gz"])
def test_truncated_data_is_an_input_error(tmp_path: Path, kind: str) -> None:
    array = np.arange(16 * 16 * 16, dtype=np.uint16).reshape(16, 16, 16) % 1000
    path = _write(kind, array, tmp_path)
    data_file = path.with_suffix(".raw") if kind.startswith(("nhdr", "mhd")) else path
    data = data_file.read_bytes()
    data_file.write_bytes(data[: len(data) - 700])
    with pytest.raises(InputError, match=rf"cannot read .*v\.(nrrd|mha|nhdr): .*truncated"):
        read_volume(path)


def test_corrupt_gzip_data_is_an_input_error(tmp_path: Path) -> None:
    path = _write("nrrd-gz", oblique_volume((8, 8, 8)).array, tmp_path)
    data = bytearray(path.read_bytes())
    data[-40:-20] = b"\xff" * 20
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"cannot read .*v\.nrrd: "):
        read_volume(path)


def test_missing_detached_data_file(tmp_path: Path) -> None:
    path = _write("nhdr-raw", oblique_volume((4, 5, 6)).array, tmp_path)
    (tmp_path / "v.raw").unlink()
    with pytest.raises(InputError, match=r"cannot read .*v\.nhdr"):
        read_volume(path)


def test_memory_mapped_input_is_read_only(tmp_path: Path) -> None:
    array = oblique_volume((4, 5, 6)).array
    path = _write("nrrd-raw", array, tmp_path)
    before = path.read_bytes()
    volume = read_volume(path)
    with pytest.raises(ValueError, match="read-only"):
        volume.array[0, 0, 0] += 1
    np.copy(volume.array)[0, 0, 0] += 1  # a copy is writable
    del volume
    gc.collect()
    assert path.read_bytes() == before


def _resident_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                inside = line.rstrip().endswith(str(path))
            elif inside and first == "Rss:":
                total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads /proc/self/smaps (Linux)")
def test_release_pages_hands_back_mapped_slices(tmp_path: Path) -> None:
    array = (np.arange(64 * 512 * 512, dtype=np.uint32) % 3001).astype(np.uint16).reshape(64, 512, 512)  # 32 MiB
    path = _write("nrrd-raw", array, tmp_path)
    volume = read_volume(path)  # validation reads every page, then read_volume releases them
    assert _resident_kib(path) < 1024
    assert int(volume.array.sum(dtype=np.int64)) == int(array.sum(dtype=np.int64))  # maps every page again
    assert _resident_kib(path) > 30 * 1024
    assert release_pages(volume.array, 0, 32)
    assert 15 * 1024 < _resident_kib(path) < 17 * 1024  # half handed back
    np.testing.assert_array_equal(volume.array[:40], array[:40])  # still readable (mapped again)
    assert release_pages(volume.array, 10, -3)  # a negative stop releases nothing (no Python wrap-around)
    assert _resident_kib(path) > 19 * 1024
    assert release_pages(volume.array)
    assert _resident_kib(path) < 1024
    assert not release_pages(np.copy(volume.array[:2]))  # not a mapped array: nothing to do


def test_multipage_tiff_and_npy_are_memory_mapped(tmp_path: Path) -> None:
    array = oblique_volume((6, 8, 10)).array
    tifffile.imwrite(tmp_path / "s.tif", array, photometric="minisblack")
    tifffile.imwrite(tmp_path / "z.tif", array, photometric="minisblack", compression="zlib")
    np.save(tmp_path / "a.npy", array)
    for name, mapped in (("s.tif", True), ("z.tif", False), ("a.npy", True)):
        back = read_volume(tmp_path / name, spacing=(1, 1, 1))
        np.testing.assert_array_equal(back.array, array)
        assert is_memory_mapped(back.array) == mapped, name


def test_simpleitk_formats_hand_over_their_buffer(tmp_path: Path) -> None:
    """NIfTI (and DICOM, PNG) still go through SimpleITK: the array is ITK's buffer, valid and writable."""
    vol = oblique_volume((5, 6, 7))
    image = sitk.GetImageFromArray(vol.array)
    sitk.WriteImage(image, str(tmp_path / "v.nii.gz"))
    back = read_volume(tmp_path / "v.nii.gz")
    gc.collect()
    np.testing.assert_array_equal(back.array, vol.array)
    back.array[0, 0, 0] = 1
    assert back.array[0, 0, 0] == 1 and back.array.flags.writeable


_PEAK_SCRIPT = """
import json, sys
from fossilsegment_engine.io import read_volume
def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key))
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak (VmHWM) to the current resident size: forget the imports' peak
before = status("VmRSS")
volume = read_volume(sys.argv[1])
print(json.dumps({"kib": status("VmHWM") - before, "nbytes": volume.array.nbytes}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="resets and reads the peak in /proc (Linux)")
@pytest.mark.parametrize("kind", ["nrrd-raw", "nrrd-gz"])
def test_reading_needs_one_copy_at_most(tmp_path: Path, kind: str) -> None:
    """Reading and validating a 64 MiB volume raises peak memory by about its size, not twice (SimpleITK's
    read + GetArrayFromImage peaked at 2x)."""
    array = (np.arange(256 * 256 * 512, dtype=np.uint32) % 3001).astype(np.uint16).reshape(512, 256, 256)
    path = _write(kind, array, tmp_path)
    del array
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path)], capture_output=True, text=True, check=True)
    peak = json.loads(out.stdout)
    assert peak["kib"] * 1024 < 1.3 * peak["nbytes"], peak


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads /proc/self/smaps (Linux)")
def test_segmenter_hands_back_input_pages_as_it_goes(tmp_path: Path) -> None:
    """Predicting a memory-mapped volume leaves little of it resident (the Predictor releases finished slices)."""
    import torch

    from fossilsegment_engine.inference.predictor import Predictor
    from fossilsegment_engine.models import ModelConfig

    array = (np.arange(256 * 128 * 256, dtype=np.uint32) % 3001).astype(np.uint16).reshape(256, 128, 256)  # 16 MiB
    path = _write("nrrd-raw", array, tmp_path)
    volume = read_volume(path)
    config = ModelConfig(name="one-by-one", arch="unet",
                         arch_options={"encoder": "tu-resnet10t", "encoder_depth": 3, "decoder_channels": 8}, tile_size=256, tile_overlap=0)
    module = torch.nn.Conv2d(config.in_channels, config.n_classes, 1)  # a trivial "network": fast
    segmenter = Predictor.from_module(module, config, device="cpu", backend="eager", batch_size=16)
    labels = segmenter.predict_labels(volume, postprocess=None)
    assert labels.shape == array.shape
    assert _resident_kib(path) < 1024, "the input's pages should not stay resident"
