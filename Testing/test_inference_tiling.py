"""Tiled prediction with Gaussian blending: matches whole-slice prediction, any slice size, padding rules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fossilsegment_engine.inference.slice_inferer import SliceInferer
from fossilsegment_engine.inference.tiling import gaussian_window, predict_tiled, tile_starts


def _pointwise() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 1), nn.ReLU(), nn.Conv2d(4, 3, 1)).eval()


def _conv() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 3, 3, padding=1)).eval()


class _Recorder(nn.Module):
    """Wraps a model and records the window shapes it receives."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.shapes = inner, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape[-2:]))
        return self.inner(x)


@pytest.mark.parametrize("hw", [(37, 53), (100, 70), (130, 129), (5, 5), (1, 200)])
@torch.inference_mode()
def test_pointwise_model_is_reproduced_exactly_at_any_size(hw: tuple[int, int]) -> None:
    model = _pointwise()
    rec = _Recorder(model)
    x = torch.rand(2, 2, *hw)
    out = predict_tiled(rec, x, tile_size=32, tile_overlap=8, multiple=16)
    assert out.shape == (2, 3, *hw) and out.dtype == torch.float32
    assert torch.allclose(out, model(x), atol=1e-5)
    assert all(h % 16 == 0 and w % 16 == 0 and h <= 32 and w <= 32 for h, w in rec.shapes)


@torch.inference_mode()
def test_tiled_conv_net_matches_whole_slice_prediction() -> None:
    model = _conv()
    x = torch.rand(3, 2, 150, 110)
    whole = model(x)
    rec = _Recorder(model)
    tiled = predict_tiled(rec, x, tile_size=64, tile_overlap=16, multiple=32)
    assert len(rec.shapes) > 4  # really tiled
    scale = whole.abs().max()
    assert (tiled - whole).abs().max() < 0.01 * scale
    assert (tiled.argmax(1) == whole.argmax(1)).float().mean() > 0.999


@torch.inference_mode()
def test_without_overlap_blending_is_worse_than_with_it() -> None:
    """Guards the blending itself: zero overlap leaves seams, overlap removes most of the error."""
    model = _conv()
    x = torch.rand(1, 2, 128, 128)
    whole = model(x)
    err0 = (predict_tiled(model, x, 32, 0, 32) - whole).abs().max()
    err16 = (predict_tiled(model, x, 32, 12, 32) - whole).abs().max()
    assert err16 < err0 / 5


@torch.inference_mode()
def test_small_slice_is_one_padded_tile_cropped_back() -> None:
    rec = _Recorder(_pointwise())
    out = predict_tiled(rec, torch.rand(1, 2, 37, 53), tile_size=512, tile_overlap=64, multiple=32)
    assert rec.shapes == [(64, 64)] and out.shape == (1, 3, 37, 53)


@torch.inference_mode()
def test_no_tile_size_means_whole_slices_and_fraction_overlap_is_accepted() -> None:
    rec = _Recorder(_pointwise())
    predict_tiled(rec, torch.rand(1, 2, 70, 90), tile_size=None, multiple=32)
    assert rec.shapes == [(96, 96)]
    rec.shapes.clear()
    predict_tiled(rec, torch.rand(1, 2, 70, 90), tile_size=32, tile_overlap=0.5, multiple=32)
    assert len(rec.shapes) == 4 * 5  # ceil((70-32)/16)+1 rows, ceil((90-32)/16)+1 columns


def test_output_device_and_bad_batch() -> None:
    out = predict_tiled(_pointwise(), torch.rand(1, 2, 40, 40), 32, 8, 8, output_device="cpu")
    assert out.device.type == "cpu"
    with pytest.raises(ValueError, match="N, C, H, W"):
        predict_tiled(_pointwise(), torch.rand(2, 40, 40), 32, 8, 8)


@pytest.mark.parametrize("length,tile,overlap", [(100, 32, 8), (64, 32, 0), (33, 32, 31), (1900, 512, 64), (32, 32, 8)])
def test_tile_starts_cover_with_the_overlap(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] == max(0, length - tile)
    assert all(0 < b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_gaussian_window_peaks_in_the_middle_and_stays_positive() -> None:
    w = gaussian_window(32, 48)
    assert w.shape == (32, 48) and float(w.min()) > 0 and torch.allclose(w[0] / w[0, 24], w[16] / w[16, 24])
    assert float(w[15:17, 23:25].min()) > 0.98 and float(w[0, 0]) < 0.01


@pytest.mark.parametrize("height, width, batch, whole, slices", [
    (1000, 1000, 4, True, 1),     # 1024² padded = 4 tiles of 512²: one whole slice a call
    (1000, 1000, 1, False, 1),    # room for one tile only: tiled
    (1731, 1362, 4, False, 4),    # the paper's largest slices exceed 4 tiles: tiled
    (600, 400, 4, True, 4),       # 608 × 416 < one tile's pixels, but 600 > 512 rows: whole, 4 a call
    (300, 300, 4, False, 4),      # fits one tile: unchanged
    (512, 2000, 4, True, 1),      # a long thin slice: 512 × 2016 ≤ 4 tiles
])
def test_fit_to_slices_reads_whole_slices_only_within_a_batch_of_tiles(height: int, width: int, batch: int,
                                                                       whole: bool, slices: int) -> None:
    inferer = SliceInferer(context=3, tile_size=512, tile_overlap=64, multiple=32)
    fitted, n = inferer.fit_to_slices(height, width, batch)
    assert (fitted.tile_size is None) == whole and n == slices
    assert fitted.context == 3 and fitted.multiple == 32
    assert SliceInferer(3, None, 0, 32).fit_to_slices(height, width, batch)[1] == batch  # untiled model: as is
