"""ProcessJob, the panel's engine runner, without Qt or Slicer: fake processes that report progress, fail,
run in sequence, or get cancelled mid-run; and a "main thread" that holds the GIL (as PythonQt does while
Slicer idles in its event loop) while a job runs."""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FossilSegment"))

from FossilSegmentLib.process_job import ProcessJob  # noqa: E402

PY = [sys.executable, "-c"]
REPORT = "import json, sys\ndef report(phase, d, t): print(json.dumps({'phase': phase, 'done': d, 'total': t}), flush=True)\n"


def fake(tmp_path: Path, body: str, *commands: list[str]) -> ProcessJob:
    folder = tmp_path / "job"
    folder.mkdir()
    return ProcessJob(list(commands) or [[]], str(folder), launcher=PY + [REPORT + body])


def test_progress_lines_then_done_and_the_outputs_stay_for_the_caller(tmp_path):
    job = fake(tmp_path, "import time\nfor k in range(5):\n    report('segmenting', k + 1, 5); time.sleep(0.02)\n"
                         "print('a library talking')\nopen('result.txt', 'w').write('ok')\n").start()
    messages = job.wait(timeout=60)
    assert messages[-1] == ("done",) and job.finished and job.result == ("done",)
    assert [m[1:] for m in messages[:-1]] == [("segmenting", k, 5) for k in range(1, 6)]
    assert Path(job.path("result.txt")).read_text() == "ok"
    assert job.poll() == []
    job.cleanup()
    assert not os.path.exists(job.folder)


def test_commands_run_in_order_and_a_failure_stops_the_sequence(tmp_path):
    body = ("step = sys.argv[1]\nopen('order.txt', 'a').write(step)\nreport(step, 1, 1)\n"
            "if step == 'b':\n    print(json.dumps({'error': 'labels.nrrd: no slice 99 in a 6-slice scan'}))\n"
            "    sys.exit(2)\n")
    job = fake(tmp_path, body, ["a"], ["b"], ["c"]).start()
    order = Path(job.path("order.txt"))
    messages = job.wait(timeout=60)
    assert [m[1] for m in messages if m[0] == "progress"] == ["a", "b"]
    assert messages[-1] == ("error", "labels.nrrd: no slice 99 in a 6-slice scan")
    assert not order.exists() and not os.path.exists(job.folder)  # failure: nothing left behind


def test_a_crash_reports_the_last_line_of_stderr(tmp_path):
    job = fake(tmp_path, "raise SystemExit('engine exploded: out of memory')").start()
    assert job.wait(timeout=60)[-1] == ("error", "engine exploded: out of memory")


@pytest.mark.parametrize("ignore_terminate", [False, True])
def test_cancel_mid_run_stops_the_process_and_leaves_no_files(tmp_path, ignore_terminate):
    body = ("import signal, time\n" + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_terminate else "")
            + "open('partial.nrrd', 'w').write('x')\nk = 0\nwhile True:\n    k += 1; report('segmenting', k, 10**6)\n"
              "    time.sleep(0.01)\n")
    job = fake(tmp_path, body).start()
    while not any(m[0] == "progress" for m in job.poll()):
        time.sleep(0.01)
    process = job._process
    start = time.monotonic()
    assert job.cancel(grace=0.5) == [("cancelled",)]
    assert time.monotonic() - start < 5
    assert process.poll() is not None  # really ended (killed after the grace period when it ignores SIGTERM)
    assert not os.path.exists(job.folder)
    assert job.finished and job.poll() == [] and job.cancel() == []


def test_no_command_is_an_error(tmp_path):
    with pytest.raises(ValueError):
        ProcessJob([], str(tmp_path))


# ---------------------------------------------------------------------------------------------- GIL
WORK = ("import numpy as np, time\na = np.random.default_rng(0).random((400, 400))\nn = int(sys.argv[1])\n"
        "for k in range(n):\n    a = np.sqrt(a @ a.T + 1.0); a /= a.max()\n    report('segmenting', k + 1, n)\n")
STEPS = 40
HOLD_SECONDS = 0.1


def hold_gil(seconds: float) -> None:
    """Sleep without releasing the GIL (a ctypes.PyDLL call keeps it), as Slicer's main thread does while idle
    in the Qt event loop with PythonQt's GIL scopes off."""
    ctypes.PyDLL(None).usleep(int(seconds * 1e6))


def numpy_work(n: int) -> None:
    """The fake process's work, in this process."""
    import numpy as np

    a = np.random.default_rng(0).random((400, 400))
    for _ in range(n):
        a = np.sqrt(a @ a.T + 1.0)
        a /= a.max()


def run_job(tmp_path: Path, name: str, wait) -> float:
    folder = tmp_path / name
    folder.mkdir()
    job = ProcessJob([[str(STEPS)]], str(folder), launcher=PY + [REPORT + WORK]).start()
    seen = []
    while not job.finished:
        seen += [m[2] for m in job.poll() if m[0] == "progress"]
        wait()
    assert job.result == ("done",) and seen[-1] == STEPS
    job.cleanup()
    return time.monotonic() - job.startTime


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="usleep through ctypes.PyDLL(None)")
@pytest.mark.slow
def test_progress_advances_at_normal_speed_while_the_main_thread_holds_the_gil(tmp_path):
    normal = run_job(tmp_path, "free", lambda: time.sleep(HOLD_SECONDS))
    held = run_job(tmp_path, "held", lambda: hold_gil(HOLD_SECONDS))
    # a timer tick every HOLD_SECONDS bounds how late the last message is seen
    assert held < 1.5 * normal + 2 * HOLD_SECONDS, (normal, held)

    # the same work on a Python thread, under the same main thread, crawls: the reason for a process
    start = time.monotonic()
    alone = threading.Thread(target=numpy_work, args=(STEPS,))
    alone.start()
    alone.join()
    free_thread = time.monotonic() - start
    worker = threading.Thread(target=numpy_work, args=(STEPS,))
    start = time.monotonic()
    worker.start()
    while worker.is_alive():
        hold_gil(HOLD_SECONDS)
    held_thread = time.monotonic() - start
    assert held_thread > 3 * free_thread, (free_thread, held_thread)
