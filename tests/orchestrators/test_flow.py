"""The orchestration building blocks on the devhost engine: retries, waits, verdicts."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import pytest

from devhost.clock import VirtualClock
from devhost.engine import Engine
from devhost.functions import index_app
from devhost.store import MemoryStore
from orchestrators import wait as wait_module

sys.path.insert(0, str(Path(__file__).parent))
import flow_app

_app = df.DFApp()
_app.register_functions(flow_app.bp)
_app.register_functions(wait_module.bp)
START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


@pytest.fixture
def engine() -> Iterator[Engine]:
    clock = VirtualClock(START)
    eng = Engine(index_app(_app), MemoryStore(), clock, activity_workers=2)
    eng.start()
    flow_app.SCRIPT.clear()
    flow_app.CALLS.clear()
    flow_app.STATES.clear()
    flow_app.PROBED.clear()
    try:
        yield eng
    finally:
        eng.stop()
        clock.close()


def _run(engine: Engine, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    iid = engine.start_new(name, None, payload)
    return engine.wait_for(iid, real_timeout=30)


def test_temporary_failures_are_retried_on_durable_timers(engine: Engine) -> None:
    flow_app.SCRIPT["a"] = ["temp", "temp", "ok"]
    status = _run(engine, "exercise_call", {"key": "a"})
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == {"key": "a", "calls": 3}
    # Back-off 5 s then 10 s of orchestration time: the virtual clock moved at least 15 s.
    assert engine.clock.now() >= START.replace(second=15)


def test_permanent_failure_is_not_retried(engine: Engine) -> None:
    flow_app.SCRIPT["b"] = ["perm", "ok"]
    status = _run(engine, "exercise_call", {"key": "b"})
    assert status["runtimeStatus"] == "Failed"
    assert "the image is broken" in str(status["output"])
    assert flow_app.CALLS["b"] == 1


def test_retries_give_up_after_the_policy_attempts(engine: Engine) -> None:
    flow_app.SCRIPT["c"] = ["temp"] * 10
    status = _run(engine, "exercise_call", {"key": "c", "attempts": 3})
    assert status["runtimeStatus"] == "Failed"
    assert "still failing after 3 attempts" in str(status["output"])
    assert flow_app.CALLS["c"] == 3


def test_wait_polls_until_the_verdict_holds_across_continue_as_new(engine: Engine) -> None:
    polls = wait_module.POLLS_PER_EXECUTION + 5  # forces at least one continue-as-new
    flow_app.STATES.extend({"exists": True} for _ in range(polls))
    flow_app.STATES.append({"exists": False})
    status = _run(engine, "exercise_wait", {"verdict": "gone"})
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == {"exists": False}
    assert flow_app.STATES == []


def test_wait_fails_with_the_verdicts_reason(engine: Engine) -> None:
    flow_app.STATES.append({"exists": True, "provisioning_state": "Creating"})
    flow_app.STATES.append({"exists": True, "provisioning_state": "Failed", "error": "quota"})
    status = _run(engine, "exercise_wait", {"verdict": "provisioned"})
    assert status["runtimeStatus"] == "Failed"
    assert "the probe: provisioning failed: quota" in str(status["output"])


def test_wait_gives_up_at_its_deadline(engine: Engine) -> None:
    flow_app.STATES.extend({"exists": True} for _ in range(100))
    status = _run(engine, "exercise_wait", {"verdict": "gone", "deadline_s": 30})
    assert status["runtimeStatus"] == "Failed"
    assert "not finished by the deadline" in str(status["output"])


def test_a_wait_polls_through_more_temporary_failures_than_a_retried_call_allows(
    engine: Engine,
) -> None:
    # 25 failed polls in a row: more than a retried call's 6 attempts and more than one
    # execution's polls (continue-as-new in the middle), then the operation is done.
    failing = 25
    flow_app.STATES.extend({"_raise": "temp"} for _ in range(failing))
    flow_app.STATES.append({"exists": False})
    status = _run(engine, "exercise_wait", {"verdict": "gone", "deadline_s": 86400})
    assert status["runtimeStatus"] == "Completed", status["output"]
    assert status["output"] == {"exists": False}
    assert len(flow_app.PROBED) == failing + 1


def test_a_failing_poll_waits_at_least_azures_retry_after(engine: Engine) -> None:
    flow_app.STATES.extend({"_raise": "temp", "_retry_after": 600} for _ in range(3))
    flow_app.STATES.append({"exists": False})
    status = _run(engine, "exercise_wait", {"verdict": "gone", "deadline_s": 86400})
    assert status["runtimeStatus"] == "Completed", status["output"]
    # Three Retry-After: 600 answers: the wait cannot have polled again sooner than that.
    assert (engine.clock.now() - START).total_seconds() >= 1800


def test_a_wait_whose_polls_keep_failing_ends_at_its_own_deadline(engine: Engine) -> None:
    flow_app.STATES.extend({"_raise": "temp"} for _ in range(500))
    status = _run(engine, "exercise_wait", {"verdict": "gone", "deadline_s": 3600})
    assert status["runtimeStatus"] == "Failed"
    text = str(status["output"])
    assert "not finished by the deadline" in text
    assert "503 ServiceUnavailable" in text  # the last poll's error, not "no detail"
    elapsed = (engine.clock.now() - START).total_seconds()
    assert 3600 <= elapsed < 3600 + 600, elapsed


def test_a_permanent_poll_failure_ends_the_wait_at_once(engine: Engine) -> None:
    flow_app.STATES.append({"_raise": "perm"})
    flow_app.STATES.extend({"exists": False} for _ in range(3))
    status = _run(engine, "exercise_wait", {"verdict": "gone"})
    assert status["runtimeStatus"] == "Failed"
    assert "AuthorizationFailed: no read permission" in str(status["output"])
    assert len(flow_app.PROBED) == 1


@pytest.mark.parametrize(
    ("state", "args", "expected"),
    [
        ({"regions": {"a": {"state": "Completed"}, "b": {"state": "InProgress"}}}, {}, False),
        ({"regions": {"a": {"state": "Completed"}}}, {"regions": ["a", "b"]}, False),
        ({"regions": {"a": {"state": "Completed"}, "b": {"state": "Completed"}}}, {}, True),
        (
            {"regions": {"a": {"state": "Failed"}, "b": {"state": "Completed"}}},
            {},
            "replication failed in a",
        ),
    ],
)
def test_replicated_verdict(state: dict[str, Any], args: dict[str, Any], expected: Any) -> None:
    assert wait_module.VERDICTS["replicated"](state, args) == expected


def test_a_failed_vm_ends_the_wait_so_the_build_can_recreate_it() -> None:
    verdict = wait_module.VERDICTS["vm_running"]
    assert verdict({"provisioning_state": "Failed"}, {}) is True
    assert verdict({"provisioning_state": "Creating"}, {}) is False
    running = {"provisioning_state": "Succeeded", "power_state": "PowerState/running"}
    assert verdict(running, {}) is True
