"""``scripts/reproduce_table2.py`` end to end on tiny data: one variant trained, evaluated, and tabulated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers_training import write_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_table2.py"


@pytest.mark.slow
def test_table2_script_trains_evaluates_and_writes_the_table(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_dataset(root / "train", n=3, teeth=True)
    write_dataset(root / "test_seen", n=1, teeth=True)
    write_dataset(root / "test_heldout", n=1, teeth=True)
    md = tmp_path / "table2.md"
    cmd = [sys.executable, str(SCRIPT), "--data-root", str(root), "--out", str(tmp_path / "runs"), "--variants", "unet",
           "--steps", "2", "--steps-per-epoch", "2", "--batch-size", "2", "--crop", "64", "--device", "cpu",
           "--precision", "fp32", "--threads", "1", "--val-max-slices", "4", "--md", str(md)]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}  # the parent's locale may have been reset to C by a library
    done = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((tmp_path / "runs" / "unet" / "config.json").read_text())
    options = config["provenance"]["training"]["options"]
    assert (options["arch"], options["arch_options"]["encoder"], options["select_class"]) == \
        ("unet", "tu-resnet18", "Bone")
    assert config["arch_options"] == {"encoder": "tu-resnet18", "encoder_depth": 4, "decoder_channels": 16}
    assert options["epochs"] * options["steps_per_epoch"] == 2 and options["precision"] == "fp32"
    report = json.loads((tmp_path / "runs" / "unet_report" / "report.json").read_text())
    seen = report["by_data_dir"][str(root / "test_seen")]["model"]["Bone"]
    rows = [line for line in md.read_text(encoding="utf-8").splitlines() if line.startswith("| U-Net |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1].split(" / ")[0] == f"{seen['mean_dice']:.3f}"  # the table shows the report's figures
    assert float(cells[3]) > 1.0  # parameters (M): U-Net ResNet-18 has millions
    assert "--steps 2" in md.read_text(encoding="utf-8")  # the command (and so the scale-down) is stated next to the table
