"""Issue 13: ``fossilsegment learn`` end to end (tiny model, tiny scan) and each bad input (exit 2, nothing written)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fossilsegment_engine.cli import main
from fossilsegment_engine.errors import InputError
from fossilsegment_engine.finetune import Annotation
from fossilsegment_engine.finetune.learn import LearnOptions, learn_and_segment
from fossilsegment_engine.io import write_volume
from fossilsegment_engine.io.segmentation_io import read_seg_nrrd
from fossilsegment_engine.io.volume_io import read_labelmap
from fossilsegment_engine.volume import Volume

SHAPE = (12, 64, 48)  # k, j, i


def scan() -> tuple[Volume, Volume]:
    """A bright ellipsoid ('bone', label 1) in noisy matrix, with an oblique direction, and its truth."""
    rng = np.random.default_rng(1)
    k, j, i = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    truth = (((k - 6) / 5.0) ** 2 + ((j - 30) / 18.0) ** 2 + ((i - 24) / 14.0) ** 2 < 1).astype(np.uint8)
    ct = (rng.normal(1000, 100, SHAPE) + 1500.0 * truth).astype(np.int16)
    c, s = np.cos(0.3), np.sin(0.3)
    vol = Volume(ct, (0.5, 0.6, 1.2), (3.0, -2.0, 1.0), (c, -s, 0, s, c, 0, 0, 0, 1))
    return vol, vol.with_array(truth)


@pytest.fixture()
def files(tmp_path, tiny_model_dir):
    """(folder, base command) with the scan and its labels written as NRRD."""
    vol, lab = scan()
    write_volume(vol, tmp_path / "v.nrrd")
    write_volume(lab, tmp_path / "l.nrrd")
    base = ["learn", str(tmp_path / "v.nrrd"), str(tmp_path / "l.nrrd"), "--model", str(tiny_model_dir),
            "--device", "cpu", "--max-minutes", "0.05"]
    return tmp_path, base


def test_learn_writes_whole_segmentation(files, capsys):
    folder, base = files
    vol, truth = scan()
    out, seg = folder / "out.nrrd", folder / "out.seg.nrrd"
    assert main(base + ["--slices", "k3,k8,j30,i24", "--labelmap", str(out), "-o", str(seg)]) == 0
    assert "learned from 4 corrected slice(s): k3,k8,j30,i24" in capsys.readouterr().out
    lab = read_labelmap(out)
    assert lab.same_geometry(vol) and lab.array.dtype == np.uint8
    for index in (np.s_[3], np.s_[8], np.s_[:, 30], np.s_[:, :, 24]):  # corrected slices copied unchanged
        np.testing.assert_array_equal(lab.array[index], truth.array[index])
    seg_lab, _ = read_seg_nrrd(seg)
    np.testing.assert_array_equal(seg_lab.array, lab.array)
    prov = seg_lab.meta["provenance"]
    assert prov["parameters"]["annotated_slices"] == ["k3", "k8", "j30", "i24"] and prov["corrected_slices"] == [3, 8]
    assert main(base + ["--slices", "k3", "--labelmap", str(out)]) == 2  # exists, no --force
    assert "output exists" in capsys.readouterr().err
    assert main(base + ["--slices", "j30", "--labelmap", str(out), "--force"]) == 0
    np.testing.assert_array_equal(read_labelmap(out).array[:, 30], truth.array[:, 30])


@pytest.mark.slow
def test_learn_save_model(files, capsys):
    folder, base = files
    out, model = folder / "out.nrrd", folder / "adapted"
    assert main(base + ["--slices", "k4,k7,i20", "--labelmap", str(out), "--save-model", str(model)]) == 0
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["name"] == "adapted" and cfg["provenance"]["finetune"]["slices"] == [4, 7]
    assert f"wrote {model}" in capsys.readouterr().out
    assert main(["segment", str(folder / "v.nrrd"), "--model", str(model), "--device", "cpu",
                 "--labelmap", str(folder / "again.nrrd")]) == 0  # reusable by segment --model


def _written(folder) -> set[str]:
    return {p.name for p in folder.iterdir()} - {"v.nrrd", "l.nrrd", "other.nrrd"}


@pytest.mark.parametrize("extra, match", [
    (["--slices", "k0,k11,j0,i0"], "contain no foreground"),
    (["--slices", "k3,j64"], "slice j64 is outside the volume: its j slices are 0..63"),
    (["--slices", "k3,k12"], "slice k12 is outside the volume: its k slices are 0..11"),
    (["--slices", "k3", "--max-minutes", "0"], "a budget of 0 minutes"),
    (["--slices", "k3,x4"], "e.g. 10,80,150"),
    (["--slices", "j30,i24", "--save-model", "m"], "--save-model fine-tunes on corrected axial slices"),
    (["--slices", "k0,j30", "--save-model", "m"], "contain no foreground"),
])
def test_learn_bad_input_writes_nothing(files, capsys, extra, match):
    folder, base = files
    base = [a if a != "m" else str(folder / "m") for a in base]
    extra = [a if a != "m" else str(folder / "m") for a in extra]
    assert main(base + extra + ["--labelmap", str(folder / "out.nrrd"), "-o", str(folder / "out.seg.nrrd")]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    assert _written(folder) == set()


def test_learn_label_file_of_another_geometry(files, capsys):
    folder, base = files
    _, lab = scan()
    write_volume(Volume(lab.array, (0.5, 0.6, 2.0)), folder / "other.nrrd")
    base[2] = str(folder / "other.nrrd")
    assert main(base + ["--slices", "k3", "--labelmap", str(folder / "out.nrrd")]) == 2
    assert "geometry" in capsys.readouterr().err and _written(folder) == set()


def test_learn_needs_an_output(files, capsys):
    folder, base = files
    assert main(base + ["--slices", "k3"]) == 2
    assert "give --labelmap OUT.nrrd and/or -o OUT.seg.nrrd" in capsys.readouterr().err


def test_learn_crossing_disagreement_python_api(tiny_model_dir):
    """One labelmap cannot disagree with itself: crossing slices that disagree come through the Python API."""
    vol, truth = scan()
    k6, j30 = truth.array[6].copy(), truth.array[:, 30].copy()
    j30[6, 10:14] = 1 - j30[6, 10:14]
    with pytest.raises(InputError, match=r"slices k6 and j30 cross and disagree on 4 voxel\(s\) of the line "
                                         r"\(k=6, j=30, i=0\.\.47\)"):
        learn_and_segment(vol, [Annotation(0, 6, k6), Annotation(1, 30, j30)], model=tiny_model_dir,
                          options=LearnOptions(max_minutes=0.05, device="cpu"))
