"""``fossilsegment train`` and ``fossilsegment evaluate`` end to end on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

from _helpers_training import write_dataset
from fossilsegment_engine.cli import main

TINY_ARGS = ["--arch", "unet", "--encoder", "tu-resnet10t", "--encoder-depth", "3", "--decoder-channels", "8",
             "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--crop", "64", "--threads", "1",
             "--device", "cpu", "--val-max-slices", "4"]


def test_train_then_evaluate_cli(tmp_path: Path, capsys) -> None:
    data = write_dataset(tmp_path / "data", n=3, teeth=True)
    model = tmp_path / "model"
    assert main(["train", "--data", str(data), "--out", str(model), "--teeth", *TINY_ARGS]) == 0
    config = json.loads((model / "config.json").read_text())
    assert [c["name"] for c in config["classes"]] == ["Background", "Bone", "Tooth"]
    assert config["provenance"]["training_command"].startswith("fossilsegment ")
    report = tmp_path / "report"
    assert main(["evaluate", "--model", str(model), "--data", str(data), "--baselines", "--out", str(report),
                 "--device", "cpu"]) == 0
    assert "| Model |" in capsys.readouterr().out
    assert (report / "figure.png").stat().st_size > 0
    # labels with a Tooth value for a Bone-only model: error exit, nothing written
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "m2"), *TINY_ARGS]) == 2
    assert not (tmp_path / "m2").exists()
