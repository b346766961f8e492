"""Issue 5: per-voxel uncertainty (test-time flips, three views, softmax) and slice ranking."""

from __future__ import annotations

import numpy as np
import pytest

from fossilsegment_engine.errors import InputError
from fossilsegment_engine.inference.predictor import Prediction
from fossilsegment_engine.inference.uncertainty import (
    METHODS,
    auroc,
    normalized_entropy,
    slice_ranking,
    suggest_slices,
    uncertainty_volume,
    write_uncertainty,
)
from fossilsegment_engine.io import read_volume
from fossilsegment_engine.volume import Volume


class StubSegmenter:
    """Probabilities from a rule: ``rule(array) -> P(class 1)`` in [0, 1]."""

    def __init__(self, rule):
        self.rule, self.calls = rule, 0

    def predict_probabilities(self, volume, progress=None, cancel=None, postprocess=None):
        self.calls += 1
        p1 = np.rint(self.rule(volume.array) * 255).astype(np.uint8)
        probs = [volume.with_array(255 - p1), volume.with_array(p1)]
        if progress:
            progress(volume.shape[0], volume.shape[0])
        return Prediction(volume.with_array((p1 > 127).astype(np.uint8)), probs)


def vol() -> Volume:
    a = np.zeros((6, 8, 10), np.float32)
    a[2:4, 3:6, 2:7] = 1
    return Volume(a, (0.5, 0.6, 2.0), (1.0, 2.0, 3.0))


@pytest.mark.parametrize("method, passes", [("tta", 4), ("views", 3), ("softmax", 1)])
def test_equivariant_model_is_certain(method, passes):
    stub = StubSegmenter(lambda a: (a > 0.5).astype(float))
    done = []
    u = uncertainty_volume(stub, vol(), method, progress=lambda d, t: done.append((d, t)))
    assert stub.calls == passes and u.array.dtype == np.float32 and u.same_geometry(vol())
    assert u.array.max() == 0.0 and done[-1][0] == done[-1][1]


def test_flip_dependent_model_is_uncertain_only_under_tta():
    """P(bone) = 1 on the left half of each row: flips disagree there, the three views do not differ in i."""
    stub = StubSegmenter(lambda a: (np.arange(a.shape[2]) < a.shape[2] // 2)[None, None, :] * np.ones(a.shape))
    u = uncertainty_volume(stub, vol(), "tta")
    assert np.allclose(u.array, 1.0, atol=1e-6)  # flip-i pass says the opposite half everywhere
    assert uncertainty_volume(stub, vol(), "softmax").array.max() == 0.0


def test_entropy_ranking_and_auroc():
    assert np.allclose(normalized_entropy(np.array([[0.5], [0.5]])), 1.0)
    assert np.allclose(normalized_entropy(np.array([[1.0], [0.0]])), 0.0)
    u = np.zeros((4, 2, 2), np.float32)
    u[2] = 0.9
    u[0] = 0.5
    u[3, 0, 0] = 0.4
    assert [k for k, _ in slice_ranking(u)] == [2, 0, 3, 1]
    assert [k for k, _ in slice_ranking(u, exclude=[2])] == [0, 3, 1]
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
    with pytest.raises(InputError, match="unknown uncertainty method"):
        uncertainty_volume(StubSegmenter(lambda a: a), vol(), "dropout")


def test_real_model_and_files(tmp_path, tiny_model_dir):
    from fossilsegment_engine.inference.predictor import Predictor

    rng = np.random.default_rng(0)
    v = Volume(rng.normal(0, 1, (5, 32, 32)).astype(np.float32), (0.3, 0.3, 0.9), (5.0, 6.0, 7.0))
    seg = Predictor.load(tiny_model_dir, device="cpu")
    for method in METHODS:
        u, labels = uncertainty_volume(seg, v, method, return_labels=True)
        assert u.array.shape == v.shape and 0 <= u.array.min() and u.array.max() <= 1 and u.array.max() > 0
        assert labels.array.dtype == np.uint8
    back = read_volume(write_uncertainty(u, tmp_path / "u.nrrd"))
    assert back.array.dtype == np.float32 and back.same_geometry(v) and np.allclose(back.array, u.array)
    scaled = read_volume(write_uncertainty(u, tmp_path / "u8.nrrd", scaled_uint8=True))
    assert scaled.array.dtype == np.uint8 and np.abs(scaled.array / 255.0 - u.array).max() <= 0.5 / 255 + 1e-6


def test_cli_segment_uncertainty(tmp_path, tiny_model_dir, capsys):
    from fossilsegment_engine.cli import main
    from fossilsegment_engine.io import write_volume

    rng = np.random.default_rng(0)
    v = Volume(rng.normal(0, 1, (4, 32, 32)).astype(np.float32), (0.3, 0.3, 0.9), (5.0, 6.0, 7.0))
    write_volume(v, tmp_path / "in.nrrd")
    base = ["segment", str(tmp_path / "in.nrrd"), "--model", str(tiny_model_dir), "--device", "cpu",
            "--labelmap", str(tmp_path / "l.nrrd")]
    assert main(base + ["--uncertainty", str(tmp_path / "u.txt")]) == 2
    assert "--uncertainty" in capsys.readouterr().err and not (tmp_path / "l.nrrd").exists()
    assert main(base + ["--uncertainty", str(tmp_path / "u.nrrd"), "--uncertainty-method", "softmax"]) == 0
    u = read_volume(tmp_path / "u.nrrd")
    assert u.array.dtype == np.float32 and u.same_geometry(v) and "most uncertain" in capsys.readouterr().out


def test_roi_limits_uncertainty_to_the_box(tiny_model_dir):
    """A box of whole slices gives the full run's uncertainty there (tta, softmax) and 0 elsewhere; any box
    and method: nothing outside it is computed."""
    from fossilsegment_engine.inference.predictor import Predictor
    from fossilsegment_engine.roi import Box

    rng = np.random.default_rng(1)
    v = Volume(rng.normal(0, 1, (7, 32, 40)).astype(np.float32), (0.3, 0.3, 0.9), (5.0, 6.0, 7.0))
    seg = Predictor.load(tiny_model_dir, device="cpu")
    slab = Box(2, 5, 0, 32, 0, 40)
    for method in ("tta", "softmax"):
        full = uncertainty_volume(seg, v, method).array
        done = []
        part = uncertainty_volume(seg, v, method, roi=slab, progress=lambda d, t: done.append((d, t))).array
        assert np.allclose(part[2:5], full[2:5], atol=1e-6) and part[2:5].max() > 0
        assert not part[:2].any() and not part[5:].any()
        assert done[-1][0] == done[-1][1] == 3 * (4 if method == "tta" else 1)
    box = Box(1, 6, 5, 20, 8, 30)
    for method in METHODS:
        u = uncertainty_volume(seg, v, method, roi=box).array
        outside = np.ones(v.shape, bool)
        outside[box.slices()] = False
        assert not u[outside].any() and u[box.slices()].mean() > 0
    with pytest.raises(InputError, match="region of interest"):
        uncertainty_volume(seg, v, "tta", roi=Box(0, 9, 0, 32, 0, 40))


def test_cli_uncertainty_follows_roi(tmp_path, tiny_model_dir):
    from fossilsegment_engine.cli import main
    from fossilsegment_engine.io import write_volume

    rng = np.random.default_rng(0)
    v = Volume(rng.normal(0, 1, (5, 32, 32)).astype(np.float32), (0.3, 0.3, 0.9), (5.0, 6.0, 7.0))
    write_volume(v, tmp_path / "in.nrrd")
    base = ["segment", str(tmp_path / "in.nrrd"), "--model", str(tiny_model_dir), "--device", "cpu",
            "--uncertainty-method", "softmax"]
    assert main(base + ["--labelmap", str(tmp_path / "a.nrrd"), "--uncertainty", str(tmp_path / "a_u.nrrd"),
                        "--roi", "4:20,2:30,1:4"]) == 0
    u = read_volume(tmp_path / "a_u.nrrd").array
    assert u[1:4, 2:30, 4:20].mean() > 0
    u[1:4, 2:30, 4:20] = 0
    assert not u.any()
    assert main(base + ["--labelmap", str(tmp_path / "b.nrrd"), "--uncertainty", str(tmp_path / "b_u.nrrd"),
                        "--slices", "3:5"]) == 0
    u = read_volume(tmp_path / "b_u.nrrd").array
    assert not u[:3].any() and u[3:].min(axis=(1, 2)).max() >= 0 and u[3:].mean() > 0


def test_suggested_slices_on_any_axis_are_spread_and_skip_corrected_ones():
    u = np.zeros((20, 30, 40), np.float32)
    u[:, 10:13, :] = 0.8  # an uncertain band across coronal (j) slices 10..12: they top the j ranking
    u[4:6] += 0.1  # axial slices 4 and 5 are the most uncertain axial ones
    u[:, :, 33] += 0.5  # sagittal slice 33
    assert [j for j, _ in slice_ranking(u, axis=1)][:3] == [10, 11, 12]
    got = suggest_slices(u, count=4, axes=(0, 1, 2), min_gap=3)
    assert [(a, i) for a, i, _ in got] == [(1, 10), (2, 33), (0, 4), (0, 0)]  # never j11, j12: too close to j10
    assert got[0][2] == pytest.approx(u[:, 10].mean())
    # corrected slices (and their neighbours) are never suggested; the default gap = slices / (2 x count)
    got = suggest_slices(u, count=2, axes=(1,), exclude=[(1, 11), (0, 4)])
    assert [(a, i) for a, i, _ in got] == [(1, 0), (1, 18)]  # gap 30 // 4 = 7: j5..j17 closed around j11
    assert [i for _, i, _ in suggest_slices(u, count=3)] == [4, 0, 7]  # axial only by default; gap 20 // 6 = 3
    assert len(suggest_slices(u, count=50, axes=(0,), min_gap=1)) == 20  # never more than there are
    with pytest.raises(InputError, match="axes"):
        suggest_slices(u, axes=(3,))
