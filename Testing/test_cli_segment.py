"""``fossilsegment segment`` end to end, and its handling of bad input (exit code 2, nothing written)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fossilsegment_engine.cli import main


def _write(array: np.ndarray, path: Path, spacing=(0.5, 0.6, 0.7), origin=(1.0, -2.0, 3.0), direction=None) -> Path:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    sitk.WriteImage(img, str(path))
    return path


def _scan(shape=(12, 40, 48), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k, j, i = np.indices(shape)
    ball = (k - shape[0] / 2) ** 2 / 25 + (j - 20) ** 2 / 150 + (i - 24) ** 2 / 200 < 1
    return (1000 + 800 * ball + rng.normal(0, 30, shape)).astype(np.uint16)


OBLIQUE = tuple(sitk.VersorTransform((0.3, -0.2, 0.9), 0.7).GetMatrix())


def test_segment_writes_labelmap_with_exact_geometry(tmp_path: Path, tiny_model_dir: Path) -> None:
    src = _write(_scan(), tmp_path / "scan.nrrd", direction=OBLIQUE)
    out_lm, out_seg = tmp_path / "lm.nrrd", tmp_path / "out.seg.nrrd"
    rc = main(["segment", str(src), "--model", str(tiny_model_dir), "--labelmap", str(out_lm), "-o", str(out_seg),
               "--device", "cpu"])
    assert rc == 0
    image, labels = sitk.ReadImage(str(src)), sitk.ReadImage(str(out_lm))
    assert labels.GetSize() == image.GetSize()
    # NRRD stores spacing×direction products, so a re-read can differ in the last bit (1e-16 relative)
    np.testing.assert_allclose(labels.GetSpacing(), image.GetSpacing(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(labels.GetOrigin(), image.GetOrigin(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(labels.GetDirection(), image.GetDirection(), rtol=0, atol=1e-12)
    assert labels.GetPixelID() == sitk.sitkUInt8
    assert out_seg.is_file()
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_segment_refuses_existing_output_without_force(tmp_path: Path, tiny_model_dir: Path) -> None:
    src = _write(_scan(), tmp_path / "scan.nrrd")
    out = tmp_path / "lm.nrrd"
    out.write_bytes(b"precious")
    assert main(["segment", str(src), "--model", str(tiny_model_dir), "--labelmap", str(out)]) == 2
    assert out.read_bytes() == b"precious"
    assert main(["segment", str(src), "--model", str(tiny_model_dir), "--labelmap", str(out), "--force"]) == 0
    assert sitk.ReadImage(str(out)).GetSize() == (48, 40, 12)


def _bad_inputs(tmp: Path) -> dict[str, Path]:
    tmp.mkdir()
    good = _write(_scan(), tmp / "good.nrrd")
    truncated = tmp / "truncated.nrrd"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    corrupt_tiff = tmp / "corrupt.tif"
    corrupt_tiff.write_bytes(b"II*\x00" + b"\x13" * 200)
    nan = _scan().astype(np.float32)
    nan[3, 5, 5] = np.nan
    inf = _scan().astype(np.float32)
    inf[1, 1, 1] = np.inf
    mixed = tmp / "mixed_sizes"
    mixed.mkdir()
    for n, size in enumerate([(30, 30), (30, 30), (31, 30)]):
        sitk.WriteImage(sitk.GetImageFromArray(np.full(size, n * 50 + 10, np.uint16)), str(mixed / f"s{n}.tif"))
    empty_dir = tmp / "empty_folder"
    empty_dir.mkdir()
    vector = sitk.Compose([sitk.GetImageFromArray(_scan().astype(np.uint8))] * 2)  # RGB is accepted (issue 5)
    sitk.WriteImage(vector, str(tmp / "vector.nrrd"))
    four_d = sitk.JoinSeries([sitk.GetImageFromArray(_scan())] * 2)
    sitk.WriteImage(four_d, str(tmp / "four_d.nrrd"))
    return {
        "missing": tmp / "does_not_exist.nrrd",
        "truncated nrrd": truncated,
        "corrupt tiff": corrupt_tiff,
        "2D image": _write(_scan()[0], tmp / "flat.nrrd", spacing=(1, 1), origin=(0, 0)),
        "4D image": tmp / "four_d.nrrd",
        "vector image": tmp / "vector.nrrd",
        "NaN": _write(nan, tmp / "nan.nrrd"),
        "Inf": _write(inf, tmp / "inf.nrrd"),
        "constant": _write(np.full((8, 16, 16), 7, np.uint16), tmp / "constant.nrrd"),
        "empty folder": empty_dir,
        "mixed slice sizes": mixed,
    }


BAD = ["missing", "truncated nrrd", "corrupt tiff", "2D image", "4D image", "vector image", "NaN", "Inf", "constant",
       "empty folder", "mixed slice sizes"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_clear_error_and_nothing_written(case: str, tmp_path: Path, tiny_model_dir: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    inputs = _bad_inputs(tmp_path / "in")
    out = tmp_path / "out"
    rc = main(["segment", str(inputs[case]), "--model", str(tiny_model_dir), "--labelmap", str(out / "lm.nrrd"),
               "-o", str(out / "s.seg.nrrd"), "--stl", str(out / "stl")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("error:") == 1 and len(err.strip().splitlines()) == 1, err
    assert not out.exists() or not any(out.iterdir())


def test_unknown_model_and_broken_model_folder(tmp_path: Path, tiny_model_dir: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    src = _write(_scan(), tmp_path / "scan.nrrd")
    out = tmp_path / "lm.nrrd"
    assert main(["segment", str(src), "--model", "no-such-model", "--labelmap", str(out)]) == 2
    assert "no-such-model" in capsys.readouterr().err
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_bytes((tiny_model_dir / "config.json").read_bytes())
    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    assert main(["segment", str(src), "--model", str(broken), "--labelmap", str(out)]) == 2
    assert "model.safetensors" in capsys.readouterr().err
    (broken / "model.safetensors").unlink()
    assert main(["segment", str(src), "--model", str(broken), "--labelmap", str(out)]) == 2
    assert not out.exists()


def test_slices_option_validated(tmp_path: Path, tiny_model_dir: Path) -> None:
    src = _write(_scan(), tmp_path / "scan.nrrd")
    out = tmp_path / "lm.nrrd"
    assert main(["segment", str(src), "--model", str(tiny_model_dir), "--labelmap", str(out), "--slices", "5:2"]) == 2
    assert main(["segment", str(src), "--model", str(tiny_model_dir), "--labelmap", str(out), "--slices", "0:99"]) == 2
    assert not out.exists()


@pytest.mark.parametrize("name, stem", [("skull_01.nii.gz", "skull_01"), ("a.b.nrrd", "a.b"), ("x.seg.nrrd", "x"),
                                        ("s.NHDR", "s"), ("stack.tif", "stack"), ("v.npy", "v"), ("odd.xyz", "odd.xyz"),
                                        (".npy", ".npy")])
def test_default_output_and_batch_folders_strip_the_same_endings(name: str, stem: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from fossilsegment_engine.batch.layout import scan_names
    from fossilsegment_engine.cli.segment_cmd import default_output
    from fossilsegment_engine.io.volume_io import READ_SUFFIXES

    monkeypatch.chdir(tmp_path)
    assert default_output(Path("/data") / name) == tmp_path / f"{stem}.seg.nrrd"
    assert scan_names([Path("/data") / name]) == [stem]
    assert {".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd", ".tif", ".tiff", ".npy"} == set(READ_SUFFIXES)
