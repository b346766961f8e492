"""The girdle, digits and carapace families: what each adds to the first six, and seeds keep their specimens."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from _helpers_scripts import load_script
from fossilsegment_engine import phantom
from fossilsegment_engine.phantom import generator
from fossilsegment_engine.phantom.grid import Grid
from fossilsegment_engine.phantom.limbs_and_armour import carapace, digits, girdle


def _parts(builder, seed: int):
    return builder(Grid((48, 96, 96)), np.random.default_rng(seed), False)


def test_new_families_are_named_but_never_drawn():
    assert {"girdle", "digits", "carapace"} <= set(phantom.FAMILIES)
    assert set(generator.DRAWN_FAMILIES) == {"skull", "long_bone", "vertebra", "plates", "fragments", "trabecular"}
    drawn = {phantom.generate(seed, "small")[2]["family"] for seed in range(12)}
    assert drawn <= set(generator.DRAWN_FAMILIES) and len(drawn) >= 3


def test_girdle_blade_is_thin_and_its_rim_thick():
    for seed in range(3):
        p = _parts(girdle, seed)
        depth = ndimage.distance_transform_edt(p.bone)
        assert (depth[p.bone] <= 1.5).mean() > 0.3, seed     # the 1-3 voxel blade
        assert depth.max() >= 2.0, seed                      # rim, neck and cup walls are thicker
        assert p.cancellous.any() and p.params["blade_thickness"] <= 3.0


def test_digits_are_chains_of_separate_short_bones():
    pieces = []
    for seed in range(3):
        p = _parts(digits, seed)
        pieces.append(ndimage.label(p.bone)[1])
        assert (p.cancellous & ~p.bone).any(), seed          # marrow spaces inside the cortex
    assert max(pieces) >= 4, pieces                           # joint gaps split the rays into bones


def test_carapace_is_a_sandwich_split_by_sutures():
    for seed in range(3):
        p = _parts(carapace, seed)
        assert p.cavity.any(), seed                           # diploë spaces between the cortices
        assert p.params["plates"] >= 4
    split = [ndimage.label(_parts(carapace, s).bone)[1] for s in range(3)]
    assert max(split) >= 2, split


def test_training_data_plan_adds_later_families_to_train_only():
    make = load_script("make_training_data")
    base = make.plan(2, 1, "vertebra", 1)
    assert {f for _, f, _ in base} == set(generator.DRAWN_FAMILIES)  # test splits of every published figure
    more = make.plan(2, 1, "vertebra", 1, ("girdle", "carapace"))
    added = [job for job in more if job not in base]
    assert {s for s, _, _ in added} == {"train"} and {f for _, f, _ in added} == {"girdle", "carapace"}
    seeds = [seed for _, _, seed in more]
    assert len(seeds) == len(set(seeds))                              # no two specimens share a seed
