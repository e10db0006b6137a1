"""Orchestration history events as the Durable Task Framework records them, and their encodings.

An orchestration's history is the list of events the host replays to the SDK on every episode:
``OrchestratorStarted``, ``ExecutionStarted``, ``TaskScheduled``/``TaskCompleted``/``TaskFailed``,
sub-orchestration, timer and external-event events, ``ContinueAsNew``, ``ExecutionCompleted``,
``ExecutionTerminated`` and ``OrchestratorCompleted``. Events are plain dicts with the PascalCase
keys of DTFx (``EventType`` as the DTFx number, ``EventId``, ``Timestamp``, ...); ``IsPlayed``
is added when the request to the SDK is built. This module builds them, encodes them for the
orchestrator request and renders them for the Durable HTTP API's ``historyEvents``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

Event = dict[str, Any]


class EventType(IntEnum):
    """DTFx ``EventType`` numbers (azure.durable_functions.models.history.HistoryEventType)."""

    ExecutionStarted = 0
    ExecutionCompleted = 1
    ExecutionFailed = 2
    ExecutionTerminated = 3
    TaskScheduled = 4
    TaskCompleted = 5
    TaskFailed = 6
    SubOrchestrationInstanceCreated = 7
    SubOrchestrationInstanceCompleted = 8
    SubOrchestrationInstanceFailed = 9
    TimerCreated = 10
    TimerFired = 11
    OrchestratorStarted = 12
    OrchestratorCompleted = 13
    EventSent = 14
    EventRaised = 15
    ContinueAsNew = 16
    GenericEvent = 17
    HistoryState = 18
    ExecutionSuspended = 19
    ExecutionResumed = 20


def iso(value: datetime) -> str:
    """A UTC timestamp as DTFx writes it: ``2025-01-01T00:00:00.000000Z`` (fixed width)."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} where UTC is required")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str, what: str = "timestamp") -> datetime:
    """Parse an ISO 8601 timestamp; a value without offset is taken as UTC (as the SDK writes)."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"{what} must be an ISO 8601 string, got {text!r}")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{what} is not an ISO 8601 timestamp: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _event(kind: EventType, at: datetime, event_id: int = -1, **fields: Any) -> Event:
    event: Event = {"EventType": int(kind), "EventId": event_id, "Timestamp": iso(at)}
    event.update(fields)
    return event


def orchestrator_started(at: datetime) -> Event:
    return _event(EventType.OrchestratorStarted, at)


def orchestrator_completed(at: datetime) -> Event:
    return _event(EventType.OrchestratorCompleted, at)


def execution_started(
    at: datetime,
    *,
    name: str,
    input_json: str | None,
    instance_id: str,
    execution_id: str,
    parent_instance_id: str | None = None,
    parent_execution_id: str | None = None,
    parent_task_id: int | None = None,
    parent_name: str | None = None,
) -> Event:
    """``ExecutionStarted``: the SDK 1.7.0 reads ``Version`` (AttributeError without it)."""
    parent: dict[str, Any] | None = None
    if parent_instance_id is not None:
        parent = {
            "Name": parent_name,
            "TaskScheduleId": parent_task_id,
            "OrchestrationInstance": {
                "InstanceId": parent_instance_id,
                "ExecutionId": parent_execution_id,
            },
        }
    return _event(
        EventType.ExecutionStarted,
        at,
        Name=name,
        Version="",
        Input=input_json,
        OrchestrationInstance={"InstanceId": instance_id, "ExecutionId": execution_id},
        ParentInstance=parent,
    )


def task_scheduled(at: datetime, event_id: int, *, name: str, input_json: str | None) -> Event:
    return _event(EventType.TaskScheduled, at, event_id, Name=name, Version="", Input=input_json)


def task_completed(at: datetime, scheduled_id: int, result_json: str | None) -> Event:
    return _event(EventType.TaskCompleted, at, TaskScheduledId=scheduled_id, Result=result_json)


def task_failed(at: datetime, scheduled_id: int, reason: str, details: str | None) -> Event:
    return _event(
        EventType.TaskFailed, at, TaskScheduledId=scheduled_id, Reason=reason, Details=details
    )


def sub_orchestration_created(
    at: datetime, event_id: int, *, name: str, instance_id: str, input_json: str | None
) -> Event:
    return _event(
        EventType.SubOrchestrationInstanceCreated,
        at,
        event_id,
        Name=name,
        Version="",
        InstanceId=instance_id,
        Input=input_json,
    )


def sub_orchestration_completed(at: datetime, scheduled_id: int, result_json: str | None) -> Event:
    return _event(
        EventType.SubOrchestrationInstanceCompleted,
        at,
        TaskScheduledId=scheduled_id,
        Result=result_json,
    )


def sub_orchestration_failed(
    at: datetime, scheduled_id: int, reason: str, details: str | None
) -> Event:
    return _event(
        EventType.SubOrchestrationInstanceFailed,
        at,
        TaskScheduledId=scheduled_id,
        Reason=reason,
        Details=details,
    )


def timer_created(at: datetime, event_id: int, fire_at: datetime) -> Event:
    return _event(EventType.TimerCreated, at, event_id, FireAt=iso(fire_at))


def timer_fired(at: datetime, timer_id: int, fire_at: datetime) -> Event:
    return _event(EventType.TimerFired, at, TimerId=timer_id, FireAt=iso(fire_at))


def event_sent(
    at: datetime, event_id: int, instance_id: str, name: str, input_json: str | None
) -> Event:
    """``EventSent``: a message to another instance (an entity request carries its ``id``)."""
    return _event(
        EventType.EventSent, at, event_id, InstanceId=instance_id, Name=name, Input=input_json
    )


def event_raised(at: datetime, name: str, input_json: str | None) -> Event:
    return _event(EventType.EventRaised, at, Name=name, Input=input_json)


def continue_as_new(at: datetime, event_id: int, input_json: str | None) -> Event:
    return _event(EventType.ContinueAsNew, at, event_id, Result=input_json)


def execution_completed(
    at: datetime,
    event_id: int,
    *,
    status: str,
    result_json: str | None,
    failure: dict[str, Any] | None = None,
) -> Event:
    """``ExecutionCompleted`` with ``OrchestrationStatus`` Completed, Failed or Terminated."""
    return _event(
        EventType.ExecutionCompleted,
        at,
        event_id,
        OrchestrationStatus=status,
        Result=result_json,
        FailureDetails=failure,
    )


def execution_terminated(at: datetime, reason_json: str | None) -> Event:
    return _event(EventType.ExecutionTerminated, at, Input=reason_json)


# -- encoding -------------------------------------------------------------------------------------
def encode(event: Event, played: bool) -> str:
    """One event as JSON for the orchestrator request, with ``IsPlayed``."""
    body = dict(event)
    body["IsPlayed"] = played
    return json.dumps(body, separators=(",", ":"))


def _loads_or_text(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def status_history(events: list[Event], show_output: bool) -> list[dict[str, Any]]:
    """Render a history as the Durable HTTP API's ``historyEvents``.

    As the Functions host does: ``OrchestratorStarted``/``OrchestratorCompleted`` and the
    scheduling events (``TaskScheduled``, ``SubOrchestrationInstanceCreated``) are folded into
    the events that complete them (``FunctionName``, ``ScheduledTime``); ``EventType`` is the
    name; ``Result``/``Input`` payloads only with ``showHistoryOutput``.
    """
    scheduled: dict[int, Event] = {}
    for event in events:
        if event["EventType"] in (
            EventType.TaskScheduled,
            EventType.SubOrchestrationInstanceCreated,
        ):
            scheduled[int(event["EventId"])] = event
    out: list[dict[str, Any]] = []
    for event in events:
        kind = EventType(event["EventType"])
        if kind in (
            EventType.OrchestratorStarted,
            EventType.OrchestratorCompleted,
            EventType.TaskScheduled,
            EventType.SubOrchestrationInstanceCreated,
        ):
            continue
        item: dict[str, Any] = {"EventType": kind.name, "EventId": event.get("EventId", -1)}
        item["Timestamp"] = event["Timestamp"]
        if kind is EventType.ExecutionStarted:
            item["FunctionName"] = event.get("Name")
            parent = event.get("ParentInstance")
            if parent:
                item["ParentInstanceId"] = parent["OrchestrationInstance"]["InstanceId"]
            if show_output:
                item["Input"] = _loads_or_text(event.get("Input"))
        elif kind in (
            EventType.TaskCompleted,
            EventType.TaskFailed,
            EventType.SubOrchestrationInstanceCompleted,
            EventType.SubOrchestrationInstanceFailed,
        ):
            source = scheduled.get(int(event.get("TaskScheduledId", -1)))
            if source is not None:
                item["FunctionName"] = source.get("Name")
                item["ScheduledTime"] = source["Timestamp"]
                if source.get("InstanceId"):
                    item["InstanceId"] = source["InstanceId"]
            item["TaskScheduledId"] = event.get("TaskScheduledId")
            if kind in (EventType.TaskFailed, EventType.SubOrchestrationInstanceFailed):
                item["Reason"] = event.get("Reason")
                if show_output:
                    item["Details"] = event.get("Details")
            elif show_output:
                item["Result"] = _loads_or_text(event.get("Result"))
        elif kind in (EventType.TimerCreated, EventType.TimerFired):
            item["FireAt"] = event.get("FireAt")
            if kind is EventType.TimerFired:
                item["TimerId"] = event.get("TimerId")
        elif kind is EventType.EventSent:
            item["InstanceId"] = event.get("InstanceId")
            item["Name"] = event.get("Name")
            if show_output:
                item["Input"] = _loads_or_text(event.get("Input"))
        elif kind is EventType.EventRaised:
            item["Name"] = event.get("Name")
            if show_output:
                item["Input"] = _loads_or_text(event.get("Input"))
        elif kind is EventType.ExecutionCompleted:
            item["OrchestrationStatus"] = event.get("OrchestrationStatus")
            if show_output or event.get("OrchestrationStatus") != "Completed":
                item["Result"] = _loads_or_text(event.get("Result"))
        elif kind is EventType.ExecutionTerminated:
            item["Input"] = _loads_or_text(event.get("Input"))
        elif kind is EventType.ContinueAsNew and show_output:
            item["Input"] = _loads_or_text(event.get("Result"))
        out.append(item)
    return out
