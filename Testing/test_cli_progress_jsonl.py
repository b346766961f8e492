"""``fossilsegment --progress jsonl``: progress as JSON lines on stdout, errors as one JSON line, for programs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fossilsegment_engine.cli import _progress, main
from fossilsegment_engine.io.volume_io import write_volume
from fossilsegment_engine.volume import Volume


@pytest.fixture(autouse=True)
def _bars_again():
    yield
    _progress.set_mode("bar")  # the mode is process-wide: leave the default for other tests


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_segment_reports_phases_as_json_lines(tmp_path, tiny_model_dir, capsys):
    rng = np.random.default_rng(0)
    write_volume(Volume(rng.normal(1000, 300, (5, 24, 24)).astype(np.int16), (1, 1, 1), (0, 0, 0),
                        (1, 0, 0, 0, 1, 0, 0, 0, 1)), tmp_path / "scan.nrrd")
    rc = main(["--progress", "jsonl", "segment", str(tmp_path / "scan.nrrd"), "--labelmap", str(tmp_path / "l.nrrd"),
               "--model", str(tiny_model_dir), "--device", "cpu", "--batch-size", "2"])
    out = capsys.readouterr()
    assert rc == 0 and (tmp_path / "l.nrrd").exists()
    records = lines(out.out)
    segmenting = [(r["done"], r["total"]) for r in records if r.get("phase") == "segmenting"]
    assert segmenting and segmenting[-1] == (5, 5) and segmenting == sorted(segmenting)
    assert all(set(r) == {"phase", "done", "total"} for r in records)
    assert "segmenting" not in out.err  # no tqdm bars in this mode


def test_user_error_is_one_json_line_and_exit_2(tmp_path, capsys):
    rc = main(["--progress", "jsonl", "segment", str(tmp_path / "missing.nrrd"), "--labelmap", str(tmp_path / "l.nrrd")])
    out = capsys.readouterr()
    records = lines(out.out)
    assert rc == 2 and len(records) == 1 and "missing.nrrd" in records[0]["error"]
    assert records[0]["error"] in out.err and not (tmp_path / "l.nrrd").exists()


def test_default_mode_prints_no_json(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "missing.nrrd"), "--labelmap", str(tmp_path / "l.nrrd")]) == 2
    assert capsys.readouterr().out == ""
