"""Durable entities and continue-as-new held to the SDK's and the host's semantics."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "apps"))
from engine_harness import index_for
from engine_support import T0, raw_history

from devhost.clock import VirtualClock
from devhost.engine import Engine, entity_instance_id
from devhost.functions import UnknownFunctionError
from devhost.history import EventType
from devhost.store import MemoryStore, SqliteStore, Store


@contextmanager
def entity_engine(store: Store | None = None) -> Iterator[tuple[Engine, VirtualClock]]:
    clock = VirtualClock(T0)
    engine = Engine(index_for("engine_entity_app"), store or MemoryStore(), clock)
    engine.start()
    try:
        yield engine, clock
    finally:
        engine.stop()
        clock.close()
        engine.store.close()


def state_of(engine: Engine, key: str) -> dict[str, object] | None:
    exists, state = engine.read_entity("Counter", key)
    return json.loads(state) if exists and state is not None else None


# -- continue-as-new ----------------------------------------------------------------------------
def test_an_unconsumed_event_is_discarded_at_continue_as_new() -> None:
    with entity_engine() as (engine, clock):
        clock.pause()
        iid = engine.start_new("generations", "gen-lost")
        engine.wait_for(iid, 10, statuses=("Running",))
        engine.raise_event(iid, "x", "too early")  # generation 0 never waits for it
        engine.wait_idle(10)
        clock.resume()
        status = engine.wait_for(iid, 10)
        assert status["output"] == {"winner": "timer"}
        raised = [e for e in raw_history(engine, iid) if e["EventType"] == EventType.EventRaised]
        assert raised == []


def test_an_event_raised_after_the_continue_as_new_reaches_the_new_execution() -> None:
    with entity_engine() as (engine, clock):
        clock.pause()
        iid = engine.start_new("generations", "gen-kept")
        engine.wait_idle(10)
        clock.advance(timedelta(minutes=1))  # generation 0's timer: it continues as new
        engine.wait_idle(10)
        status = engine.get_status(iid)
        assert status is not None
        assert (status["input"], status["runtimeStatus"]) == ({"gen": 1}, "Running")
        engine.raise_event(iid, "x", "in time")
        clock.resume()
        status = engine.wait_for(iid, 10)
        assert status["output"] == {"winner": "event", "value": "in time"}


# -- entities -----------------------------------------------------------------------------------
def test_call_entity_returns_results_and_a_failed_operation_fails_the_task() -> None:
    with entity_engine() as (engine, _):
        iid = engine.start_new("call_counter", "calls", {"key": "k1", "amounts": [2, 3]})
        output = engine.wait_for(iid, 10)["output"]
        assert output == [2, 5, {"error": "counter refused: please"}, 5]
        assert state_of(engine, "k1") == {"value": 5, "log": [2, 3]}
        events = raw_history(engine, iid)
        sent = [e for e in events if e["EventType"] == EventType.EventSent]
        raised = [e for e in events if e["EventType"] == EventType.EventRaised]
        # One EventSent per call, numbered as the SDK numbers its tasks, named by the request id.
        assert [e["EventId"] for e in sent] == [0, 1, 2, 3]
        assert {e["InstanceId"] for e in sent} == {"@counter@k1"}
        ids = [json.loads(e["Input"])["id"] for e in sent]
        assert [e["Name"] for e in raised] == ids
        responses = [json.loads(e["Input"]) for e in raised]
        assert responses[0] == {"result": "2"}
        assert responses[2] == {"result": '"counter refused: please"', "exceptionType": "Error"}


def test_signals_from_orchestrations_and_clients_run_in_arrival_order() -> None:
    with entity_engine() as (engine, clock):
        clock.pause()
        engine.signal_entity("counter", "k2", "add", json.dumps(json.dumps(1)))
        iid = engine.start_new("signal_counter", None, {"key": "k2", "amounts": [10, 20, 30]})
        assert engine.wait_for(iid, 10)["output"] == "signalled"
        engine.signal_entity("Counter", "k2", "add", json.dumps(json.dumps(100)))
        clock.resume()
        engine.wait_idle(10)
        assert state_of(engine, "k2") == {"value": 161, "log": [1, 10, 20, 30, 100]}


def test_entity_state_is_durable_and_deleted_entities_read_as_missing(tmp_path: Path) -> None:
    path = tmp_path / "devhost.sqlite"
    with entity_engine(SqliteStore(path)) as (engine, _):
        engine.signal_entity("Counter", "k3", "add", json.dumps(json.dumps(7)))
        engine.signal_entity("Counter", "gone", "add", json.dumps(json.dumps(1)))
        engine.signal_entity("Counter", "gone", "delete")
        engine.wait_idle(10)
    with entity_engine(SqliteStore(path)) as (engine, _):
        assert state_of(engine, "k3") == {"value": 7, "log": [7]}
        assert engine.read_entity("Counter", "gone") == (False, None)
        assert engine.read_entity("Counter", "never") == (False, None)
        iid = engine.start_new("call_counter", None, {"key": "k3", "amounts": [1]})
        assert engine.wait_for(iid, 10)["output"][0] == 8
        assert entity_instance_id("Counter", "k3") == "@counter@k3"


def test_a_signal_without_input_fails_get_input_as_on_azure() -> None:
    with entity_engine() as (engine, _):
        engine.signal_entity("Counter", "k4", "add", json.dumps(json.dumps(2)))
        engine.signal_entity("Counter", "k4", "add")  # no body: the request input is null
        engine.wait_idle(10)
        assert state_of(engine, "k4") == {"value": 2, "log": [2]}


def test_signalling_an_unknown_entity_is_refused() -> None:
    with entity_engine() as (engine, _), pytest.raises(UnknownFunctionError):
        engine.signal_entity("nobody", "k", "add")


def test_a_signal_takes_a_sequence_number_and_a_later_call_still_matches() -> None:
    # The extension numbers a SignalEntity action and SDK 1.7 counts it as well, so a call
    # after a signal is EventSent 1 and its response completes the SDK's task 1.
    with entity_engine() as (engine, _):
        iid = engine.start_new("signal_then_call", "numbered", "k5")
        assert engine.wait_for(iid, 10)["output"] == 1
        sent = [e for e in raw_history(engine, iid) if e["EventType"] == EventType.EventSent]
        assert [(e["EventId"], json.loads(e["Input"])["signal"]) for e in sent] == [
            (0, True),
            (1, False),
        ]
        assert state_of(engine, "k5") == {"value": 1, "log": [1]}
