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
    assert main(["train", "--data", str(data), "-o", str(model), "--teeth", *TINY_ARGS]) == 0
    config = json.loads((model / "config.json").read_text())
    assert [c["name"] for c in config["classes"]] == ["Background", "Bone", "Tooth"]
    assert config["provenance"]["training_command"].startswith("fossilsegment ")
    report = tmp_path / "report"
    assert main(["evaluate", "--model", str(model), "--data", str(data), "--baselines", "-o", str(report),
                 "--device", "cpu"]) == 0
    assert "| Model |" in capsys.readouterr().out
    assert (report / "figure.png").stat().st_size > 0
    # labels with a Tooth value for a Bone-only model: error exit, nothing written
    assert main(["train", "--data", str(data), "-o", str(tmp_path / "m2"), *TINY_ARGS]) == 2
    assert not (tmp_path / "m2").exists()


def test_train_init_from_starts_at_the_parent_weights(tmp_path: Path) -> None:
    """--init-from: the parent's architecture and weights, a fresh run, provenance naming the parent."""
    import torch

    from fossilsegment_engine.models import load_model

    data = write_dataset(tmp_path / "data", n=3, teeth=True)
    parent = tmp_path / "parent"
    assert main(["train", "--data", str(data), "-o", str(parent), "--teeth", *TINY_ARGS]) == 0
    child = tmp_path / "child"
    run = ["--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--crop", "64", "--threads", "1",
           "--device", "cpu", "--val-max-slices", "4"]
    # lr ≈ 0: the child's weights stay the parent's (BatchNorm statistics aside), so the init really loaded
    assert main(["train", "--data", str(data), "-o", str(child), "--init-from", str(parent),
                 "--lr", "1e-12", *run]) == 0
    p_model, p_cfg = load_model(parent)
    c_model, c_cfg = load_model(child)
    assert (c_cfg.arch, c_cfg.arch_options, c_cfg.class_names) == (p_cfg.arch, p_cfg.arch_options, p_cfg.class_names)
    assert c_cfg.arch_options == {"encoder": "tu-resnet10t", "encoder_depth": 3, "decoder_channels": 8}
    p_state, c_state = p_model.state_dict(), c_model.state_dict()
    weights = [k for k in p_state if k.endswith("weight") and p_state[k].ndim == 4]
    assert weights and all(torch.allclose(p_state[k], c_state[k], atol=1e-6) for k in weights)
    init = c_cfg.provenance["initialised_from"]
    assert init["name"] == p_cfg.name and init["weights_sha256"] == p_cfg.weights_sha256
    # a random start differs from the parent: the test above can fail
    fresh = tmp_path / "fresh"
    assert main(["train", "--data", str(data), "-o", str(fresh), "--teeth", *TINY_ARGS[:8], "--lr", "1e-12",
                 *run]) == 0
    f_state = load_model(fresh)[0].state_dict()
    assert not all(torch.allclose(p_state[k], f_state[k], atol=1e-6) for k in weights)


def test_train_init_from_refuses_conflicting_architecture(tmp_path: Path, capsys) -> None:
    data = write_dataset(tmp_path / "data", n=3, teeth=True)
    parent = tmp_path / "parent"
    assert main(["train", "--data", str(data), "-o", str(parent), "--teeth", *TINY_ARGS]) == 0
    capsys.readouterr()
    child = tmp_path / "child"
    assert main(["train", "--data", str(data), "-o", str(child), "--init-from", str(parent),
                 "--encoder-depth", "4", "--epochs", "1"]) == 2
    assert "encoder_depth 4 conflicts with init_from" in capsys.readouterr().err
    assert not child.exists()
    assert main(["train", "--data", str(data), "-o", str(child), "--init-from", str(tmp_path / "nope"),
                 "--epochs", "1"]) == 2
    assert not child.exists()
