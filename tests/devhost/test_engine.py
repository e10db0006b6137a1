"""The engine holds orchestrations to the Durable SDK's semantics, in virtual host time."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "apps"))
from engine_support import T0, check_history, of_type, raw_history, running_engine, sample_app

from devhost.engine import (
    InstanceCompletedError,
    InstanceExistsError,
    InstanceNotFoundError,
)
from devhost.functions import UnknownFunctionError
from devhost.history import EventType, parse_iso
from shared.errors import is_permanent


def test_activity_sequence_and_its_history() -> None:
    with running_engine() as (engine, _, app):
        iid = engine.start_new("hello_sequence", "seq-1", ["Tokyo", "Lima"])
        status = engine.wait_for(iid, 10)
        assert status["runtimeStatus"] == "Completed"
        assert status["output"] == ["Hello Tokyo!", "Hello Lima!"]
        assert status["input"] == ["Tokyo", "Lima"]
        assert app.CALLS["say_hello"] == ["Tokyo", "Lima"]
        events = raw_history(engine, iid)
        check_history(events)
        scheduled = of_type(events, EventType.TaskScheduled)
        assert [(e["EventId"], e["Name"], e["Input"]) for e in scheduled] == [
            (0, "say_hello", '"Tokyo"'),
            (1, "say_hello", '"Lima"'),
        ]
        assert [e["Result"] for e in of_type(events, EventType.TaskCompleted)] == [
            '"Hello Tokyo!"',
            '"Hello Lima!"',
        ]
        assert events[-2]["EventType"] == EventType.ExecutionCompleted
        assert events[-2]["OrchestrationStatus"] == "Completed"
        assert events[-1]["EventType"] == EventType.OrchestratorCompleted
        # The Durable HTTP API's view of the same history.
        api = engine.get_status(iid, show_history=True, show_history_output=True)
        assert api is not None
        kinds = [e["EventType"] for e in api["historyEvents"]]
        assert kinds == ["ExecutionStarted", "TaskCompleted", "TaskCompleted", "ExecutionCompleted"]
        first = api["historyEvents"][1]
        assert first["FunctionName"] == "say_hello"
        assert first["Result"] == "Hello Tokyo!"
        assert "ScheduledTime" in first
        quiet = engine.get_status(iid, show_history=True)
        assert quiet is not None
        assert "Result" not in quiet["historyEvents"][1]


def test_fan_out_runs_sync_and_async_activities() -> None:
    with running_engine() as (engine, _, app):
        iid = engine.start_new("fan_out", None, 25)
        status = engine.wait_for(iid, 10)
        assert status["output"] == sum(2 * i for i in range(25)) + 200
        assert sorted(app.CALLS["double"]) == list(range(25))
        assert app.CALLS["async_double"] == [100]
        check_history(raw_history(engine, iid))


def test_retry_uses_the_first_interval_between_attempts() -> None:
    with running_engine() as (engine, _, app):
        spec = {"key": "r1", "fail_times": 2, "first_ms": 5000, "attempts": 4}
        iid = engine.start_new("with_retry", None, spec)
        status = engine.wait_for(iid, 10)
        assert status["output"] == {"result": "r1 ok after 3", "after": "Hello after!"}
        assert app.ATTEMPTS["r1"] == [T0, T0 + timedelta(seconds=5), T0 + timedelta(seconds=10)]
        events = raw_history(engine, iid)
        check_history(events)
        # attempt 0, timer 1, attempt 2, timer 3, attempt 4, then the next call takes id 5.
        assert [e["EventId"] for e in of_type(events, EventType.TaskScheduled)] == [0, 2, 4, 5]
        assert [e["EventId"] for e in of_type(events, EventType.TimerCreated)] == [1, 3]


def test_retry_gives_up_after_max_attempts_and_one_more_timer() -> None:
    with running_engine() as (engine, _, app):
        spec = {"key": "r2", "fail_times": 99, "first_ms": 5000, "attempts": 3}
        iid = engine.start_new("with_retry", None, spec)
        status = engine.wait_for(iid, 10)
        assert status["output"] == {
            "failed": "Activity function 'flaky' failed: RuntimeError: TemporaryError: "
            "attempt 3 of r2 failed"
        }
        assert app.ATTEMPTS["r2"] == [T0 + timedelta(seconds=s) for s in (0, 5, 10)]
        events = raw_history(engine, iid)
        check_history(events)
        assert len(of_type(events, EventType.TaskScheduled)) == 3
        # DTFx waits one last back-off after the final attempt before it gives up.
        timers = of_type(events, EventType.TimerFired)
        assert len(timers) == 3
        assert parse_iso(events[-2]["Timestamp"]) == T0 + timedelta(seconds=15)


def test_retry_honours_backoff_and_max_interval_when_sent() -> None:
    with running_engine() as (engine, _, app):
        spec = {
            "key": "r3",
            "fail_times": 4,
            "first_ms": 1000,
            "attempts": 5,
            "backoff": 2.0,
            "max_ms": 3000,
        }
        iid = engine.start_new("backoff_retry", None, spec)
        assert engine.wait_for(iid, 10)["output"] == "r3 ok after 5"
        # delays 1 s, 2 s, 4 s capped to 3 s, 8 s capped to 3 s
        assert app.ATTEMPTS["r3"] == [T0 + timedelta(seconds=s) for s in (0, 1, 3, 6, 9)]


def test_retry_ids_interleave_with_parallel_calls() -> None:
    with running_engine() as (engine, _, _app):
        specs = [
            {"key": "p1", "fail_times": 1},
            {"key": "p2", "fail_times": 3},
            {"key": "p3", "fail_times": 0},
        ]
        iid = engine.start_new("retry_parallel", None, specs)
        status = engine.wait_for(iid, 10)
        assert status["runtimeStatus"] == "Completed", status["output"]
        assert status["output"] == {
            "first": ["p1 ok after 2", "p2 ok after 4", "p3 ok after 1", 42],
            "second": [2, "p1 ok after 3"],
            "timer": True,
        }
        check_history(raw_history(engine, iid))


def test_timers_fire_in_due_order_in_host_time() -> None:
    with running_engine() as (engine, _, _):
        iid = engine.start_new("timer_order")
        output = engine.wait_for(iid, 10)["output"]
        assert [name for name, _ in output] == ["a", "b", "c"]
        assert [parse_iso(at) for _, at in output] == [
            T0 + timedelta(minutes=m) for m in (10, 20, 30)
        ]


def test_a_long_timer_is_split_into_slices() -> None:
    with running_engine() as (engine, _, _):
        iid = engine.start_new("long_timer", None, 10)
        assert engine.wait_for(iid, 10)["output"] == 10 * 86400
        events = raw_history(engine, iid)
        check_history(events)
        fire_times = [parse_iso(e["FireAt"]) for e in of_type(events, EventType.TimerCreated)]
        assert fire_times == [T0 + timedelta(days=d) for d in (3, 6, 10)]


def test_six_hours_of_timers_take_no_real_time() -> None:
    with running_engine() as (engine, clock, _):
        iid = engine.start_new("timer_chain", None, {"count": 36, "minutes": 10})
        stamps = engine.wait_for(iid, 20)["output"]
        assert [parse_iso(s) for s in stamps] == [T0 + timedelta(minutes=10 * k) for k in range(37)]
        assert clock.now() == T0 + timedelta(hours=6)


def test_early_events_are_kept_and_names_match_case_insensitively() -> None:
    with running_engine() as (engine, clock, _):
        clock.pause()
        iid = engine.start_new("wait_event")
        engine.raise_event(iid, "approval", {"n": 1})  # before the orchestrator ever ran
        engine.raise_event(iid, "APPROVAL", {"n": 2})
        clock.resume()
        status = engine.wait_for(iid, 10)
        assert status["output"] == [{"n": 1}, {"n": 2}]
        raised = of_type(raw_history(engine, iid), EventType.EventRaised)
        assert [e["Name"] for e in raised] == ["Approval", "Approval"]


def test_when_any_event_beats_the_timer_and_the_timer_is_dropped() -> None:
    with running_engine() as (engine, clock, _):
        clock.pause()
        iid = engine.start_new("event_or_timeout", None, 60)
        engine.raise_event(iid, "go", "now")
        clock.resume()
        assert engine.wait_for(iid, 10)["output"] == {"winner": "event", "value": "now"}
        engine.wait_idle(10)
        assert engine.participant.next_due() is None
        assert clock.now() == T0


def test_when_any_timer_beats_a_missing_event() -> None:
    with running_engine() as (engine, _, _):
        iid = engine.start_new("event_or_timeout", None, 60)
        output = engine.wait_for(iid, 10)["output"]
        assert output == {"winner": "timer", "at": (T0 + timedelta(minutes=60)).isoformat()}


def test_sub_orchestrations_return_results_with_derived_and_given_ids() -> None:
    with running_engine() as (engine, _, _):
        iid = engine.start_new(
            "parent", "p-ok", [{"value": 1}, {"value": 2, "instance_id": "given-child"}]
        )
        assert engine.wait_for(iid, 10)["output"] == {"results": [2, 4]}
        events = raw_history(engine, iid)
        check_history(events)
        created = of_type(events, EventType.SubOrchestrationInstanceCreated)
        assert [e["InstanceId"] for e in created] == ["p-ok:0", "given-child"]
        child = engine.get_status("given-child")
        assert child is not None
        assert child["runtimeStatus"] == "Completed"
        assert child["output"] == 4


def test_a_failing_sub_orchestration_fails_the_parent_task() -> None:
    with running_engine() as (engine, _, _):
        specs = [{"value": 1}, {"value": 2, "fail": True, "id": "c2"}]
        iid = engine.start_new("parent", "p-fail", specs)
        output = engine.wait_for(iid, 10)["output"]
        assert output == {
            "failed": "Orchestrator function 'child' failed: Activity function 'boom' failed: "
            "ValueError: PermanentError: boom c2"
        }
        child = engine.get_status("p-fail:1")
        assert child is not None
        assert child["runtimeStatus"] == "Failed"


def test_sub_orchestration_retry_restarts_the_same_instance_id() -> None:
    with running_engine() as (engine, _, _):
        iid = engine.start_new("sub_with_retry", None, {"value": 1, "fail": True, "iid": "again"})
        output = engine.wait_for(iid, 10)["output"]
        assert output["failed"].startswith("Orchestrator function 'child' failed:")
        events = raw_history(engine, iid)
        check_history(events)
        created = of_type(events, EventType.SubOrchestrationInstanceCreated)
        assert [e["InstanceId"] for e in created] == ["again", "again"]
        assert len(of_type(events, EventType.SubOrchestrationInstanceFailed)) == 2


def test_continue_as_new_resets_history_and_takes_events_raised_to_each_generation() -> None:
    with running_engine() as (engine, _, _):
        iid = engine.start_new("counter", None, {"n": 0, "limit": 3, "events": True})
        for value in ("a", "b", "c"):
            engine.wait_idle(10)  # the current generation waits for "add"
            engine.raise_event(iid, "add", value)
        status = engine.wait_for(iid, 10)
        assert status["output"] == {"n": 3, "limit": 3, "events": True, "seen": ["a", "b", "c"]}
        # The status shows the last generation: its input, and only its history.
        assert status["input"] == {"n": 2, "limit": 3, "events": True, "seen": ["a", "b"]}
        events = raw_history(engine, iid)
        check_history(events)
        assert len(of_type(events, EventType.ExecutionStarted)) == 1
        assert [e["Input"] for e in of_type(events, EventType.EventRaised)] == ['"c"']


def test_continue_as_new_discards_events_the_generation_did_not_consume() -> None:
    # Raised together before the first episode: the first generation consumes one and
    # continues as new; the other two are gone, as on Azure (durable-python#331).
    with running_engine() as (engine, clock, _):
        clock.pause()
        iid = engine.start_new("counter", None, {"n": 0, "limit": 3, "events": True})
        for value in ("a", "b", "c"):
            engine.raise_event(iid, "add", value)
        clock.resume()
        engine.wait_idle(10)
        status = engine.get_status(iid)
        assert status is not None
        assert status["runtimeStatus"] == "Running"
        assert status["input"] == {"n": 1, "limit": 3, "events": True, "seen": ["a"]}
        assert of_type(raw_history(engine, iid), EventType.EventRaised) == []


def test_continue_as_new_passes_through_continued_as_new() -> None:
    with running_engine() as (engine, _, app):
        iid = engine.start_new("counter_plain", None, {"n": 0, "limit": 4})
        assert engine.wait_for(iid, 10)["output"] == {"n": 4, "limit": 4}
        assert sorted(app.CALLS["double"]) == [0, 1, 2, 3]
        assert len(of_type(raw_history(engine, iid), EventType.TaskScheduled)) == 1


def test_terminate_ends_an_instance_and_refuses_more() -> None:
    with running_engine() as (engine, _, _):
        iid = engine.start_new("forever")
        engine.wait_for(iid, 10, statuses=("Running",))
        engine.terminate(iid, "operator said so")
        status = engine.wait_for(iid, 10)
        assert status["runtimeStatus"] == "Terminated"
        assert status["output"] == "operator said so"
        kinds = [e["EventType"] for e in raw_history(engine, iid)]
        assert EventType.ExecutionTerminated in kinds
        with pytest.raises(InstanceCompletedError):
            engine.raise_event(iid, "never")
        with pytest.raises(InstanceCompletedError):
            engine.terminate(iid)
        with pytest.raises(InstanceNotFoundError):
            engine.terminate("no-such-instance")


def test_a_terminated_child_fails_its_parent_task() -> None:
    with running_engine() as (engine, _, _):
        iid = engine.start_new("parent_of_forever", None, "the-child")
        engine.wait_for("the-child", 10, statuses=("Running",))
        engine.terminate("the-child", "stop")
        output = engine.wait_for(iid, 10)["output"]
        assert output == {
            "failed": "Orchestration 'forever' (the-child) was terminated: stop",
        }


def test_non_determinism_fails_the_instance_naming_both_actions() -> None:
    with running_engine() as (engine, _, app):
        iid = engine.start_new("changing")
        engine.wait_for(iid, 10, statuses=("Running",))
        engine.wait_idle(10)
        app.SWITCH["version"] = 2  # the code now schedules another activity first
        engine.raise_event(iid, "continue")
        status = engine.wait_for(iid, 10)
        assert status["runtimeStatus"] == "Failed"
        assert "Non-deterministic workflow detected" in status["output"]
        assert "CallActivity 'say_hello'" in status["output"]
        assert "CallActivity 'double'" in status["output"]


def test_undecodable_activity_input_fails_the_task_not_the_host() -> None:
    with running_engine() as (engine, _, app):
        iid = engine.start_new("undecodable")
        error = engine.wait_for(iid, 10)["output"]["error"]
        assert error.startswith(
            "Activity function 'echo' failed: ValueError: activity trigger input must be"
        )
        assert "not_a_loaded_module" in error
        assert "echo" not in app.CALLS
        # The engine keeps working.
        other = engine.start_new("hello_sequence", None, ["x"])
        assert engine.wait_for(other, 10)["output"] == ["Hello x!"]


def test_activity_failures_carry_type_message_and_details() -> None:
    with running_engine() as (engine, _, _):
        iid = engine.start_new("calls_failing", None, "boom")
        error = engine.wait_for(iid, 10)["output"]["error"]
        reason, _, details = error.partition(" \n ")
        assert (
            reason == "Activity function 'boom' failed: ValueError: PermanentError: boom {'x': 1}"
        )
        assert "Traceback" in details
        assert is_permanent(reason)  # the app's error model reads the class back
        iid = engine.start_new("calls_failing", None, "not_serializable")
        error = engine.wait_for(iid, 10)["output"]["error"]
        assert "activity trigger output must be json serializable" in error


def test_calling_an_unknown_activity_fails_that_task() -> None:
    with running_engine() as (engine, _, _):
        iid = engine.start_new("calls_unknown")
        error = engine.wait_for(iid, 10)["output"]["error"]
        assert error.startswith("The function 'no_such_activity' doesn't exist")
        assert "say_hello" in error


def test_an_orchestrator_that_raises_fails_with_its_message() -> None:
    with running_engine() as (engine, _, _):
        iid = engine.start_new("raises")
        status = engine.wait_for(iid, 10)
        assert status["runtimeStatus"] == "Failed"
        assert status["output"] == "Orchestrator function 'raises' failed: the orchestrator gave up"
        completed = of_type(raw_history(engine, iid), EventType.ExecutionCompleted)
        assert completed[0]["OrchestrationStatus"] == "Failed"


def test_start_checks_names_and_deduplicates_running_instances() -> None:
    with running_engine() as (engine, clock, _):
        with pytest.raises(UnknownFunctionError):
            engine.start_new("no_such_orchestrator")
        with pytest.raises(UnknownFunctionError):
            engine.start_new("say_hello")  # an activity, not an orchestrator
        clock.pause()
        engine.start_new("forever", "dup")
        with pytest.raises(InstanceExistsError):
            engine.start_new("forever", "dup")
        clock.resume()
        engine.terminate("dup")
        engine.wait_for("dup", 10)
        # A finished instance may be started again under the same id, with a fresh history.
        assert engine.start_new("HELLO_SEQUENCE", "dup", ["again"]) == "dup"
        status = engine.wait_for("dup", 10)
        assert status["name"] == "hello_sequence"
        assert status["output"] == ["Hello again!"]
        assert len(of_type(raw_history(engine, "dup"), EventType.ExecutionStarted)) == 1
        with pytest.raises(InstanceNotFoundError):
            engine.raise_event("nobody", "x")


def test_custom_status_and_times_follow_the_episodes() -> None:
    with running_engine() as (engine, clock, _):
        iid = engine.start_new("status_steps")
        status = engine.wait_for(iid, 10, statuses=("Running",))
        engine.wait_idle(10)
        deadline = time.monotonic() + 10
        while engine.get_status(iid)["customStatus"] != {"step": 2}:  # type: ignore[index]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        engine.raise_event(iid, "finish")
        status = engine.wait_for(iid, 10)
        assert status["output"] == "finished"
        assert status["customStatus"] == {"step": 2}
        assert status["createdTime"] == "2025-01-01T00:00:00Z"
        assert status["lastUpdatedTime"] == "2025-01-01T00:01:00Z"
        assert clock.now() == T0 + timedelta(minutes=1)


def test_busy_activities_hold_the_virtual_clock() -> None:
    with running_engine() as (engine, clock, app):
        gated = engine.start_new("gated")
        sleepy = engine.start_new("sleepy", None, 5)
        engine.wait_for(gated, 10, statuses=("Running",))
        engine.wait_for(sleepy, 10, statuses=("Running",))
        time.sleep(0.2)
        assert clock.now() == T0, "the clock jumped while an activity was running"
        assert engine.participant.busy_count > 0
        app.GATE.set()
        assert engine.wait_for(gated, 10)["output"] == "through"
        assert engine.wait_for(sleepy, 10)["output"] == (T0 + timedelta(minutes=5)).isoformat()


def test_query_pages_and_purges() -> None:
    with running_engine() as (engine, clock, _):
        clock.pause()
        for n in range(5):
            engine.start_new("hello_sequence", f"q-{n}", [str(n)])
            clock.advance(timedelta(seconds=1))
        engine.start_new("forever", "other-1")
        clock.resume()
        for n in range(5):
            engine.wait_for(f"q-{n}", 10)
        engine.wait_for("other-1", 10, statuses=("Running",))
        page, token = engine.query(instance_id_prefix="q-", top=2)
        assert [s["instanceId"] for s in page] == ["q-0", "q-1"]
        assert token is not None
        page, token = engine.query(instance_id_prefix="q-", top=2, continuation=token)
        assert [s["instanceId"] for s in page] == ["q-2", "q-3"]
        page, token = engine.query(instance_id_prefix="q-", top=2, continuation=token)
        assert [s["instanceId"] for s in page] == ["q-4"]
        assert token is None
        running, _ = engine.query(runtime_status=["Running"])
        assert [s["instanceId"] for s in running] == ["other-1"]
        window, _ = engine.query(
            created_from=T0 + timedelta(seconds=1), created_to=T0 + timedelta(seconds=2)
        )
        assert [s["instanceId"] for s in window] == ["q-1", "q-2"]
        assert window[0]["input"] is None
        assert engine.purge("q-0") is True
        assert engine.purge("q-0") is False
        assert engine.get_status("q-0") is None
        assert engine.purge_many(runtime_status=["Completed"]) == 4
        assert [s["instanceId"] for s in engine.query()[0]] == ["other-1"]
        with pytest.raises(ValueError, match="continuation token"):
            engine.query(continuation="not-a-token")


def test_work_started_before_start_runs_once_it_starts(tmp_path: Path) -> None:
    from engine_harness import index_for

    from devhost.clock import VirtualClock
    from devhost.engine import Engine
    from devhost.store import SqliteStore

    path = tmp_path / "early.sqlite"
    clock = VirtualClock(T0)
    sample_app().reset(clock.now)
    engine = Engine(index_for("engine_sample_app"), SqliteStore(path), clock)
    try:
        iid = engine.start_new("wait_event", "early")
        engine.raise_event(iid, "Approval", 1)
        engine.raise_event(iid, "Approval", 2)
        engine.start()
        assert engine.wait_for(iid, 10)["output"] == [1, 2]
    finally:
        engine.stop()
        engine.store.close()
    # A second engine on the same file continues the id sequence (no clash with stored rows).
    engine = Engine(index_for("engine_sample_app"), SqliteStore(path), clock)
    try:
        engine.start()
        again = engine.start_new("hello_sequence", None, ["z"])
        assert engine.wait_for(again, 10)["output"] == ["Hello z!"]
    finally:
        engine.stop()
        engine.store.close()
        clock.close()


def test_many_retrying_fan_outs_at_once_keep_ids_in_step_with_the_sdk() -> None:
    """Failures, back-off timers and results of many instances arrive in mixed batches."""
    import random

    rng = random.Random(11)
    with running_engine(workers=8) as (engine, _, _):
        expected = {}
        for n in range(20):
            fails = [rng.randint(0, 3) for _ in range(3)]
            specs = [{"key": f"m{n}-{i}", "fail_times": f} for i, f in enumerate(fails)]
            iid = engine.start_new("retry_parallel", f"many-{n}", specs)
            expected[iid] = {
                "first": [f"m{n}-{i} ok after {f + 1}" for i, f in enumerate(fails)] + [42],
                "second": [2, f"m{n}-0 ok after {fails[0] + 2}"],
                "timer": True,
            }
        for iid, output in expected.items():
            status = engine.wait_for(iid, 20)
            assert status["output"] == output, (iid, status["output"])
            check_history(raw_history(engine, iid))


def test_unsupported_actions_fail_the_instance_with_a_clear_message() -> None:
    with running_engine() as (engine, _, _):
        iid = engine.start_new("uses_http")
        status = engine.wait_for(iid, 10)
        assert status["runtimeStatus"] == "Failed"
        assert status["output"] == (
            "Orchestrator function 'uses_http' failed: CallHttp is not supported by the devhost "
            "engine"
        )
