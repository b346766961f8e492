"""Foreground logit-offset calibration: the decision rule, folding into the head, the search, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from _helpers_training import write_dataset
from fossilsegment_engine.cli import main
from fossilsegment_engine.errors import InputError
from fossilsegment_engine.training.calibrate import calibrate, labels_with_offset, with_foreground_bias


def test_offset_moves_only_the_fossil_background_boundary() -> None:
    probs = np.array([[0.6, 0.2, 0.35, 0.9],   # background
                      [0.3, 0.7, 0.25, 0.04],  # bone
                      [0.1, 0.1, 0.4, 0.06]], np.float32)  # tooth
    assert labels_with_offset(probs, 0.0).tolist() == [0, 1, 2, 0]
    assert labels_with_offset(probs, np.log(0.6 / 0.3) + 0.01).tolist() == [1, 1, 2, 0]
    assert labels_with_offset(probs, 5.0).tolist() == [1, 1, 2, 2]  # the fossil class stays the likelier one
    assert labels_with_offset(probs, -5.0).tolist() == [0, 0, 0, 0]


def test_folded_offset_adds_to_the_foreground_logits(tiny_model_dir: Path) -> None:
    from fossilsegment_engine.models import load_model

    model, _ = load_model(tiny_model_dir)
    shifted = with_foreground_bias(model, 0.75)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        a, b = model(x), shifted(x)
    assert torch.allclose(b[:, 0], a[:, 0], atol=1e-5) and torch.allclose(b[:, 1:], a[:, 1:] + 0.75, atol=1e-5)
    assert model.segmentation_head[0].bias is not shifted.segmentation_head[0].bias  # the original is untouched


class CautiousSegmenter:
    """Fossil probability 0.3 on the bright disc, 0.1 elsewhere: argmax finds nothing, an offset in
    (ln 0.7/0.3, ln 0.9/0.1) = (0.85, 2.20) finds exactly the disc."""

    classes = [{"name": "Background", "value": 0}, {"name": "Bone", "value": 1}]

    def predict_probabilities(self, volume, cancel=None, postprocess=None):
        from fossilsegment_engine.inference.predictor import Prediction
        from fossilsegment_engine.volume import Volume

        p1 = np.where(volume.array > 1200, 0.3, 0.1).astype(np.float32)
        probs = [Volume(np.rint(255 * (1 - p1)).astype(np.uint8)), Volume(np.rint(255 * p1).astype(np.uint8))]
        return Prediction(probs[1], probs)


def test_search_finds_the_offset_that_recovers_the_fossil(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n=2)
    seen = []
    result = calibrate(CautiousSegmenter(), [data], progress=lambda d, t: seen.append((d, t)))
    assert 0.85 < result.offset < 2.2 and result.scores[result.offset] > 0.9 and result.scores[0.0] == 0.0
    assert result.specimens == ["spec0", "spec1"] and seen[-1] == (2, 2)
    assert json.dumps(result.to_json())
    only = calibrate(CautiousSegmenter(), [data], names=["spec1"], offsets=[0.0, 1.0])
    assert only.specimens == ["spec1"] and only.offset == 1.0
    with pytest.raises(InputError, match="not found"):
        calibrate(CautiousSegmenter(), [data], names=["nope"])


def test_cli_writes_a_calibrated_copy_and_refuses_bad_input(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    from fossilsegment_engine.models import load_model

    data = write_dataset(tmp_path / "data", n=2)
    out = tmp_path / "calibrated"
    args = ["tune-threshold", "--model", str(tiny_model_dir), "--data", str(data), "--device", "cpu"]
    assert main(args + ["-o", str(out), "--offsets=-1,0,1"]) == 0
    assert "<- chosen" in capsys.readouterr().out
    parent, _ = load_model(tiny_model_dir)
    child, config = load_model(out)
    cal = config.provenance["calibration"]
    offset = cal["foreground_logit_offset"]
    assert offset in (-1.0, 0.0, 1.0) and cal["parent"]["name"] == "tiny-test-unet"
    assert set(cal["fossil_mean_dice_by_offset"]) == {"-1.00", "+0.00", "+1.00"}
    pb, cb = parent.segmentation_head[0].bias, child.segmentation_head[0].bias
    assert torch.allclose(cb[1:], pb[1:] + offset) and torch.allclose(cb[0], pb[0])
    # bad input: one clear error, exit 2, nothing written
    assert main(args + ["-o", str(out), "--offsets=-1,0,1"]) == 2  # exists
    assert main(args + ["-o", str(tmp_path / "a"), "--offsets", "x"]) == 2
    assert main(args + ["-o", str(tmp_path / "b"), "--validation-split"]) == 2
    assert "validation specimens" in capsys.readouterr().err
    assert main(["tune-threshold", "--model", str(tiny_model_dir), "--data", str(tmp_path / "empty"), "--device", "cpu",
                 "-o", str(tmp_path / "c")]) == 2
    assert not any((tmp_path / n).exists() for n in ("a", "b", "c"))
