"""One engine job run as a separate process: no Qt, no MRML, no threads. The caller polls.

A job is a short list of engine CLI commands (``[subcommand, arg, ...]``) run one after the other as
``<python> -m fossilsegment_engine --progress jsonl <command>`` in a temporary folder that holds the job's
input and output files. Each command's stdout (JSON progress lines) goes to a file in that folder, which
:meth:`ProcessJob.poll` reads without blocking, so nothing waits on a pipe and no Python thread is needed
(in Slicer the main thread holds the GIL while idle, so worker threads crawl). Cancel terminates the
process (kill after a grace period) and deletes the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

#: seconds between terminate() and kill() on cancel
GRACE_SECONDS = 5.0
ENGINE_DIR = Path(__file__).resolve().parent.parent  # the folder holding fossilsegment_engine


def slicerPython() -> str:
    """Slicer's own Python launcher ``PythonSlicer`` (next to Slicer's executables, on Slicer's PATH, found
    the way SlicerTotalSegmentator and MONAIAuto3DSeg find it); outside Slicer this interpreter. Inside the
    app ``sys.executable`` is Slicer itself, so it is never used there."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    if os.path.basename(sys.executable).lower().startswith("python"):
        return sys.executable
    raise FileNotFoundError("PythonSlicer was not found on PATH; it comes with Slicer next to its executable")


def engineEnvironment() -> dict:
    """This process's environment with the engine's folder first on PYTHONPATH (PythonSlicer does not see
    the module folders Slicer adds to sys.path)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ENGINE_DIR)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ProcessJob:
    """Run ``commands`` (engine CLI argument lists) in order in ``folder`` (deleted on cancel, on
    :meth:`cleanup`, and on failure). ``launcher`` replaces ``[python, -m, fossilsegment_engine, --progress,
    jsonl]`` (tests run fake processes with it)."""

    def __init__(self, commands: Sequence[Sequence[str]], folder: str, launcher: Optional[Sequence[str]] = None,
                 env: Optional[dict] = None) -> None:
        if not commands:
            raise ValueError("a job needs at least one command")
        self.commands = [[str(a) for a in c] for c in commands]
        self.folder = folder
        self.launcher = list(launcher) if launcher else [slicerPython(), "-m", "fossilsegment_engine",
                                                         "--progress", "jsonl"]
        self.env = env if env is not None else engineEnvironment()
        self.startTime = 0.0
        self.finished = False
        self.result: Optional[tuple] = None  # the final message once finished
        self._step = -1
        self._process: Optional[subprocess.Popen] = None
        self._stdout = None
        self._read = 0  # bytes of the current stdout file already parsed
        self._lastError = ""

    # ------------------------------------------------------------------ control
    def start(self) -> "ProcessJob":
        self.startTime = time.monotonic()
        self._startStep(0)
        return self

    def _startStep(self, step: int) -> None:
        self._step = step
        out = os.path.join(self.folder, f"stdout-{step}.jsonl")
        err = os.path.join(self.folder, f"stderr-{step}.txt")
        self._read = 0
        with open(out, "wb") as stdout, open(err, "wb") as stderr:  # the child keeps its own handles
            self._process = subprocess.Popen(self.launcher + self.commands[step], cwd=self.folder, env=self.env,
                                             stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
        self._stdout = out

    def poll(self) -> list[tuple]:
        """Messages since the last call (never blocks): ``("progress", phase, done, total)``, then one final
        ``("done",)``, ``("error", message)`` or ``("cancelled",)``. ``done`` leaves the folder for the caller
        to read the outputs and :meth:`cleanup`; the others delete it."""
        if self.finished:
            return []
        process = self._process
        ended = process.poll() is not None  # read what it printed after checking, so nothing is missed
        messages = self._readLines()
        if not ended:
            return messages
        if process.returncode == 0 and self._step + 1 < len(self.commands):
            self._startStep(self._step + 1)
            return messages
        if process.returncode == 0:
            final: tuple = ("done",)
        else:
            final = ("error", self._errorMessage(process.returncode))
            self.cleanup()
        self._finish(final)
        return messages + [final]

    def cancel(self, grace: float = GRACE_SECONDS) -> list[tuple]:
        """Stop the process now (terminate, kill after ``grace`` s), delete the folder; ``[("cancelled",)]``."""
        if self.finished:
            return []
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.cleanup()
        self._finish(("cancelled",))
        return [self.result]

    def wait(self, interval: float = 0.05, timeout: Optional[float] = None) -> list[tuple]:
        """Poll until finished (blocking; for scripts and tests); all messages."""
        messages: list[tuple] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            messages += self.poll()
            if not self.finished:
                if deadline is not None and time.monotonic() > deadline:
                    return messages + self.cancel()
                time.sleep(interval)
        return messages

    def cleanup(self) -> None:
        """Delete the job's folder (inputs, outputs, logs)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def secondsLeft(self, done: int, total: int) -> Optional[float]:
        """Estimated time left from the elapsed time per unit; None before the first unit."""
        if done <= 0:
            return None
        return (time.monotonic() - self.startTime) / done * max(total - done, 0)

    # ------------------------------------------------------------------ internals
    def _finish(self, final: tuple) -> None:
        self.finished = True
        self.result = final

    def _readLines(self) -> list[tuple]:
        try:
            with open(self._stdout, "rb") as f:
                f.seek(self._read)
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1  # only complete lines; the rest is read next time
        self._read += end
        messages = []
        for line in data[:end].decode("utf-8", "replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # not a progress line (a library's print)
            if not isinstance(record, dict):
                continue
            if "phase" in record:
                messages.append(("progress", str(record["phase"]), int(record["done"]), int(record["total"])))
            elif "error" in record:
                self._lastError = str(record["error"])
        return messages

    def _errorMessage(self, returncode: int) -> str:
        """The engine's one-line message, else the last line of stderr, else the exit status."""
        if self._lastError:
            return self._lastError
        try:
            with open(os.path.join(self.folder, f"stderr-{self._step}.txt"), "rb") as f:
                lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        except OSError:
            lines = []
        return lines[-1].strip() if lines else f"the engine stopped with exit status {returncode}"


def newJobFolder() -> str:
    """A fresh private temporary folder for one job."""
    return tempfile.mkdtemp(prefix="fossilsegment-job-")
