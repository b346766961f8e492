"""scripts/bench_gpu_paper_size.py at a tiny size on the CPU: it runs end to end, and its MONAI baseline is faithful."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from _helpers_scripts import load_script


def _script():
    return load_script("bench_gpu_paper_size")


def test_volume_is_uint16_kji_and_mirrored_past_its_tile() -> None:
    bench = _script()
    array = bench.make_volume((7, 300, 130))  # I, J, K
    assert array.shape == (130, 300, 7) and array.dtype == np.uint16
    assert array.max() > 40000 and array.min() >= 5000  # above int16: exercises the uint16 path
    assert np.array_equal(array[96:130], array[95:61:-1])  # slices past the 96-slice tile mirror it
    assert np.array_equal(array[:, 256:300], array[:, 255:211:-1])


@pytest.mark.slow
def test_tiny_run_writes_every_figure_and_monai_agrees(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("monai")
    bench = _script()
    out = tmp_path / "bench.json"
    # slices the size of the tiny model's 64-px tile: one window each, so MONAI must give the same labels
    report = bench.main(["--model", str(tiny_model_dir), "--device", "cpu", "--shape", "64", "64", "5",
                         "--monai-sw-batch", "3", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    methods = [r["method"] for r in report["results"]]
    assert methods == ["predict_labels (pipelined, no clean-up)", "MONAI SliceInferer (same network)",
                       "predict_labels (plain, no clean-up)", "predict_labels (pipelined, with clean-up)"]
    rows = {r["method"]: r for r in report["results"]}
    assert rows["MONAI SliceInferer (same network)"]["agreement_with_pipelined"] >= 0.999
    assert rows["predict_labels (plain, no clean-up)"]["agreement_with_pipelined"] == 1.0
    assert all(r["seconds"] > 0 and r["slices_per_s"] > 0 for r in report["results"])
    assert report["volume"]["array_shape_kji"] == [5, 64, 64] and report["device"] == "cpu"
    assert report["speedup_vs_monai"] > 0 and report["date"] and report["hardware"]["monai"]
    assert "--shape 64 64 5" in report["command"]


class _Neighbours(nn.Module):
    """A toy 2.5D model whose labels depend on the slices above and below (so a wrong context would show)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, :] = torch.tensor([-0.8, 1.0, 0.6])[:, None, None] / 9

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv(x) - 0.3
        return torch.cat([-s, s], dim=1) * 20


@pytest.mark.parametrize("shape,expected", [((64, 64, 6), 0.9999), ((150, 40, 4), 0.998)])
def test_monai_baseline_sees_the_same_2_5d_input_as_the_engine(shape, expected: float) -> None:
    """Slices of one tile: the same labels; wider than a tile: MONAI places windows a little differently."""
    pytest.importorskip("monai")
    from fossilsegment_engine.inference.predictor import Predictor
    from fossilsegment_engine.models.config import ModelConfig
    from fossilsegment_engine.volume import Volume

    bench = _script()
    array = bench.make_volume(shape)
    config = ModelConfig(name="toy", arch="unet", arch_options={"encoder_depth": 3}, context_slices=3,
                         tile_size=64, tile_overlap=16)
    seg = Predictor.from_module(_Neighbours(), config, device="cpu", batch_size=3, precision="fp32")
    ours = seg.predict_labels(Volume(array), postprocess=None).array
    theirs = bench.monai_segment(seg, array, sw_batch=4, slab=2)
    assert theirs.shape == ours.shape and theirs.dtype == np.uint8
    assert 0.2 < ours.mean() < 0.8
    assert (theirs == ours).mean() >= expected
