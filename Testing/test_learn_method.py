"""The few-shot method (issue 13): shape priors from annotated slices and learn_and_segment end to end."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fossilsegment_engine.errors import Cancelled, InputError
from fossilsegment_engine.finetune.annotations import Annotation, annotations_from_labelmap
from fossilsegment_engine.finetune.learn import LearnOptions, learn_and_segment, prior_axes
from fossilsegment_engine.finetune.priors import AxisPrior, signed_distance
from fossilsegment_engine.volume import Volume


def _disc(shape: tuple[int, int], radius: float, centre: tuple[float, float] | None = None) -> np.ndarray:
    cy, cx = centre or ((shape[0] - 1) / 2, (shape[1] - 1) / 2)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def _cone(n: int = 21, size: int = 48) -> np.ndarray:
    """A cone along K: disc radius growing linearly 4 → 16 voxels."""
    return np.stack([_disc((size, size), 4 + 12 * k / (n - 1)) for k in range(n)])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_signed_distance_sign_and_scale() -> None:
    m = _disc((41, 41), 10)
    d = signed_distance(m, (0.5, 0.5))
    assert d[20, 20] == pytest.approx(5.0, abs=0.6)  # 10 voxels of 0.5 mm from the edge, inside
    assert d[20, 0] < 0 and d[m].min() > 0
    assert signed_distance(np.zeros((5, 5)), (1, 1)).max() < 0


def test_axial_prior_interpolates_a_cone_between_two_slices() -> None:
    cone = _cone()
    anns = [Annotation(0, 0, cone[0].astype(np.uint8)), Annotation(0, 20, cone[20].astype(np.uint8))]
    prior = AxisPrior(0, anns, cone.shape, (1.0, 1.0, 1.0))
    s, dist = prior.slab(0, 21)
    assert _dice(s[10] > 0, cone[10]) > 0.95  # the middle disc has the mean radius
    assert dist[10, 0, 0] == 10 and dist[0, 0, 0] == 0 and dist[3, 5, 5] == 3


@pytest.mark.parametrize("axis", [1, 2])
def test_prior_along_j_and_i_equals_the_axial_one_on_a_transposed_volume(axis: int) -> None:
    cone = _cone()
    k_prior, _ = AxisPrior(0, [Annotation(0, 0, cone[0]), Annotation(0, 20, cone[20])], cone.shape, (1, 1, 1)).slab(0, 21)
    moved = np.moveaxis(cone, 0, axis)  # the cone now runs along J (or I)
    anns = [Annotation(axis, i, np.take(moved, i, axis=axis)) for i in (0, 20)]
    prior = AxisPrior(axis, anns, moved.shape, (1.0, 1.0, 1.0))
    s, dist = prior.slab(0, moved.shape[0])
    np.testing.assert_allclose(s, np.moveaxis(k_prior, 0, axis), atol=1e-5)
    assert np.all(np.take(dist, 10, axis=axis) == 10)


def test_prior_axes_need_two_annotations() -> None:
    a = np.zeros((4, 4), np.uint8)
    anns = [Annotation(0, 1, a), Annotation(0, 3, a), Annotation(1, 2, a)]
    assert prior_axes(anns) == [0]


def _bright_blob_volume(seed: int = 0) -> tuple[Volume, Volume]:
    """A bright, wobbling blob in noisy matrix: easy to learn from its appearance."""
    rng = np.random.default_rng(seed)
    k, n = 24, 48
    truth = np.stack([_disc((n, n), 8 + 4 * np.sin(z / 4), (24 + 5 * np.cos(z / 5), 22)) for z in range(k)])
    image = (600 + 500 * truth + rng.normal(0, 60, truth.shape)).astype(np.int16)
    vol = Volume(image, spacing=(0.5, 0.5, 0.8))
    return vol, vol.with_array(truth.astype(np.uint8))


def _options(**kw: object) -> LearnOptions:
    return LearnOptions(max_minutes=1.0, finetune_steps=3, device="cpu", precision="fp32", **kw)


@pytest.mark.slow
def test_learn_and_segment_learns_the_blob_and_keeps_corrected_slices(tiny_model_dir) -> None:
    vol, lab = _bright_blob_volume()
    truth = lab.array
    ks = [2, 12, 21]
    anns = annotations_from_labelmap(lab, [(0, k) for k in ks])
    odd = truth[12].copy()
    odd[:5, :5] = 1  # a user's deliberate stroke the image does not support: must survive unchanged
    anns[1] = Annotation(0, 12, odd)
    res = learn_and_segment(vol, anns, model=tiny_model_dir, options=_options())
    out = res.labels.array
    assert res.labels.same_geometry(vol) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[12], odd)
    np.testing.assert_array_equal(out[[2, 21]], truth[[2, 21]])
    rest = [k for k in range(truth.shape[0]) if k not in ks]
    assert _dice(out[rest] > 0, truth[rest] > 0) > 0.9
    assert res.finetuned is not None and res.report["annotations"] == ["k2", "k12", "k21"]


@pytest.mark.slow
def test_learn_from_one_slice(tiny_model_dir) -> None:
    vol, lab = _bright_blob_volume(2)
    truth = lab.array
    res = learn_and_segment(vol, annotations_from_labelmap(lab, [(0, 11)]), model=tiny_model_dir, options=_options())
    rest = [k for k in range(truth.shape[0]) if k != 11]
    assert _dice(res.labels.array[rest] > 0, truth[rest] > 0) > 0.85


def test_a_spent_budget_skips_the_finetuning(tiny_model_dir, monkeypatch) -> None:
    """Nothing left for the network after reading and timing the volume: classify with the parent, no error."""
    from fossilsegment_engine.finetune import learn

    monkeypatch.setattr(learn, "_finetune_minutes", lambda *a: -0.02)
    vol, lab = _bright_blob_volume()
    ks = [2, 12, 21]
    res = learn_and_segment(vol, annotations_from_labelmap(lab, [(0, k) for k in ks]), model=tiny_model_dir,
                            options=_options())
    assert res.finetuned is None and res.report["finetune"] is None
    np.testing.assert_array_equal(res.labels.array[ks], lab.array[ks])
    rest = [k for k in range(lab.shape[0]) if k not in ks]
    assert _dice(res.labels.array[rest] > 0, lab.array[rest] > 0) > 0.8


def test_a_kept_network_is_finetuned_even_with_the_budget_spent(tiny_model_dir, monkeypatch) -> None:
    """``--save-model`` asks for the adapted network: it is fine-tuned however little budget is left."""
    import dataclasses

    from fossilsegment_engine.finetune import learn

    monkeypatch.setattr(learn, "_finetune_minutes", lambda *a: -0.02)
    vol, lab = _bright_blob_volume()
    res = learn_and_segment(vol, annotations_from_labelmap(lab, [(0, k) for k in (2, 12, 21)]), model=tiny_model_dir,
                            options=dataclasses.replace(_options(), always_finetune=True))
    assert res.finetuned is not None and res.report["finetune"]["steps"] >= 1


def test_learn_from_coronal_slices_only(tiny_model_dir) -> None:
    vol, lab = _bright_blob_volume(1)
    truth = lab.array
    anns = annotations_from_labelmap(lab, [(1, 14), (1, 24), (1, 34)])
    res = learn_and_segment(vol, anns, model=tiny_model_dir, options=_options())
    out = res.labels.array
    assert res.finetuned is None  # the network learns from axial slices only
    for a in anns:
        np.testing.assert_array_equal(out[:, a.index], a.labels)
    keep = np.ones(truth.shape, bool)
    keep[:, [14, 24, 34]] = False
    assert _dice((out > 0) & keep, (truth > 0) & keep) > 0.85


def test_cancel_stops_learning(tiny_model_dir) -> None:
    vol, lab = _bright_blob_volume()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        learn_and_segment(vol, annotations_from_labelmap(lab, [(0, 5), (0, 15)]), model=tiny_model_dir,
                          options=_options(), cancel=cancel)


def test_bad_budget() -> None:
    with pytest.raises(InputError, match="budget"):
        LearnOptions(max_minutes=0)


@pytest.mark.slow
def test_annotations_without_matrix_are_refused(tiny_model_dir) -> None:
    vol, _ = _bright_blob_volume()
    full = np.ones(vol.shape[1:], np.uint8)
    with pytest.raises(InputError, match="matrix"):
        learn_and_segment(vol, [Annotation(0, 3, full), Annotation(0, 9, full)], model=tiny_model_dir,
                          options=_options())
