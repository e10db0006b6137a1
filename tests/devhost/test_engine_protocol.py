"""The engine speaks the host's out-of-process protocol: the requests it sends, the states read."""

from __future__ import annotations

import itertools
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent / "apps"))
from engine_support import T0, running_engine

import devhost.engine as engine_module
from devhost.history import EventType, parse_iso
from devhost.invoke import OrchestratorOutcome, run_orchestrator, split_out_of_proc_error


@pytest.fixture
def episodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict[str, Any], OrchestratorOutcome]]:
    seen: list[tuple[dict[str, Any], OrchestratorOutcome]] = []

    def recording(info: Any, request_json: str) -> OrchestratorOutcome:
        outcome = run_orchestrator(info, request_json)
        seen.append((json.loads(request_json), outcome))
        return outcome

    monkeypatch.setattr(engine_module, "run_orchestrator", recording)
    return seen


def test_requests_carry_the_history_and_protocol_fields(
    episodes: list[tuple[dict[str, Any], OrchestratorOutcome]],
) -> None:
    with running_engine() as (engine, _, _):
        iid = engine.start_new("timer_chain", "proto-1", {"count": 2, "minutes": 5})
        engine.wait_for(iid, 10)
    requests = [r for r, _ in episodes if r["instanceId"] == "proto-1"]
    assert len(requests) == 3
    first = requests[0]
    assert {k: v for k, v in first.items() if k != "history"} == {
        "input": '{"count": 2, "minutes": 5}',
        "instanceId": "proto-1",
        "isReplaying": False,
        "parentInstanceId": None,
        "upperSchemaVersion": 1,
        "upperSchemaVersionNew": 2,
        "maximumShortTimerDuration": "6.00:00:00",
        "longRunningTimerIntervalDuration": "3.00:00:00",
    }
    started, execution = first["history"]
    assert started["EventType"] == EventType.OrchestratorStarted
    assert execution["EventType"] == EventType.ExecutionStarted
    assert execution["Name"] == "timer_chain"
    assert execution["Version"] == ""
    assert execution["Input"] == '{"count": 2, "minutes": 5}'
    assert started["IsPlayed"] is False
    assert execution["IsPlayed"] is False
    for earlier, later in itertools.pairwise(requests):
        old = earlier["history"]
        new = later["history"]
        assert later["isReplaying"] is True
        # Append-only: everything the SDK saw before comes back, now marked as played.
        for before, again in zip(old, new, strict=False):
            assert again == {**before, "IsPlayed": True}
        last_start = max(
            i for i, e in enumerate(new) if e["EventType"] == EventType.OrchestratorStarted
        )
        assert all(e["IsPlayed"] for e in new[:last_start])
        assert not any(e["IsPlayed"] for e in new[last_start:])
        assert new[last_start - 1]["EventType"] == EventType.OrchestratorCompleted
    # Episode time is host time: each OrchestratorStarted stamps the clock of that episode.
    stamps = [parse_iso(r["history"][-2]["Timestamp"]) for r in requests[1:]]
    assert stamps == [T0 + timedelta(minutes=5), T0 + timedelta(minutes=10)]


def test_the_state_is_schema_v2_with_an_append_only_action_list(
    episodes: list[tuple[dict[str, Any], OrchestratorOutcome]],
) -> None:
    with running_engine() as (engine, _, _):
        iid = engine.start_new("hello_sequence", "proto-2", ["a", "b", "c"])
        engine.wait_for(iid, 10)
    states = [o.state for r, o in episodes if r["instanceId"] == "proto-2"]
    assert all(s is not None and s["schemaVersion"] == 2 for s in states)
    actions = [s["actions"] for s in states if s is not None]
    assert all(len(a) == 1 for a in actions)  # one inner list under schema V2
    for earlier, later in itertools.pairwise(actions):
        assert later[0][: len(earlier[0])] == earlier[0]
    assert [len(a[0]) for a in actions] == [1, 2, 3, 3]
    assert states[-1] is not None
    assert states[-1]["isDone"] is True
    assert states[-1]["output"] == ["Hello a!", "Hello b!", "Hello c!"]


def test_sub_orchestrations_know_their_parent(
    episodes: list[tuple[dict[str, Any], OrchestratorOutcome]],
) -> None:
    with running_engine() as (engine, _, _):
        iid = engine.start_new("parent", "proto-3", [{"value": 3}])
        engine.wait_for(iid, 10)
    child = next(r for r, _ in episodes if r["instanceId"] == "proto-3:0")
    assert child["parentInstanceId"] == "proto-3"
    execution = child["history"][1]
    assert execution["ParentInstance"]["OrchestrationInstance"]["InstanceId"] == "proto-3"
    assert execution["ParentInstance"]["TaskScheduleId"] == 0


def test_a_raising_orchestrator_reports_the_out_of_proc_state(
    episodes: list[tuple[dict[str, Any], OrchestratorOutcome]],
) -> None:
    with running_engine() as (engine, _, _):
        iid = engine.start_new("raises", "proto-4")
        engine.wait_for(iid, 10)
    outcome = [o for r, o in episodes if r["instanceId"] == "proto-4"][-1]
    assert outcome.error == "the orchestrator gave up"
    assert outcome.state is not None
    assert outcome.state["isDone"] is False
    assert outcome.state["error"] == "the orchestrator gave up"
    assert outcome.details is not None
    assert "ValueError" in outcome.details


def test_split_out_of_proc_error() -> None:
    state = {"isDone": False, "actions": [[]], "error": "boom", "schemaVersion": 2}
    head, parsed = split_out_of_proc_error(f"boom\n\n$OutOfProcData$:{json.dumps(state)}")
    assert head == "boom"
    assert parsed == state
    assert split_out_of_proc_error("plain failure") == ("plain failure", None)
    assert split_out_of_proc_error("bad\n\n$OutOfProcData$:{not json") == ("bad", None)


def test_fast_timestamps_parse_exactly_like_dateutil() -> None:
    import random
    from datetime import UTC, datetime

    from dateutil.parser import parse as dateutil_parse

    from devhost.history import iso
    from devhost.invoke import install_fast_timestamps

    assert install_fast_timestamps() is True
    assert install_fast_timestamps() is True  # idempotent
    module = sys.modules["azure.durable_functions.models.history.HistoryEvent"]
    fast = module.dt_parse
    assert getattr(fast, "devhost_fast", False)
    rng = random.Random(7)
    samples = [
        iso(datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.uniform(0, 3e8)))
        for _ in range(200)
    ]
    samples += ["2025-01-01T00:00:00Z", "2025-06-01T12:30:00+02:00", "2025-01-01"]
    for text in samples:
        expected = dateutil_parse(text)
        got = fast(text)
        assert got == expected, text
        assert repr(got) == repr(expected), text
