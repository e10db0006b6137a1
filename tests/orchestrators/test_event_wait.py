"""Event-first waits on the devhost engine: an event is a hint, the GET decides, polls back up.

The wait under test is the real ``wait_for_operation`` (orchestrators/wait.py) over a scripted
probe activity; the tests raise ``ResourceChanged`` to it as ``on_resource_event`` would, to the
instance id that follows from the resource and the kind of operation, and hold or release the
virtual clock to tell an event's wake-up from the safety poll's.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import pytest

from devhost.clock import VirtualClock
from devhost.engine import Engine
from devhost.functions import index_app
from devhost.store import MemoryStore
from orchestrators import wait as wait_module
from shared import names

sys.path.insert(0, str(Path(__file__).parent))
import flow_app

_app = df.DFApp()
_app.register_functions(flow_app.bp)
_app.register_functions(wait_module.bp)
START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
WAIT_ID = names.resource_wait_instance_id(flow_app.WATCHED, names.WAIT_KIND_DELETE)
HINT = {"resource_id": flow_app.WATCHED, "kind": "delete", "status": "Succeeded"}


@pytest.fixture
def engine() -> Iterator[Engine]:
    clock = VirtualClock(START)
    clock.pause()  # time moves only when a test releases it
    eng = Engine(index_app(_app), MemoryStore(), clock, activity_workers=2)
    eng.start()
    flow_app.STATES.clear()
    flow_app.PROBED.clear()
    try:
        yield eng
    finally:
        eng.stop()
        clock.close()


def _start(engine: Engine, **args: Any) -> str:
    iid = engine.start_new("exercise_event_wait", None, {"verdict": "gone", **args})
    engine.wait_idle(real_timeout=30)
    return iid


def _status(engine: Engine, iid: str) -> str:
    return str((engine.get_status(iid) or {}).get("runtimeStatus"))


def test_the_wait_is_named_after_its_resource_so_an_event_can_find_it(engine: Engine) -> None:
    flow_app.STATES.append({"exists": True})
    _start(engine)
    assert _status(engine, WAIT_ID) == "Running"
    assert len(flow_app.PROBED) == 1  # it looked once when it began


def test_an_event_ends_the_wait_at_once_after_one_confirming_get(engine: Engine) -> None:
    flow_app.STATES.extend([{"exists": True}, {"exists": False}])
    iid = _start(engine)
    engine.raise_event(WAIT_ID, names.EVT_RESOURCE_CHANGED, HINT)
    status = engine.wait_for(iid, real_timeout=30)
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"] == {"exists": False}
    assert len(flow_app.PROBED) == 2
    assert engine.clock.now() == START  # no poll interval, no safety interval: the event did it


def test_an_event_the_get_does_not_confirm_is_only_a_hint(engine: Engine) -> None:
    flow_app.STATES.extend([{"exists": True}, {"exists": True}, {"exists": False}])
    iid = _start(engine)
    engine.raise_event(WAIT_ID, names.EVT_RESOURCE_CHANGED, HINT)  # stale, or forged
    engine.wait_idle(real_timeout=30)
    assert len(flow_app.PROBED) == 2
    assert _status(engine, iid) == "Running"  # the resource is still there: keep waiting
    engine.clock.resume()
    status = engine.wait_for(iid, real_timeout=30)
    assert status["runtimeStatus"] == "Completed", status
    assert engine.clock.now() >= START + timedelta(seconds=300)  # found by the safety poll


def test_without_any_event_the_safety_poll_finds_the_end(engine: Engine) -> None:
    flow_app.STATES.extend([{"exists": True}, {"exists": True}, {"exists": False}])
    iid = _start(engine, safety_s=120)
    engine.clock.resume()
    status = engine.wait_for(iid, real_timeout=30)
    assert status["runtimeStatus"] == "Completed", status
    assert len(flow_app.PROBED) == 3
    elapsed = engine.clock.now() - START
    assert timedelta(seconds=240) <= elapsed < timedelta(seconds=250)  # two safety polls


def test_duplicate_events_cost_a_get_each_and_nothing_else(engine: Engine) -> None:
    flow_app.STATES.extend([{"exists": True}, {"exists": True}, {"exists": False}])
    iid = _start(engine)
    engine.raise_event(WAIT_ID, names.EVT_RESOURCE_CHANGED, HINT)
    engine.raise_event(WAIT_ID, names.EVT_RESOURCE_CHANGED, HINT)
    status = engine.wait_for(iid, real_timeout=30)
    assert status["runtimeStatus"] == "Completed", status
    assert len(flow_app.PROBED) == 3
    assert engine.clock.now() == START


def test_a_failure_the_event_announces_fails_the_wait_with_azures_words(engine: Engine) -> None:
    flow_app.STATES.extend(
        [
            {"exists": True, "provisioning_state": "Creating"},
            {"exists": True, "provisioning_state": "Failed", "error": "OSProvisioningTimedOut"},
        ]
    )
    iid = _start(engine, verdict="provisioned", kind="write")
    write_wait = names.resource_wait_instance_id(flow_app.WATCHED, names.WAIT_KIND_WRITE)
    engine.raise_event(write_wait, names.EVT_RESOURCE_CHANGED, {**HINT, "status": "Failed"})
    status = engine.wait_for(iid, real_timeout=30)
    assert status["runtimeStatus"] == "Failed"
    assert "provisioning failed: OSProvisioningTimedOut" in str(status["output"])


def test_many_safety_polls_continue_as_new_and_still_end(engine: Engine) -> None:
    polls = wait_module.POLLS_PER_EXECUTION + 3
    flow_app.STATES.extend({"exists": True} for _ in range(polls))
    flow_app.STATES.append({"exists": False})
    iid = _start(engine, safety_s=60)
    engine.clock.resume()
    status = engine.wait_for(iid, real_timeout=60)
    assert status["runtimeStatus"] == "Completed", status
    assert flow_app.STATES == []
