"""``scripts/phantom_visibility.py``: the local bone/matrix contrast it reports follows the contrast put in."""

from __future__ import annotations

import numpy as np

from _helpers_scripts import load_script

visibility = load_script("phantom_visibility")


def test_dprime_follows_the_contrast() -> None:
    rng = np.random.default_rng(0)
    labels = np.zeros((24, 48, 48), np.uint8)
    labels[6:18, 12:36, 12:36] = 1
    for contrast, lo, hi in ((3.0, 2.5, 3.5), (0.0, 0.0, 0.2)):
        ct = 1000 + 100 * rng.standard_normal(labels.shape) + 100 * contrast * (labels == 1)
        d = visibility.bone_visibility(ct, labels)
        assert d.size > 0 and lo < np.median(d) < hi
