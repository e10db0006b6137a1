"""Shared set-up for the engine tests: a virtual clock, a store, a started engine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from engine_harness import index_for, load

from devhost.clock import VirtualClock
from devhost.engine import Engine
from devhost.history import EventType
from devhost.store import MemoryStore, SqliteStore, Store

T0 = datetime(2025, 1, 1, tzinfo=UTC)
APP_MODULE = "engine_sample_app"


def sample_app() -> ModuleType:
    return load(APP_MODULE)


@contextmanager
def running_engine(
    store: Store | None = None, *, start: datetime = T0, workers: int = 4
) -> Iterator[tuple[Engine, VirtualClock, ModuleType]]:
    """A started engine over the sample app on a fresh virtual clock."""
    app = sample_app()
    clock = VirtualClock(start)
    app.reset(clock.now)
    engine = Engine(
        index_for(APP_MODULE),
        store if store is not None else MemoryStore(),
        clock,
        activity_workers=workers,
    )
    engine.start()
    try:
        yield engine, clock, app
    finally:
        app.GATE.set()
        engine.stop()
        clock.close()
        engine.store.close()


def sqlite_store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "devhost.sqlite")


def raw_history(engine: Engine, instance_id: str) -> list[dict[str, Any]]:
    return [json.loads(text) for text in engine.store.history(instance_id)]


def check_history(events: list[dict[str, Any]]) -> None:
    """DTFx invariants: unique EventIds, completions point at scheduled tasks of the right kind."""
    scheduled: dict[int, int] = {}
    for event in events:
        kind = event["EventType"]
        if kind in (
            EventType.TaskScheduled,
            EventType.SubOrchestrationInstanceCreated,
            EventType.TimerCreated,
        ):
            assert event["EventId"] not in scheduled, f"EventId {event['EventId']} reused"
            scheduled[event["EventId"]] = kind
    assert events[0]["EventType"] == EventType.OrchestratorStarted
    assert events[1]["EventType"] == EventType.ExecutionStarted
    assert events[1]["Version"] == ""
    for event in events:
        kind = event["EventType"]
        if kind in (EventType.TaskCompleted, EventType.TaskFailed):
            assert scheduled.get(event["TaskScheduledId"]) == EventType.TaskScheduled
        elif kind in (
            EventType.SubOrchestrationInstanceCompleted,
            EventType.SubOrchestrationInstanceFailed,
        ):
            expected = EventType.SubOrchestrationInstanceCreated
            assert scheduled.get(event["TaskScheduledId"]) == expected
        elif kind == EventType.TimerFired:
            assert scheduled.get(event["TimerId"]) == EventType.TimerCreated


def of_type(events: list[dict[str, Any]], kind: EventType) -> list[dict[str, Any]]:
    return [e for e in events if e["EventType"] == kind]
