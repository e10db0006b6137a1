"""MemoryStore and SqliteStore behave the same; SQLite keeps everything across a reopen."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent / "apps"))
from engine_support import raw_history, running_engine

from devhost.store import (
    ActivityWork,
    Commit,
    InstanceFilter,
    InstanceRecord,
    MemoryStore,
    Message,
    SqliteStore,
    Store,
    open_store,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _record(instance_id: str, status: str = "Running", minutes: int = 0) -> InstanceRecord:
    at = T0 + timedelta(minutes=minutes)
    return InstanceRecord(
        instance_id=instance_id,
        name="orch",
        execution_id="e1",
        status=status,
        created=at,
        updated=at,
        input='{"a": 1}',
        meta='{"seq": 3}',
    )


def _message(msg_id: int, instance_id: str, due: datetime | None = None) -> Message:
    return Message(
        msg_id=msg_id,
        instance_id=instance_id,
        kind="TimerFired" if due else "EventRaised",
        execution_id="e1",
        due=due,
        payload=json.dumps({"n": msg_id}),
        created=T0,
    )


def _work(work_id: int, instance_id: str) -> ActivityWork:
    return ActivityWork(
        work_id=work_id,
        instance_id=instance_id,
        execution_id="e1",
        task_id=work_id,
        name="act",
        input="1",
        created=T0,
    )


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "s.db")
    yield made
    made.close()


def _fill(store: Store) -> None:
    store.commit(
        Commit(
            instances=[
                _record("a", minutes=0),
                _record("b", "Completed", 1),
                _record("c", "Failed", 2),
            ],
            history_reset=["a"],
            history_append=[("a", ['{"EventType": 12}', '{"EventType": 0}'])],
            add_messages=[
                _message(1, "a"),
                _message(2, "a", T0 + timedelta(hours=1)),
                _message(3, "b"),
            ],
            add_activities=[_work(4, "a"), _work(5, "b")],
        )
    )


def test_commit_and_read_back(store: Store) -> None:
    _fill(store)
    assert store.get_instance("a") == _record("a")
    assert store.get_instance("nope") is None
    assert store.history("a") == ['{"EventType": 12}', '{"EventType": 0}']
    assert [m.msg_id for m in store.messages()] == [1, 2, 3]
    assert store.messages()[1].due == T0 + timedelta(hours=1)
    assert [w.work_id for w in store.activities()] == [4, 5]
    assert store.max_id() == 5
    store.commit(
        Commit(
            history_append=[("a", ['{"EventType": 13}'])],
            delete_messages=[1],
            delete_activities=[4],
            instances=[_record("a", "Completed")],
        )
    )
    assert store.history("a")[-1] == '{"EventType": 13}'
    assert [m.msg_id for m in store.messages()] == [2, 3]
    assert [w.work_id for w in store.activities()] == [5]
    assert store.get_instance("a").status == "Completed"  # type: ignore[union-attr]
    store.commit(Commit(history_reset=["a"], delete_instance_messages=["a"]))
    assert store.history("a") == []
    assert [m.msg_id for m in store.messages()] == [3]


def test_query_filters_and_pages(store: Store) -> None:
    _fill(store)
    everything = store.query_instances(InstanceFilter(), None, None)
    assert [r.instance_id for r in everything] == ["a", "b", "c"]
    finished = store.query_instances(InstanceFilter(statuses={"Completed", "Failed"}), None, None)
    assert [r.instance_id for r in finished] == ["b", "c"]
    window = InstanceFilter(
        created_from=T0 + timedelta(minutes=1), created_to=T0 + timedelta(minutes=2)
    )
    assert [r.instance_id for r in store.query_instances(window, None, None)] == ["b", "c"]
    assert [
        r.instance_id for r in store.query_instances(InstanceFilter(prefix="b"), None, None)
    ] == ["b"]
    assert store.query_instances(InstanceFilter(statuses=set()), None, None) == []
    first = store.query_instances(InstanceFilter(), None, 2)
    assert [r.instance_id for r in first] == ["a", "b"]
    after = ("2025-01-01T00:01:00.000000Z", "b")
    assert [r.instance_id for r in store.query_instances(InstanceFilter(), after, 2)] == ["c"]


def test_purge_removes_everything_of_an_instance(store: Store) -> None:
    _fill(store)
    store.commit(Commit(purge_instances=["a"]))
    assert store.get_instance("a") is None
    assert store.history("a") == []
    assert [m.instance_id for m in store.messages()] == ["b"]
    assert [w.instance_id for w in store.activities()] == ["b"]


def test_a_failed_commit_changes_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    _fill(store)
    with pytest.raises(Exception, match="UNIQUE"):
        store.commit(Commit(add_messages=[_message(9, "a"), _message(9, "a")], delete_messages=[3]))
    assert [m.msg_id for m in store.messages()] == [1, 2, 3]
    store.commit(Commit(history_append=[("a", ["{}"])]))
    assert len(store.history("a")) == 3
    store.close()


def test_sqlite_keeps_everything_across_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    first = open_store(path)
    assert isinstance(first, SqliteStore)
    _fill(first)
    first.close()
    again = open_store(path)
    try:
        assert again.get_instance("a") == _record("a")
        assert again.history("a") == ['{"EventType": 12}', '{"EventType": 0}']
        again.commit(Commit(history_append=[("a", ['{"EventType": 13}'])]))
        assert len(again.history("a")) == 3
        assert [m.msg_id for m in again.messages()] == [1, 2, 3]
        assert [w.work_id for w in again.activities()] == [4, 5]
    finally:
        again.close()
    assert isinstance(open_store(":memory:"), MemoryStore)


def _normalised(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for event in events:
        event = dict(event)
        event.pop("OrchestrationInstance", None)  # carries a random execution id
        parent = event.get("ParentInstance")
        if parent:
            event["ParentInstance"] = {**parent, "OrchestrationInstance": None}
        out.append(event)
    return out


def _run_scenarios(store: Store) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with running_engine(store) as (engine, clock, _):
        clock.pause()
        starts = [
            ("hello_sequence", "s-hello", ["a", "b"]),
            (
                "with_retry",
                "s-retry",
                {"key": "k", "fail_times": 1, "first_ms": 2000, "attempts": 3},
            ),
            ("timer_chain", "s-timers", {"count": 3, "minutes": 7}),
            ("parent", "s-parent", [{"value": 5}]),
            ("counter_plain", "s-counter", {"n": 0, "limit": 2}),
            ("wait_event", "s-events", None),
            ("raises", "s-raises", None),
        ]
        for name, iid, data in starts:
            engine.start_new(name, iid, data)
        engine.raise_event("s-events", "Approval", 1)
        engine.raise_event("s-events", "Approval", 2)
        clock.resume()
        for _, iid, _ in starts:
            status = engine.wait_for(iid, 20)
            results[iid] = (
                status["runtimeStatus"],
                status["output"],
                _normalised(raw_history(engine, iid)),
            )
        results["query"] = [s["instanceId"] for s in engine.query(runtime_status=["Completed"])[0]]
    return results


def test_engine_runs_identically_on_both_stores(tmp_path: Path) -> None:
    in_memory = _run_scenarios(MemoryStore())
    on_disk = _run_scenarios(SqliteStore(tmp_path / "parity.sqlite"))
    assert in_memory.keys() == on_disk.keys()
    for key in in_memory:
        assert in_memory[key] == on_disk[key], key
