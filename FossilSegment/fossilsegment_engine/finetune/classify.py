"""The classification pass of ``learn``: the network everywhere, the trees only where they can change the answer.

Per axial slab: the fine-tuned network's probabilities (as ``segment`` computes them) give every voxel a label.
The trees (image features + network probabilities + shape priors) re-classify only the voxels of :func:`tree_gate`,
where the network is unsure: elsewhere they almost never change its label (measured: docs/benchmarks/speed_scale.md
§5). Their image features are computed on the bounding box of those voxels plus the filters' support
(:data:`FEATURE_MARGIN`), which gives the whole slice's values there, so a gated voxel gets exactly the label the
trees give it when every voxel is classified.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from ..inference.normalize import apply_intensity_range
from .features import SIGMA_MAX, NetworkProbabilities, image_features
from .priors import AxisPrior, prior_features

#: the network's label stands where its top class probability is at least this
SURE_PROBABILITY = 0.998
#: pixels around the gated ones whose image features are computed: the Gaussian's support at the largest scale
#: (scipy: truncate 4 × sigma) plus the gradients taken after it (Sobel, second differences of the Hessian)
FEATURE_MARGIN = math.ceil(4 * SIGMA_MAX) + 3
PREDICT_VOXELS = 500_000  # voxels given to the trees at a time (they convert their input to float64)


def tree_gate(probabilities: np.ndarray) -> np.ndarray:
    """(n, J, I) bool: the voxels the trees re-classify, where the network's top class probability (of its
    (n, J, I, classes) probabilities) is below SURE_PROBABILITY."""
    return probabilities.max(axis=-1) < SURE_PROBABILITY


def predict_chunks(clf: HistGradientBoostingClassifier, x: np.ndarray) -> np.ndarray:
    """The trees' class of each row of ``x`` (m, F), PREDICT_VOXELS rows at a time (they read float64 copies)."""
    out = np.empty(len(x), np.uint8)
    for start in range(0, len(x), PREDICT_VOXELS):
        out[start:start + PREDICT_VOXELS] = clf.predict(x[start:start + PREDICT_VOXELS])
    return out


def features_at(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(m, F) image features of the ``mask`` pixels of one normalised 2D ``image``, equal to the whole image's
    there: computed on the mask's bounding box grown by FEATURE_MARGIN (clipped to the image)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    j0, j1 = max(0, rows[0] - FEATURE_MARGIN), min(image.shape[0], rows[-1] + 1 + FEATURE_MARGIN)
    i0, i1 = max(0, cols[0] - FEATURE_MARGIN), min(image.shape[1], cols[-1] + 1 + FEATURE_MARGIN)
    return image_features(image[None, j0:j1, i0:i1])[0][mask[j0:j1, i0:i1]]


def classify_slab(clf: HistGradientBoostingClassifier, array: Any, k0: int, k1: int, net: NetworkProbabilities,
                  priors: Sequence[AxisPrior]) -> tuple[np.ndarray, int]:
    """(labels (k1-k0, J, I) uint8, voxels the trees classified) of axial slices k0..k1-1.

    The trees' features are assembled as in training: probabilities, image features, priors.
    """
    probs = net(array, k0, k1)
    labels = probs.argmax(axis=-1).astype(np.uint8)
    gate = tree_gate(probs)
    prior = prior_features(priors, k0, k1) if priors and gate.any() else None
    for n in np.flatnonzero(gate.any(axis=(1, 2))):
        mask = gate[n]
        image = apply_intensity_range(np.asarray(array[k0 + n]), net.lo, net.hi)
        parts = [probs[n][mask], features_at(image, mask)] + ([prior[n][mask]] if prior is not None else [])
        labels[n][mask] = predict_chunks(clf, np.concatenate(parts, axis=1))
    return labels, int(np.count_nonzero(gate))
