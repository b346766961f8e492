"""PipelinedPredictor (inference/pipelined.py) and regions of interest in predictions, on the CPU."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from test_inference_segmenter import OBLIQUE, _config, _OomAbove, _scan, _segmenter

from fossilsegment_engine.errors import Cancelled, InputError
from fossilsegment_engine.inference import pipelined
from fossilsegment_engine.inference.context import context_slices
from fossilsegment_engine.inference.normalize import apply_intensity_range
from fossilsegment_engine.inference.pipelined import PipelinedPredictor
from fossilsegment_engine.inference.predictor import Predictor
from fossilsegment_engine.roi import Box
from fossilsegment_engine.volume import Volume


def _as(dtype: type, shape=(12, 40, 56), seed=0) -> Volume:
    """The test scan shifted into ``dtype``'s range (uint16 above 32767, so a sign slip would show)."""
    vol, _ = _scan(shape, seed)
    values = vol.array.astype(np.float64)
    if dtype is np.uint16:
        values = values + 40000
    elif dtype is np.float64:
        values = values / 1000 + np.random.default_rng(1).normal(0, 1e-6, values.shape)
    return Volume(values.astype(dtype), spacing=vol.spacing, origin=vol.origin, direction=OBLIQUE)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.float32, np.float64, np.int32])
@pytest.mark.parametrize("n_context", [1, 3, 5])
def test_device_stacks_equal_the_host_preparation_bitwise(dtype: type, n_context: int) -> None:
    array = _as(dtype).array
    lo, hi = float(np.percentile(array, 1)), float(np.percentile(array, 97))
    for start, stop in ((0, 3), (4, 9), (10, 12)):
        item = pipelined.prepare_batch(array, start, stop, n_context, pin=False)
        assert item.block.shape[0] == min(stop + n_context // 2, 12) - max(start - n_context // 2, 0)  # each slice once
        got = pipelined.device_stacks(item.block, item.rows, lo, hi, item.unsigned16).numpy()
        want = apply_intensity_range(context_slices(array, range(start, stop), n_context), lo, hi)
        assert got.dtype == np.float32 and np.array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.float64])
@pytest.mark.parametrize("context,batch", [(1, 5), (3, 4), (5, 1)])
def test_pipelined_path_gives_exactly_the_plain_labels(dtype: type, context: int, batch: int) -> None:
    vol = _as(dtype)
    plain = _segmenter(context, batch_size=batch).predict_labels(vol, postprocess=None).array
    piped = _segmenter(context, batch_size=batch, pipelined=True).predict_labels(vol, postprocess=None).array
    assert plain.any() and (plain == 0).any()
    assert np.array_equal(piped, plain)


def test_pipelined_smp_model_labels_and_probabilities_equal_the_plain_path(tiny_model_dir: Path) -> None:
    vol = _as(np.uint16, shape=(7, 37, 70))
    plain = Predictor.load(tiny_model_dir, device="cpu", batch_size=3).predict_probabilities(vol)
    lab_a, probs_a = plain.labels, plain.probabilities
    seen: list[tuple[int, int]] = []
    piped = PipelinedPredictor.load(tiny_model_dir, device="cpu", batch_size=3).predict_probabilities(
        vol, progress=lambda d, t: seen.append((d, t)))
    lab_b, probs_b = piped.labels, piped.probabilities
    assert np.array_equal(lab_a.array, lab_b.array)
    assert all(np.array_equal(a.array, b.array) for a, b in zip(probs_a, probs_b))
    assert seen == [(3, 7), (6, 7), (7, 7)]


def test_pipelined_reads_a_memmap_lazily_and_matches(tmp_path: Path) -> None:
    vol = _as(np.uint16)
    mm = np.lib.format.open_memmap(tmp_path / "v.npy", mode="w+", dtype=np.uint16, shape=vol.shape)
    mm[...] = vol.array
    mm.flush()
    ro = np.load(tmp_path / "v.npy", mmap_mode="r")
    out = _segmenter(3, batch_size=4, pipelined=True).predict_labels(vol.with_array(ro), postprocess=None).array
    assert np.array_equal(out, _segmenter(3, batch_size=4).predict_labels(vol, postprocess=None).array)


def test_pipelined_out_of_memory_halves_the_batch_with_the_same_result() -> None:
    vol, _ = _scan()
    expected = _segmenter(batch_size=1).predict_labels(vol).array
    seg = PipelinedPredictor.from_module(_OomAbove(2), _config(), device="cpu", batch_size=8)
    assert np.array_equal(seg.predict_labels(vol).array, expected)
    assert max(shape[0] for shape in seg._module.calls) == 2


def test_pipelined_out_of_memory_off_the_cpu_falls_back_to_the_cpu(caplog: pytest.LogCaptureFixture) -> None:
    vol, _ = _scan()
    expected = _segmenter(batch_size=1).predict_labels(vol).array
    seg = PipelinedPredictor.from_module(_OomAbove(100), _config(), device="cpu", batch_size=4)
    seg._device = torch.device("meta")  # stand-in for a GPU: every batch there "runs out of memory"
    with caplog.at_level("INFO"):
        out = seg.predict_labels(vol).array
    assert seg.device == torch.device("cpu") and "continuing on the CPU" in caplog.text
    assert "retrying with 2" in caplog.text and "retrying with 1" in caplog.text
    assert np.array_equal(out, expected)


def test_out_of_memory_in_the_preparation_thread_is_handled_too(monkeypatch: pytest.MonkeyPatch) -> None:
    vol, _ = _scan()
    expected = _segmenter(3, batch_size=2).predict_labels(vol).array
    real = pipelined.prepare_batch

    def pinned_alloc_fails(source, start, stop, n_context, pin):  # e.g. page-locked memory running out
        if stop - start > 2:
            raise RuntimeError("CUDA error: out of memory")
        return real(source, start, stop, n_context, pin)

    monkeypatch.setattr(pipelined, "prepare_batch", pinned_alloc_fails)
    before = threading.active_count()
    out = _segmenter(3, batch_size=8, pipelined=True).predict_labels(vol).array
    assert np.array_equal(out, expected)
    assert threading.active_count() == before  # every preparation thread was stopped and joined


def test_other_errors_in_the_preparation_thread_propagate(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise ValueError("disk read failed")

    monkeypatch.setattr(pipelined, "prepare_batch", broken)
    with pytest.raises(ValueError, match="disk read failed"):
        _segmenter(batch_size=2, pipelined=True).predict_labels(_scan()[0])


def test_pipelined_cancel_stops_after_the_current_batch() -> None:
    vol, _ = _scan()
    token = threading.Event()
    seg = _segmenter(batch_size=4, pipelined=True)
    before = threading.active_count()
    with pytest.raises(Cancelled):
        seg.predict_labels(vol, progress=lambda d, t: token.set(), cancel=token)
    assert len(seg._module.calls) == 1  # one batch of 4 slices (one tile each)
    assert threading.active_count() == before


# ------------------------------------------------------------------------------------------ region of interest
@pytest.mark.parametrize("pipe", [False, True])
def test_whole_slice_box_equals_the_full_run_there_and_zero_elsewhere(pipe: bool, tiny_model_dir: Path) -> None:
    vol = _as(np.uint16, shape=(9, 37, 70))
    seg = (PipelinedPredictor if pipe else Predictor).load(tiny_model_dir, device="cpu", batch_size=2)
    full = seg.predict_probabilities(vol, postprocess=None)
    full, full_probs = full.labels, full.probabilities
    box = Box(2, 7, 0, 37, 0, 70)
    part = seg.predict_probabilities(vol, postprocess=None, roi=box)
    part, part_probs = part.labels, part.probabilities
    assert np.array_equal(part.array[2:7], full.array[2:7]) and part.array[2:7].any()
    assert not part.array[:2].any() and not part.array[7:].any()
    assert np.array_equal(part_probs[1].array[2:7], full_probs[1].array[2:7]) and not part_probs[1].array[7:].any()
    same = seg.predict_labels(vol, postprocess=None, slice_range=(2, 7)).array
    assert np.array_equal(same, part.array)


@pytest.mark.parametrize("pipe", [False, True])
@pytest.mark.parametrize("box,window", [
    (Box(3, 10, 12, 30, 20, 44), (24, 24)),  # cuts through the bright ball: bone and matrix inside
    (Box(5, 8, 16, 25, 20, 37), (16, 24)),  # all bone: its own intensity range would put half of it in the matrix
])
def test_partial_box_predicts_only_the_box_with_the_whole_volume_range(pipe: bool, box: Box, window) -> None:
    vol, _ = _scan()
    seg = _segmenter(3, batch_size=3, pipelined=pipe)
    full = seg.predict_labels(vol, postprocess=None).array
    seg._module.calls.clear()
    part = seg.predict_labels(vol, postprocess=None, roi=box).array
    outside = np.ones(part.shape, bool)
    outside[box.slices()] = False
    assert not part[outside].any()
    inner = (slice(box.k0, box.k1), slice(box.j0 + 1, box.j1 - 1), slice(box.i0 + 1, box.i1 - 1))  # 3x3 model
    assert part[inner].any()
    assert np.array_equal(part[inner], full[inner])
    assert {shape[-2:] for shape in seg._module.calls} == {window}  # only the box, padded to a multiple of 8


def test_roi_and_slice_range_intersect() -> None:
    vol, _ = _scan()
    seg = _segmenter(batch_size=3)
    seen: list[tuple[int, int]] = []
    out = seg.predict_labels(vol, postprocess=None, roi=Box(2, 9, 0, 40, 10, 50), slice_range=(5, 12),
                      progress=lambda d, t: seen.append((d, t))).array
    alone = seg.predict_labels(vol, postprocess=None, roi=Box(5, 9, 0, 40, 10, 50)).array
    assert np.array_equal(out, alone) and not out[:5].any() and not out[9:].any()
    assert seen == [(3, 4), (4, 4)]


def test_postprocess_stays_inside_the_box() -> None:
    vol, _ = _scan()
    box = Box(2, 10, 5, 35, 8, 50)
    out = _segmenter().predict_labels(vol, roi=box).array
    outside = np.ones(out.shape, bool)
    outside[box.slices()] = False
    assert out[box.slices()].any() and not out[outside].any()


@pytest.mark.parametrize("roi,match", [
    (Box(0, 13, 0, 40, 0, 56), "region of interest k 0..13"),
    (Box(0, 12, 5, 5, 0, 56), "region of interest j 5..5"),
    (Box(0, 12, 0, 40, -1, 56), "region of interest i -1..56"),
    (Box(0, 12, 0, 40, 0.5, 56), "whole voxel indices"),
    ((0, 12, 0, 40, 0, 56), "must be a Box"),
])
def test_bad_boxes_are_clear_errors(roi, match: str) -> None:
    with pytest.raises(InputError, match=match):
        _segmenter().predict_labels(_scan()[0], roi=roi)


def test_box_outside_the_slice_range_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="share no slice"):
        _segmenter().predict_labels(_scan()[0], roi=Box(0, 4, 0, 40, 0, 56), slice_range=(6, 9))

