"""Predictor: geometry, progress, cancel, slice range, batch-size invariance, 2.5D context, OOM handling."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fossilsegment_engine.errors import Cancelled, FossilSegmentError, InputError
from fossilsegment_engine.inference.postprocess import PostprocessOptions
from fossilsegment_engine.inference.pipelined import PipelinedPredictor
from fossilsegment_engine.inference.predictor import Predictor
from fossilsegment_engine.models.config import ModelConfig
from fossilsegment_engine.volume import Volume

OBLIQUE = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


class Threshold(nn.Module):
    """A toy 'trained' model: bone where the 3x3-smoothed centre slice is brighter than 0.5."""

    def __init__(self, context: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(context, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, context // 2] = 1 / 9
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        s = self.conv(x) - 0.5
        return torch.cat([-s, s], dim=1) * 20


def _config(context: int = 1, tile: int = 64) -> ModelConfig:
    return ModelConfig(name="toy", arch="unet", arch_options={"encoder_depth": 3}, context_slices=context,
                       tile_size=tile, tile_overlap=8)


def _segmenter(context: int = 1, batch_size: int | None = None, pipelined: bool = False, tile: int = 64,
               **kw) -> Predictor:
    cls = PipelinedPredictor if pipelined else Predictor
    return cls.from_module(Threshold(context), _config(context, tile), device="cpu", batch_size=batch_size, **kw)


def _scan(shape=(12, 40, 56), seed=0) -> tuple[Volume, np.ndarray]:
    rng = np.random.default_rng(seed)
    k, j, i = np.indices(shape)
    ball = (k - 6) ** 2 / 20 + (j - 20) ** 2 / 150 + (i - 28) ** 2 / 300 < 1
    array = (1000 + 1000 * ball + rng.normal(0, 40, shape)).astype(np.int16)
    array.flags.writeable = False  # any write to the input fails loudly
    return Volume(array, spacing=(0.5, 0.6, 0.7), origin=(1.0, -2.0, 3.0), direction=OBLIQUE, meta={"a": 1}), ball


def test_labelmap_has_input_geometry_and_finds_the_bone() -> None:
    vol, truth = _scan()
    before = vol.array.copy()
    seg = _segmenter()
    out = seg.predict_labels(vol)
    assert out.array.dtype == np.uint8 and out.shape == vol.shape and out.same_geometry(vol)
    assert out.meta["a"] == 1 and out.meta["model"] == "toy"
    assert set(np.unique(out.array)) <= {0, 1}
    assert (out.array.astype(bool) == truth).mean() > 0.98
    assert np.array_equal(vol.array, before)
    assert seg.device == torch.device("cpu") and seg.classes[1]["name"] == "Bone"


def test_slices_larger_than_a_tile_are_tiled_unless_one_fits_in_a_batch_of_tiles() -> None:
    vol, truth = _scan()  # 40 × 56 slices, 32-px tiles: 2240 pixels > one tile (1024)
    tiled_seg = _segmenter(batch_size=2, tile=32)  # room for 2 tiles (2048 pixels) per call: tiled
    tiled = tiled_seg.predict_labels(vol).array
    assert {shape[-2:] for shape in tiled_seg._module.calls} == {(32, 32)}
    assert {shape[0] for shape in tiled_seg._module.calls} == {2}
    whole_seg = _segmenter(batch_size=5, tile=32)  # room for 5 tiles (5120 pixels): 2 whole slices a call
    whole = whole_seg.predict_labels(vol).array
    assert {shape[-2:] for shape in whole_seg._module.calls} == {(40, 56)}
    assert max(shape[0] for shape in whole_seg._module.calls) == 2
    assert (whole.astype(bool) == truth).mean() > 0.98
    assert (whole == tiled).mean() > 0.995  # the same labels but where the tiles' borders were blended


def test_progress_is_increasing_and_ends_at_total() -> None:
    vol, _ = _scan()
    seen: list[tuple[int, int]] = []
    _segmenter(batch_size=5).predict_labels(vol, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(5, 12), (10, 12), (12, 12)]


def test_cancel_from_progress_raises_cancelled_after_the_first_batch() -> None:
    vol, _ = _scan()
    token = threading.Event()
    seg = _segmenter(batch_size=4)
    calls: list[int] = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        token.set()

    with pytest.raises(Cancelled):
        seg.predict_labels(vol, progress=progress, cancel=token)
    assert calls == [4]
    assert len(seg._module.calls) == 1  # one batch of 4 slices (40x56, one 64-px tile each); nothing more ran


def test_cancel_during_the_last_batch_still_raises() -> None:
    vol, _ = _scan()
    token = threading.Event()
    with pytest.raises(Cancelled):
        _segmenter(batch_size=12).predict_labels(vol, progress=lambda d, t: token.set(), cancel=token)


def test_slice_range_zeroes_the_other_slices_and_matches_the_full_run() -> None:
    vol, _ = _scan()
    seg = _segmenter(batch_size=3)
    full = seg.predict_labels(vol, postprocess=None).array
    part = seg.predict_labels(vol, slice_range=(4, 9), postprocess=None).array
    assert not part[:4].any() and not part[9:].any()
    assert np.array_equal(part[4:9], full[4:9]) and part[4:9].any()


@pytest.mark.parametrize("context", [1, 3, 5])
def test_batch_size_does_not_change_the_result(context: int) -> None:
    vol, _ = _scan()
    results = [_segmenter(context, batch_size=b).predict_labels(vol).array for b in (1, 5, None)]
    assert results[0].any()
    assert np.array_equal(results[0], results[1]) and np.array_equal(results[0], results[2])


def test_context_model_sees_neighbouring_slices() -> None:
    vol, _ = _scan()
    seg = _segmenter(context=3, batch_size=2)
    seg.predict_labels(vol, postprocess=None)
    assert {shape[1] for shape in seg._module.calls} == {3}


def test_postprocess_removes_islands_and_fills_cavities() -> None:
    array = np.zeros((10, 32, 32), np.float32)
    array[2:8, 6:26, 6:26] = 1.0
    array[4:6, 13:19, 13:19] = 0.0  # enclosed cavity
    array[4:7, 1:5, 27:31] = 1.0  # a speck: 3 slices x 12 pixels after the 3x3 filter
    vol = Volume(array)
    raw = _segmenter().predict_labels(vol, postprocess=None).array
    clean = _segmenter().predict_labels(vol, postprocess=PostprocessOptions(min_island_voxels=50)).array
    assert raw[:, :6, 26:].sum() == 36 and not clean[:, :6, 26:].any()
    assert not raw[4:6, 14:18, 14:18].any() and clean[4:6, 14:18, 14:18].all()
    assert (clean[:, 6:26, 6:26] >= raw[:, 6:26, 6:26]).all()


def test_probabilities_are_returned_per_class() -> None:
    vol, _ = _scan()
    prediction = _segmenter().predict_probabilities(vol, postprocess=None)
    labels, probs = prediction.labels, prediction.probabilities
    assert len(probs) == 2 and all(p.array.dtype == np.uint8 and p.same_geometry(vol) for p in probs)
    total = probs[0].array.astype(int) + probs[1].array.astype(int)
    assert np.abs(total - 255).max() <= 1
    assert np.array_equal(labels.array == 1, probs[1].array > probs[0].array)


def test_bf16_precision_runs_and_mostly_agrees() -> None:
    vol, _ = _scan()
    fp32 = _segmenter().predict_labels(vol).array
    bf16 = _segmenter(precision="bf16").predict_labels(vol).array
    assert (fp32 == bf16).mean() > 0.99


class _OomAbove(Threshold):
    """Raises out-of-memory for batches larger than ``limit`` (or any batch off the CPU)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise RuntimeError("CUDNN_STATUS_ALLOC_FAILED")  # the other way a GPU reports it
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("fake OOM")
        return super().forward(x)


def test_out_of_memory_halves_the_batch_with_the_same_result() -> None:
    vol, _ = _scan()
    expected = _segmenter(batch_size=1).predict_labels(vol).array
    seg = Predictor.from_module(_OomAbove(2), _config(), device="cpu", batch_size=8)
    assert np.array_equal(seg.predict_labels(vol).array, expected)
    assert max(shape[0] for shape in seg._module.calls) == 2


def test_out_of_memory_at_one_slice_on_cpu_is_a_clear_error() -> None:
    vol, _ = _scan()
    seg = Predictor.from_module(_OomAbove(0), _config(), device="cpu", batch_size=2)
    with pytest.raises(FossilSegmentError, match="out of memory on the CPU"):
        seg.predict_labels(vol)


def test_out_of_memory_off_the_cpu_falls_back_to_the_cpu(caplog: pytest.LogCaptureFixture) -> None:
    vol, _ = _scan()
    expected = _segmenter(batch_size=1).predict_labels(vol).array
    seg = Predictor.from_module(_OomAbove(100), _config(), device="cpu", batch_size=2)
    seg._device = torch.device("meta")  # stand-in for a GPU: every batch there "runs out of memory"
    with caplog.at_level("WARNING"):
        out = seg.predict_labels(vol).array
    assert seg.device == torch.device("cpu") and "continuing on the CPU" in caplog.text
    assert np.array_equal(out, expected)


def test_other_runtime_errors_are_not_taken_for_out_of_memory() -> None:
    class Broken(Threshold):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        Predictor.from_module(Broken(), _config(), device="cpu").predict_labels(_scan()[0])


def test_bad_inputs_are_clear_errors() -> None:
    seg = _segmenter()
    vol, _ = _scan()
    with pytest.raises(InputError, match="slice range"):
        seg.predict_labels(vol, slice_range=(5, 5))
    with pytest.raises(InputError, match="slice range"):
        seg.predict_labels(vol, slice_range=(0, 13))
    with pytest.raises(InputError, match="3D"):
        seg.predict_labels(Volume(np.zeros((4, 4), np.float32)))
    with pytest.raises(InputError, match="3D"):
        seg.predict_labels(Volume(np.zeros((0, 4, 4), np.float32)))
    with pytest.raises(FossilSegmentError, match="batch size"):
        _segmenter(batch_size=0)
    with pytest.raises(FossilSegmentError, match="unknown precision"):
        _segmenter(precision="fp8")


def test_saved_smp_model_loads_once_and_segments(tiny_model_dir: Path) -> None:
    vol, _ = _scan(shape=(5, 37, 70))
    seg = Predictor.load(tiny_model_dir, device="cpu", batch_size=2)
    assert seg.config.name == "tiny-test-unet"
    a = seg.predict_labels(vol)
    b = Predictor.load(tiny_model_dir, device="cpu", batch_size=5).predict_labels(vol)  # batch size: same labels
    assert a.array.dtype == np.uint8 and a.same_geometry(vol)
    assert np.array_equal(a.array, b.array)


def test_cleanup_reports_progress_and_honours_cancel() -> None:
    vol, _ = _scan()
    seg = _segmenter(batch_size=12)
    seen: list[tuple[int, int]] = []
    out = seg.predict_labels(vol, cleanup_progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1] and np.array_equal(out.array, seg.predict_labels(vol).array)
    token = threading.Event()
    with pytest.raises(Cancelled):
        seg.predict_labels(vol, cancel=token, cleanup_progress=lambda d, t: token.set())
