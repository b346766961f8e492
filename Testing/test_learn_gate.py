"""learn's classification pass: the trees re-classify only gated voxels, with the whole slice's features there."""

from __future__ import annotations

import numpy as np
import pytest

from fossilsegment_engine.finetune import classify, learn
from fossilsegment_engine.finetune.annotations import annotations_from_labelmap
from fossilsegment_engine.finetune.classify import classify_slab, features_at, tree_gate
from fossilsegment_engine.finetune.features import image_features
from fossilsegment_engine.finetune.priors import AxisPrior
from fossilsegment_engine.finetune.tune import _load_parent
from fossilsegment_engine.inference.normalize import volume_intensity_range
from test_learn_method import _bright_blob_volume


def _probabilities(foreground: np.ndarray) -> np.ndarray:
    """(…, 2) probabilities from a foreground probability map."""
    return np.stack([1 - foreground, foreground], axis=-1).astype(np.float32)


@pytest.mark.parametrize("box", [(120, 150, 100, 170), (0, 6, 0, 280), (290, 300, 270, 280)])
def test_features_at_equal_the_whole_slice_features_and_need_the_margin(box, monkeypatch) -> None:
    img = np.random.default_rng(0).random((300, 280)).astype(np.float32)
    mask = np.zeros(img.shape, bool)
    j0, j1, i0, i1 = box
    mask[j0:j1, i0:i1] = True
    mask[(j0 + j1) // 2, max(0, i0 - 9)] = True  # not a rectangle
    whole = image_features(img[None])[0][mask]
    np.testing.assert_array_equal(features_at(img, mask), whole)
    monkeypatch.setattr(classify, "FEATURE_MARGIN", 20)  # less than the filters' support: no longer the same
    if box[0] > 20:  # (a box at the image's edge has no margin to lose on that side; the inner one does)
        assert not np.array_equal(features_at(img, mask), whole)


def test_tree_gate_sends_the_voxels_where_the_network_is_unsure() -> None:
    fg = np.array([[[0.0, 0.001, 0.5, 0.9, 0.997, 1.0]]])  # (1, 1, 6) foreground probabilities
    np.testing.assert_array_equal(tree_gate(_probabilities(fg))[0, 0], [False, False, True, True, True, False])


class _FixedNetwork:
    """A network stand-in with given probabilities for slab k0..k1 (classify_slab reads lo, hi and calls it)."""

    lo, hi = 0.0, 1.0

    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs

    def __call__(self, array, k0: int, k1: int) -> np.ndarray:
        return self.probs[k0:k1]


class _AlwaysBone:
    """Trees that call every voxel bone, recording how many they were asked about."""

    def __init__(self) -> None:
        self.asked = 0

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.asked += len(x)
        return np.ones(len(x), np.uint8)


def test_confident_voxels_keep_the_network_label_and_unsure_ones_take_the_trees() -> None:
    fg = np.full((2, 40, 50), 0.001, np.float32)
    fg[0, 10:20, 10:20] = 0.6  # unsure, matrix by a hair: the trees make it bone
    fg[1, 30:35, 40:45] = 0.3  # unsure on the other side
    trees = _AlwaysBone()
    labels, gated = classify_slab(trees, np.zeros((2, 40, 50), np.float32), 0, 2, _FixedNetwork(_probabilities(fg)), [])
    want = np.zeros((2, 40, 50), np.uint8)
    want[0, 10:20, 10:20] = want[1, 30:35, 40:45] = 1
    np.testing.assert_array_equal(labels, want)
    assert gated == trees.asked == 100 + 25


def test_gated_labels_equal_the_trees_wherever_gated_and_the_network_elsewhere(tiny_model_dir, monkeypatch) -> None:
    """Against the ungated pass (every voxel's whole-slice features through the trees)."""
    vol, lab = _bright_blob_volume()
    anns = annotations_from_labelmap(lab, [(0, 3), (0, 12), (0, 20)])
    module, config, _ = _load_parent(tiny_model_dir)
    intensity = volume_intensity_range(vol.array, config.normalization)
    net = learn.NetworkProbabilities(module, config, "cpu", "fp32", intensity)
    priors = [AxisPrior(0, anns, vol.shape, tuple(reversed(vol.spacing)))]
    x, y = learn._training_set(vol.array, anns, net, tuple(reversed(vol.spacing)), np.random.default_rng(0), None, None)
    clf = learn._classifier(0).fit(x, y)
    k0, k1 = 5, 11
    features = learn._slab_features(vol.array, k0, k1, net, priors)
    ungated = clf.predict(features.reshape(-1, features.shape[-1])).reshape(features.shape[:3])
    network = features[..., :2].argmax(axis=-1)
    # the tiny random network is never sure: call its more confident half sure, so both sides of the gate are used
    monkeypatch.setattr(classify, "SURE_PROBABILITY", float(np.median(features[..., :2].max(axis=-1))))
    gate = tree_gate(features[..., :2])
    labels, gated = classify_slab(clf, vol.array, k0, k1, net, priors)
    assert 0 < gated == np.count_nonzero(gate) < gate.size
    assert np.any(ungated[gate] != network[gate])  # the trees change something there, so the check can fail
    np.testing.assert_array_equal(labels[gate], ungated[gate])
    np.testing.assert_array_equal(labels[~gate], network[~gate])
