"""`fossilsegment batch`: one folder per scan, resumable, failures reported, summary CSV, bad output folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fossilsegment_engine.batch import BatchOptions, read_summary, run_batch
from fossilsegment_engine.cli import main
from fossilsegment_engine.errors import OutputError


def write_scan(path: Path, seed: int) -> Path:
    """A tiny scan (12 × 40 × 48) with a bright blob, as the CLI tests use."""
    rng = np.random.default_rng(seed)
    k, j, i = np.indices((12, 40, 48))
    blob = (k - 6) ** 2 / 25 + (j - 20 + seed) ** 2 / 150 + (i - 24) ** 2 / 200 < 1
    img = sitk.GetImageFromArray((1000 + 800 * blob + rng.normal(0, 30, blob.shape)).astype(np.uint16))
    img.SetSpacing((0.5, 0.6, 0.7 + 0.1 * seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


@pytest.fixture()
def scans(tmp_path: Path) -> list[Path]:
    bad = tmp_path / "in" / "broken.nrrd"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"NRRD0004\ntype: garbage\n")
    return [write_scan(tmp_path / "in" / "alpha.nrrd", 0), bad, write_scan(tmp_path / "in" / "beta.nii.gz", 1)]


def _batch(scans: list[Path], out: Path, model: Path, *extra: str) -> int:
    return main(["batch", *map(str, scans), "-o", str(out), "--model", str(model), "--device", "cpu", *extra])


@pytest.mark.slow
def test_batch_writes_per_scan_folders_and_reports_failures(tmp_path: Path, scans, tiny_model_dir, monkeypatch,
                                                            capsys) -> None:
    from fossilsegment_engine.batch import runner

    loads = []
    real = runner.load_segmenter
    monkeypatch.setattr(runner, "load_segmenter", lambda opts: loads.append(opts) or real(opts))
    out = tmp_path / "out"
    assert _batch(scans, out, tiny_model_dir, "--mesh-format", "stl,ply") == 1  # one scan failed
    assert len(loads) == 1, "the model is loaded once per batch"
    assert "FAILED" in capsys.readouterr().out
    rows = read_summary(out / "summary.csv")
    assert [(r["scan"], r["status"]) for r in rows] == [("alpha", "ok"), ("broken", "failed"), ("beta", "ok")]
    assert "broken.nrrd" in rows[1]["error"] and rows[0]["error"] == ""
    assert rows[0]["shape_kji"] == "12x40x48" and rows[2]["spacing_mm"] == "0.5x0.6x0.8"
    assert float(rows[0]["bone_volume_mm3"]) > 0 and float(rows[0]["seconds"]) > 0
    assert sorted(p.name for p in out.iterdir()) == ["alpha", "beta", "summary.csv"]
    alpha = out / "alpha"
    assert sorted(p.name for p in alpha.iterdir()) == ["done.json", "labelmap.nrrd", "provenance.json", "qc",
                                                       "scan.seg.nrrd", "stl"]
    assert {"Bone.stl", "Bone.ply", "provenance.json"} <= {p.name for p in (alpha / "stl").iterdir()}
    assert (alpha / "qc" / "montage.png").is_file()
    provenance = json.loads((alpha / "provenance.json").read_text())
    assert provenance["model"] == "tiny-test-unet" and provenance["meshes"][0]["segment"] == "Bone"
    assert provenance["input"].endswith("alpha.nrrd")
    done = json.loads((alpha / "done.json").read_text())
    assert done["status"] == "ok" and done["shape"] == [12, 40, 48]


@pytest.mark.slow
def test_batch_resumes_and_redoes_half_finished_scans(tmp_path: Path, scans, tiny_model_dir, monkeypatch) -> None:
    monkeypatch.setenv("FOSSILSEGMENT_NO_SNAPSHOT", "1")
    out = tmp_path / "out"
    options = BatchOptions(model=str(tiny_model_dir), device="cpu")
    good = [scans[0], scans[2]]
    first = run_batch(good, out, options)
    assert [r.status for r in first] == ["ok", "ok"]
    done_alpha = (out / "alpha" / "done.json").read_bytes()
    # beta killed half-way: no done.json, a stray file, and a temporary folder of a killed run
    (out / "beta" / "done.json").unlink()
    (out / "beta" / "stray.txt").write_text("x")
    (out / ".beta.abc.tmp").mkdir()
    second = run_batch(good, out, options)
    assert [r.status for r in second] == ["skipped", "ok"]
    assert (out / "alpha" / "done.json").read_bytes() == done_alpha
    assert not (out / "beta" / "stray.txt").exists() and (out / "beta" / "done.json").is_file()
    assert not list(out.glob(".*tmp*"))
    rows = read_summary(out / "summary.csv")
    assert [r["status"] for r in rows] == ["skipped", "ok"] and float(rows[0]["bone_volume_mm3"]) > 0
    forced = run_batch(good, out, BatchOptions(model=str(tiny_model_dir), device="cpu", force=True))
    assert [r.status for r in forced] == ["ok", "ok"]


def test_batch_same_labelmap_as_segment(tmp_path: Path, tiny_model_dir, monkeypatch) -> None:
    monkeypatch.setenv("FOSSILSEGMENT_NO_SNAPSHOT", "1")
    src = write_scan(tmp_path / "alpha.nrrd", 0)
    run_batch([src], tmp_path / "out", BatchOptions(model=str(tiny_model_dir), device="cpu"))
    assert main(["segment", str(src), "--model", str(tiny_model_dir), "--device", "cpu",
                 "--labelmap", str(tmp_path / "lm.nrrd")]) == 0
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "alpha" / "labelmap.nrrd")))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "lm.nrrd")))
    np.testing.assert_array_equal(a, b)


def test_output_folder_that_is_a_file_is_refused(tmp_path: Path, scans, tiny_model_dir, capsys) -> None:
    target = tmp_path / "taken"
    target.write_text("not a folder")
    assert _batch(scans[:1], target, tiny_model_dir) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permissions are not enforced for root")
def test_unwritable_output_folder_is_refused_before_work(tmp_path: Path, scans) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="not writable"):
            run_batch(scans[:1], locked / "out", BatchOptions(model="/nonexistent/model"))
    finally:
        locked.chmod(0o700)


def test_bad_model_stops_before_any_scan(tmp_path: Path, scans) -> None:
    from fossilsegment_engine.errors import ModelError

    with pytest.raises(ModelError):
        run_batch(scans[:1], tmp_path / "out", BatchOptions(model=str(tmp_path / "no-model")))
    assert not (tmp_path / "out" / "alpha").exists()


def test_duplicate_scan_names_get_distinct_folders() -> None:
    from fossilsegment_engine.batch.layout import scan_names

    assert scan_names(["/a/x.nrrd", "/b/x.nii.gz", "/c/x", "/d/y.mha"]) == ["x", "x_2", "x_3", "y"]
