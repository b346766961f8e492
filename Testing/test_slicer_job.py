"""InferenceJob: the worker thread the panel uses (no Qt needed), driven the way the widget's QTimer drives it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest.importorskip("slicer")

from fossilsegment_engine.errors import ModelError  # noqa: E402
from fossilsegment_engine.inference.postprocess import PostprocessOptions  # noqa: E402
from fossilsegment_engine.volume import Volume  # noqa: E402
from FossilSegmentLib.job import InferenceJob  # noqa: E402
from FossilSegmentLib.logic import FossilSegmentLogic  # noqa: E402

ARGS = dict(minIslandVoxels=0, fillHoles=False, device="cpu", batchSize=2)


def volume() -> Volume:
    rng = np.random.default_rng(1)
    a = rng.normal(1000, 200, (6, 32, 40))
    a[1:4, 8:20, 10:30] += 2500
    return Volume(a.astype(np.int16), (0.5, 0.6, 1.5), (3.0, -2.0, 7.0), (0, 1, 0, -1, 0, 0, 0, 0, 1))


def drain(job: InferenceJob, timeout: float = 120.0) -> list[tuple]:
    """Poll like the widget's timer until the final message."""
    messages, start = [], time.monotonic()
    while not job.finished:
        assert time.monotonic() - start < timeout, "job did not finish"
        messages += job.poll()
        time.sleep(0.01)
    return messages


def test_job_reports_progress_then_the_engines_labelmap(tiny_model_dir):
    logic = FossilSegmentLogic()
    vol = volume()
    job = InferenceJob(logic, vol, dict(model=str(tiny_model_dir), **ARGS), context={"tag": 1}).start()
    messages = drain(job)
    assert job.join(5)
    kinds = [m[0] for m in messages]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"progress"}
    done = [m[1:] for m in messages[:-1]]
    assert done[-1] == (1000, 1000) and [d for d, _ in done] == sorted(d for d, _ in done)  # one bar (per mille)
    assert job.secondsLeft(0, 6) is None and job.secondsLeft(6, 6) == 0
    segmenter = logic.getSegmenter(str(tiny_model_dir), "cpu", 2)
    expected = segmenter.predict(vol, postprocess=PostprocessOptions(0, False))
    assert np.array_equal(messages[-1][1].array, expected.array)
    assert messages[-1][1].same_geometry(vol)
    assert job.context == {"tag": 1}


def test_cancel_is_final_and_nothing_else_follows(tiny_model_dir):
    logic = FossilSegmentLogic()
    job = InferenceJob(logic, volume(), dict(model=str(tiny_model_dir), **ARGS))
    job.cancel()  # before start: the engine stops at its first check
    messages = drain(job.start())
    assert messages[-1] == ("cancelled",)
    assert job.poll() == []


def test_errors_come_back_with_their_traceback(tmp_path):
    job = InferenceJob(FossilSegmentLogic(), volume(), dict(model=str(tmp_path / "no-model"), **ARGS)).start()
    messages = drain(job)
    kind, exc, text = messages[-1]
    assert kind == "error" and isinstance(exc, ModelError) and "Traceback" in text


def test_job_runs_other_worker_methods(tiny_model_dir):
    """Issue 5: the same worker runs the uncertainty computation (and refuses unknown methods)."""
    logic = FossilSegmentLogic()
    job = InferenceJob(logic, volume(), dict(model=str(tiny_model_dir), device="cpu", method="softmax"),
                       method="runUncertainty").start()
    messages = drain(job)
    assert messages[-1][0] == "done", messages[-1]
    unc = messages[-1][1]
    assert unc.array.dtype == np.float32 and unc.shape == volume().shape
    assert any(m[0] == "progress" for m in messages)
    with pytest.raises(ValueError, match="unknown worker method"):
        InferenceJob(logic, volume(), {}, method="process")
