"""Kill -9 mid-run and start again: every in-flight orchestration completes, no work is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "apps"))
from engine_support import check_history, of_type  # noqa: E402

from devhost.history import EventType  # noqa: E402
from devhost.store import SqliteStore  # noqa: E402

WORKER = HERE / "restart_worker.py"
ROOT = Path(__file__).resolve().parents[2]


def _lines(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def _count(log: Path, prefix: str) -> Counter[str]:
    return Counter(line.split()[1] for line in _lines(log) if line.startswith(prefix))


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def _kill_when(process: subprocess.Popen[str], log: Path, ready: str, count: int) -> None:
    """SIGKILL the worker once ``count`` log lines start with ``ready``."""
    try:
        deadline = time.monotonic() + 30
        while sum(1 for line in _lines(log) if line.startswith(ready)) < count:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, f"never saw {count} x {ready!r}"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_kill_and_restart_completes_every_activity(tmp_path: Path) -> None:
    db = tmp_path / "engine.sqlite"
    log = tmp_path / "activities.log"
    spec = {"fan": 6, "tail": 2, "sleep": 0.5, "timer": 0.3}
    keys = [f"fan-{i}" for i in range(6)] + ["tail-0", "tail-1"]

    # 1st run: killed while the fan-out's activities are in flight.
    _kill_when(_spawn(str(db), str(log), "start", "restart-1", json.dumps(spec)), log, "start", 2)
    in_flight = set(_count(log, "start")) - set(_count(log, "end"))
    assert in_flight, "the kill did not catch an activity in flight"

    # 2nd run: resumes, killed again once the sequential tail has begun.
    _kill_when(_spawn(str(db), str(log), "resume", "restart-1"), log, "start tail-0", 1)

    # 3rd run: resumes and finishes.
    third = _spawn(str(db), str(log), "resume", "restart-1")
    out, err = third.communicate(timeout=60)
    assert third.returncode == 0, err
    status = json.loads(out.strip().splitlines()[-1])
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"] == [f"done-{k}" for k in keys]

    ends = _count(log, "end")
    starts = _count(log, "start")
    assert set(ends) == set(keys)  # every activity completed at least once
    for key in in_flight:
        assert starts[key] >= 2, f"{key} was in flight at the kill and never ran again"
    assert starts["tail-0"] >= 2

    # The history scheduled and completed each call exactly once, whatever ran twice.
    store = SqliteStore(db)
    try:
        events = [json.loads(text) for text in store.history("restart-1")]
        assert store.messages() == []
        assert store.activities() == []
    finally:
        store.close()
    check_history(events)
    assert len(of_type(events, EventType.TaskScheduled)) == len(keys)
    assert len(of_type(events, EventType.TaskCompleted)) == len(keys)
    assert len(of_type(events, EventType.TimerFired)) == 1
