"""``scripts/bench_fewshot.py`` (issue 13): its peers compute what they claim and its table scores what it says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _helpers_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_fewshot.py"
BIOMEDISA_PYTHON = Path("/work/biomedisa-venv/bin/python")
bench = load_script("bench_fewshot")


def _cone(n: int = 21, size: int = 64) -> np.ndarray:
    """Discs whose radius grows linearly with k (5 → 25 px): their signed distances blend linearly."""
    jj, ii = np.mgrid[:size, :size]
    r = np.hypot(jj - size / 2, ii - size / 2)
    return np.stack([(r <= 5 + k) for k in range(n)]).astype(np.uint8)


def test_sdf_interpolation_recovers_a_linear_blend() -> None:
    truth = _cone()
    sparse = np.zeros_like(truth)
    sparse[[0, 20]] = truth[[0, 20]]
    pred = bench.sdf_interpolate(sparse, [0, 20], (1.0, 1.0, 1.0))
    dice, iou = bench.scores_unannotated(truth, pred, [0, 20])
    assert dice > 0.98 and iou > 0.96
    assert np.array_equal(pred[[0, 20]], truth[[0, 20]])  # annotated slices come back unchanged
    # beyond the annotated range the nearest annotated slice is copied
    pred = bench.sdf_interpolate(sparse, [20], (1.0, 1.0, 1.0))
    assert all(np.array_equal(pred[k], truth[20]) for k in range(21))


def test_scores_count_only_unannotated_slices() -> None:
    truth = np.zeros((4, 8, 8), np.uint8)
    truth[:, 2:6, 2:6] = 1
    pred = truth.copy()
    pred[0] = 0  # wrong only on slice 0
    assert bench.scores_unannotated(truth, pred, [0]) == (1.0, 1.0)
    dice, iou = bench.scores_unannotated(truth, pred, [1])
    assert dice == pytest.approx(2 * 32 / (48 + 32)) and iou == pytest.approx(32 / 48)


def test_reference_label_thresholds_and_cleans() -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((20, 40, 40), np.uint8)
    truth[4:16, 8:32, 8:32] = 1
    truth[8:10, 18:20, 18:20] = 0  # an 8-voxel air hole: filled
    noisy = truth.copy()
    noisy[1, 2, 2] = 1  # a 1-voxel island: removed
    image = (60 + 140 * noisy + rng.normal(0, 10, noisy.shape)).clip(0, 255).astype(np.uint8)
    ref = bench.reference_label(image, min_voxels=64)
    expected = truth.copy()
    expected[8:10, 18:20, 18:20] = 1
    assert np.array_equal(ref, expected)


@pytest.mark.slow
def test_script_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    methods = "a,b,c2,e"  # (b0) and (c) share a's and bench_finetune's code paths; (d) needs its own venv
    cmd = [sys.executable, str(SCRIPT), "--datasets", "phantom:9000", "--size", "small", "--counts", "3",
           "--methods", methods, "--model", str(tiny_model_dir), "--json", str(tmp_path / "r.json"),
           "--max-minutes", "0.2", "--max-steps", "3", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "FossilSegment") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(cmd, capture_output=True, env=env, timeout=300)
    out = done.stdout.decode("utf-8", "replace")
    assert done.returncode == 0, out + done.stderr.decode("utf-8", "replace")
    report = json.loads((tmp_path / "r.json").read_text())
    rows = {r["method"]: r for r in report["results"]}
    assert set(rows) == set(methods.split(",")) and not report["skipped"] and not report["failed"]
    for r in rows.values():
        assert 0.0 <= r["iou"] <= r["dice"] <= 1.0 and r["seconds"] > 0 and r["peak_mb"] > 50
        assert f"| {bench.LABELS[r['method']]} | {r['dice']:.3f} | {r['iou']:.3f} |" in out

    # the table's (c2) row against Dice and IoU computed here from the phantom, independently of the script's scoring
    from fossilsegment_engine.phantom import generate

    volume, labels, _ = generate(9000, "small", family="vertebra")
    truth = labels.array > 0
    ks = rows["c2"]["slices"]
    bone = np.flatnonzero(truth.any(axis=(1, 2)))
    assert ks == sorted({int(round(v)) for v in np.linspace(bone[0], bone[-1], 3)})
    sparse = np.where(np.isin(np.arange(truth.shape[0]), ks)[:, None, None], truth, 0).astype(np.uint8)
    pred = bench.sdf_interpolate(sparse, ks, volume.spacing) > 0
    rest = np.setdiff1d(np.arange(truth.shape[0]), ks)
    t, p = truth[rest], pred[rest]
    assert rows["c2"]["dice"] == pytest.approx(2 * (t & p).sum() / (t.sum() + p.sum()), abs=1e-9)
    assert rows["c2"]["iou"] == pytest.approx((t & p).sum() / (t | p).sum(), abs=1e-9)


def _run_biomedisa_child(python: str, tmp_path: Path, nbrw: int, sorw: int) -> tuple[np.ndarray, np.ndarray, list]:
    """(truth, prediction, annotated slices) of peer (d) run through ``bench.run_child`` on a bright bar in noise."""
    rng = np.random.default_rng(1)
    truth = np.zeros((12, 24, 24), np.uint8)
    truth[:, 8:16, 6:14] = 1
    image = (1000.0 + 800.0 * truth + rng.normal(0, 40, truth.shape)).astype(np.uint16)
    ks = [1, 5, 10]
    sparse = np.zeros_like(truth)
    sparse[ks] = truth[ks]
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "sparse.npy", sparse)
    args = bench.argparse.Namespace(biomedisa_python=python, biomedisa_nbrw=nbrw, biomedisa_sorw=sorw)
    out = bench.run_child("d", tmp_path, ks, args)
    return truth, out["pred"], ks


def test_biomedisa_peer_gets_the_labelling_and_options_it_is_given(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the Biomedisa venv: a stand-in ``biomedisa`` package records what the child passes it."""
    fake = tmp_path / "fake" / "biomedisa"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "interpolation.py").write_text(
        "import json, os\nimport numpy as np\n"
        "def smart_interpolation(data, labels, **kw):\n"
        "    np.save(os.environ['FAKE_OUT'] + '/labels.npy', labels)\n"
        "    np.save(os.environ['FAKE_OUT'] + '/data.npy', data)\n"
        "    open(os.environ['FAKE_OUT'] + '/kw.json', 'w').write(json.dumps(kw))\n"
        "    return {'regular': labels}\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    monkeypatch.setenv("FAKE_OUT", str(tmp_path))
    truth, pred, ks = _run_biomedisa_child(sys.executable, work, nbrw=3, sorw=70)
    assert json.loads((tmp_path / "kw.json").read_text()) == {"nbrw": 3, "sorw": 70, "platform": "opencl_Portable_CPU"}
    labels = np.load(tmp_path / "labels.npy")
    expected = np.zeros_like(truth)
    expected[ks] = truth[ks] + 1  # 0 = not annotated, 1 = an annotated slice's background, 2 = bone
    assert np.array_equal(labels, expected)
    data = np.load(tmp_path / "data.npy")
    assert data.dtype == np.uint8 and data[truth > 0].mean() > data[truth == 0].mean() + 100
    assert np.array_equal(pred, (expected == 2).astype(np.uint8))  # label 2 comes back as bone


@pytest.mark.slow
@pytest.mark.skipif(not BIOMEDISA_PYTHON.exists(), reason="needs the Biomedisa venv (/work/biomedisa-venv)")
def test_biomedisa_peer_fills_a_bar_between_annotated_slices(tmp_path: Path) -> None:
    truth, pred, ks = _run_biomedisa_child(str(BIOMEDISA_PYTHON), tmp_path, nbrw=2, sorw=400)
    dice, _ = bench.scores_unannotated(truth, pred, ks)
    assert dice > 0.9
