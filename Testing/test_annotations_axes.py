"""Issue 13: corrected slices along any axis — parsing, checks (crossing slices included) and pasting."""

from __future__ import annotations

import numpy as np
import pytest

from fossilsegment_engine.errors import InputError
from fossilsegment_engine.finetune import (Annotation, annotations_from_labelmap, check_annotation_set,
                                           parse_slice_refs, paste_annotations)
from fossilsegment_engine.volume import Volume

SHAPE = (6, 8, 10)  # k, j, i: every axis a different length, so a swapped axis cannot pass


def labelmap() -> Volume:
    """Labels 0/1/2 that differ along every axis."""
    k, j, i = np.indices(SHAPE)
    return Volume(((k + 2 * j + 3 * i) % 3).astype(np.uint8), (0.5, 0.7, 1.1), (1.0, 2.0, 3.0))


def test_parse_slice_refs():
    assert parse_slice_refs("10,80, 150") == [(0, 10), (0, 80), (0, 150)]
    assert parse_slice_refs("k10,K80,j40,i120-122,80") == [(0, 10), (0, 80), (1, 40), (2, 120), (2, 121), (2, 122)]
    assert parse_slice_refs("j3-4 i0") == [(1, 3), (1, 4), (2, 0)]


@pytest.mark.parametrize("text", ["x5", "k", "5-3", "j-2", "k1.5", "k5-j6", "-1"])
def test_parse_slice_refs_bad_syntax(text):
    with pytest.raises(InputError, match=r"e\.g\. 10,80,150 or k10,k80,j40,i120-122"):
        parse_slice_refs(text)


def test_parse_slice_refs_empty():
    with pytest.raises(InputError, match="no annotated slice"):
        parse_slice_refs(" , ")


def test_annotations_from_labelmap_copy_each_axis():
    lab = labelmap()
    anns = annotations_from_labelmap(lab, [(0, 5), (1, 2), (2, 9)], like=lab)
    assert [a.name for a in anns] == ["k5", "j2", "i9"]
    np.testing.assert_array_equal(anns[0].labels, lab.array[5])
    np.testing.assert_array_equal(anns[1].labels, lab.array[:, 2])
    np.testing.assert_array_equal(anns[2].labels, lab.array[:, :, 9])
    lab.array[:] = 0  # copies: the labelmap changing later does not change them
    assert anns[0].labels.any() and anns[1].labels.any() and anns[2].labels.any()


@pytest.mark.parametrize("ref, match", [
    ((0, 6), r"slice k6 is outside the volume: its k slices are 0\.\.5"),
    ((1, 8), r"slice j8 is outside the volume: its j slices are 0\.\.7"),
    ((2, 10), r"slice i10 is outside the volume: its i slices are 0\.\.9"),
])
def test_annotations_from_labelmap_outside(ref, match):
    with pytest.raises(InputError, match=match):
        annotations_from_labelmap(labelmap(), [(0, 1), ref])


def test_annotations_from_labelmap_other_grid():
    lab = labelmap()
    moved = Volume(lab.array, lab.spacing, (1.0, 2.0, 4.0))
    with pytest.raises(InputError, match="geometry"):
        annotations_from_labelmap(moved, [(0, 1)], like=lab)


def test_check_annotation_set_sorts_and_merges():
    lab = labelmap()
    anns = annotations_from_labelmap(lab, [(2, 4), (0, 3), (1, 1), (0, 1)])
    again = annotations_from_labelmap(lab, [(0, 3)])
    out = check_annotation_set(lab, anns + again, n_classes=3)
    assert [a.name for a in out] == ["k1", "k3", "j1", "i4"]  # crossing slices of one labelmap always agree


@pytest.mark.parametrize("make, match", [
    (lambda lab: [], "no annotated slice"),
    (lambda lab: [Annotation(1, 8, lab.array[:, 0])], r"j8 is outside the volume: its j slices are 0\.\.7"),
    (lambda lab: [Annotation(1, 2, lab.array[2])],
     r"slice j2 has shape \(8, 10\); the volume's j slices have shape \(6, 10\)"),
    (lambda lab: [Annotation(0, 2, lab.array[2].astype(float))], "labels must be integers"),
    (lambda lab: [Annotation(0, 2, lab.array[2]), Annotation(0, 2, lab.array[3])], "k2 is annotated twice"),
    (lambda lab: [Annotation(0, 2, lab.array[2] * 2)], r"label value\(s\) 4 that the model has no class for"),
    (lambda lab: [Annotation(0, 2, np.zeros((8, 10), np.uint8)), Annotation(2, 0, np.zeros((6, 8), np.uint8))],
     "k2, i0 contain no foreground"),
])
def test_check_annotation_set_errors(make, match):
    lab = labelmap()
    with pytest.raises(InputError, match=match):
        check_annotation_set(lab, make(lab), n_classes=3, class_names=["background", "bone", "teeth"])


def test_crossing_slices_that_disagree():
    lab = labelmap()
    k4, j6 = lab.array[4].copy(), lab.array[:, 6].copy()
    j6[4, [1, 7, 8]] = (j6[4, [1, 7, 8]] + 1) % 3  # 3 voxels of the shared line (k=4, j=6, i=*) differ
    ok = [Annotation(0, 4, k4), Annotation(1, 6, lab.array[:, 6].copy())]
    assert len(check_annotation_set(lab, ok, 3)) == 2
    with pytest.raises(InputError, match=r"slices k4 and j6 cross and disagree on 3 voxel\(s\) of the line "
                                         r"\(k=4, j=6, i=0\.\.9\)"):
        check_annotation_set(lab, [Annotation(1, 6, j6), Annotation(0, 4, k4)], 3)
    i2 = lab.array[:, :, 2].copy()
    i2[1, 5] = (i2[1, 5] + 1) % 3  # voxel (k=1, j=5, i=2): on the line shared with j5, not with k4
    assert len(check_annotation_set(lab, [Annotation(0, 4, k4), Annotation(2, 2, i2)], 3)) == 2
    with pytest.raises(InputError, match=r"slices j5 and i2 cross and disagree on 1 voxel\(s\) of the line "
                                         r"\(k=0\.\.5, j=5, i=2\)"):
        check_annotation_set(lab, [Annotation(2, 2, i2), Annotation(1, 5, lab.array[:, 5].copy())], 3)


def test_paste_annotations_each_axis():
    lab = labelmap()
    anns = annotations_from_labelmap(lab, [(0, 0), (1, 7), (2, 3)])
    out = np.full(SHAPE, 7, np.uint8)
    paste_annotations(out, anns)
    np.testing.assert_array_equal(out[0], lab.array[0])
    np.testing.assert_array_equal(out[:, 7], lab.array[:, 7])
    np.testing.assert_array_equal(out[:, :, 3], lab.array[:, :, 3])
    mask = np.ones(SHAPE, bool)
    mask[0], mask[:, 7], mask[:, :, 3] = False, False, False
    assert np.all(out[mask] == 7)  # nothing else touched
