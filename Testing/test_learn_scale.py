"""learn at scale (issue 13 item 3): results independent of the slab size, bounded reads, memory-mapped input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fossilsegment_engine.finetune import classify, learn
from fossilsegment_engine.finetune.annotations import annotations_from_labelmap
from fossilsegment_engine.finetune.learn import learn_and_segment
from fossilsegment_engine.inference import normalize
from fossilsegment_engine.mapped_pages import is_memory_mapped
from test_learn_method import _bright_blob_volume, _options

#: axial, coronal (j) and sagittal (i) corrected slices, so every kind of prior and training row is used
REFS = [(0, 4), (0, 12), (0, 20), (1, 20), (1, 30), (2, 22)]


@pytest.fixture
def parent_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Classify with the parent network (no fine-tuning): these tests are about the slab-wise pass."""
    monkeypatch.setattr(learn, "_finetune_minutes", lambda *a: -0.02)


def test_result_does_not_depend_on_the_slab_size_or_a_memory_mapped_input(tiny_model_dir, parent_only, monkeypatch,
                                                                           tmp_path: Path) -> None:
    vol, lab = _bright_blob_volume()
    path = tmp_path / "vol.raw"
    vol.array.tofile(path)
    mapped = vol.with_array(np.memmap(path, dtype=vol.array.dtype, mode="r", shape=vol.shape))
    assert is_memory_mapped(mapped.array)
    anns = annotations_from_labelmap(lab, REFS)
    plane = vol.shape[1] * vol.shape[2]
    results = []
    # slices per slab; voxels per call of the trees; the input (its pages handed back after each slab when mapped)
    for slab, chunk, volume in ((1, 10**6, vol), (5, 777, mapped), (32, 10**6, vol)):
        monkeypatch.setattr(learn, "SLAB_VOXELS", slab * plane)
        monkeypatch.setattr(classify, "PREDICT_VOXELS", chunk)
        assert learn._slab_size(vol.shape) == min(slab, 32)
        results.append(learn_and_segment(volume, anns, model=tiny_model_dir, options=_options()).labels.array)
    assert 0 < np.count_nonzero(results[0]) < results[0].size
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_training_reads_only_the_annotated_and_sampled_rows(tiny_model_dir, parent_only, monkeypatch) -> None:
    """A J/I slice's training voxels come from TRAINING_ROWS evenly spread axial slices, not the whole volume."""
    monkeypatch.setattr(learn, "TRAINING_ROWS", 4)
    read: list[tuple[int, int]] = []
    real = learn._training_set

    def spy(array, *args, **kwargs):
        monkeypatch.setattr(learn, "_slab_features",
                            lambda a, k0, k1, net, *rest: read.append((k0, k1)) or base(a, k0, k1, net, *rest))
        try:
            return real(array, *args, **kwargs)
        finally:
            monkeypatch.setattr(learn, "_slab_features", base)

    base = learn._slab_features
    monkeypatch.setattr(learn, "_training_set", spy)
    vol, lab = _bright_blob_volume()
    res = learn_and_segment(vol, annotations_from_labelmap(lab, REFS), model=tiny_model_dir, options=_options())
    rows = learn.training_rows(vol.shape[0])
    assert list(rows) == [0, 8, 15, 23]
    assert sorted(read) == [(k, k + 1) for k in sorted({4, 12, 20, *rows.tolist()})]
    assert res.report["training_voxels"] == 3 * 48 * 48 + 3 * 4 * 48  # whole axial slices; J/I slices: 4 rows
    for axis, index in REFS:  # the corrected slices are still copied unchanged
        np.testing.assert_array_equal(np.take(res.labels.array, index, axis=axis), np.take(lab.array, index, axis=axis))


@pytest.mark.parametrize("shape", [(24, 48, 48), (7, 33, 5), (1000,)])
def test_slab_wise_intensity_sample_equals_the_strided_one(shape, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(normalize, "SAMPLE_SLAB_VOXELS", 1000)  # many slabs, whose starts fall between samples
    values = np.random.default_rng(0).integers(0, 4000, size=shape).astype(np.uint16)
    path = tmp_path / "v.raw"
    values.tofile(path)
    mapped = np.memmap(path, dtype=np.uint16, mode="r", shape=shape)
    for step in (1, 7, 113):
        want = values.reshape(-1)[::step].astype(np.float64)
        np.testing.assert_array_equal(normalize.strided_sample(mapped, step), want)
        np.testing.assert_array_equal(normalize.strided_sample(values, step), want)
    assert normalize.intensity_range(mapped, max_samples=500) == normalize.intensity_range(values, max_samples=500)
