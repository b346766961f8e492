"""`batch --ray`: one Ray task per scan on a local Ray instance gives the same labelmaps as the local run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fossilsegment_engine.batch import BatchOptions, read_summary, run_batch
from test_batch import write_scan

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'fossilsegment[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def _labelmap(folder: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelmap.nrrd")))


@pytest.mark.slow
def test_ray_results_equal_local_results(tmp_path: Path, tiny_model_dir: Path, local_ray, monkeypatch) -> None:
    monkeypatch.setenv("FOSSILSEGMENT_NO_SNAPSHOT", "1")
    bad = tmp_path / "in" / "broken.nrrd"
    scans = [write_scan(tmp_path / "in" / "alpha.nrrd", 0), write_scan(tmp_path / "in" / "beta.nrrd", 1)]
    bad.write_bytes(b"not a scan")
    options = BatchOptions(model=str(tiny_model_dir), device="cpu")
    local = run_batch(scans, tmp_path / "local", options)
    remote = run_batch([*scans, bad], tmp_path / "ray", options, use_ray=True)
    assert [r.status for r in local] == ["ok", "ok"]
    assert [r.status for r in remote] == ["ok", "ok", "failed"]
    for name in ("alpha", "beta"):
        a, b = _labelmap(tmp_path / "local" / name), _labelmap(tmp_path / "ray" / name)
        assert a.any()
        np.testing.assert_array_equal(a, b)  # voxel for voxel
        assert (tmp_path / "ray" / name / "done.json").is_file()
    rows = read_summary(tmp_path / "ray" / "summary.csv")
    assert [(r["scan"], r["status"]) for r in rows] == [("alpha", "ok"), ("beta", "ok"), ("broken", "failed")]
    assert [r.bone_volume_mm3 for r in remote[:2]] == [r.bone_volume_mm3 for r in local]
    # resumable on Ray too: nothing left to do but the broken scan
    again = run_batch([*scans, bad], tmp_path / "ray", options, use_ray=True)
    assert [r.status for r in again] == ["skipped", "skipped", "failed"]
