"""A test app: the real wait orchestrator and a flow exerciser, over scripted activities."""

from __future__ import annotations

import threading
from typing import Any

import azure.durable_functions as df

from orchestrators import wait
from orchestrators._flow import RetryPolicy, call
from shared.errors import PermanentError, TemporaryError

bp = df.Blueprint()

# Scripted behaviour, set by the tests: name -> list of outcomes ("ok", "temp", "perm").
SCRIPT: dict[str, list[str]] = {}
CALLS: dict[str, int] = {}
_lock = threading.Lock()
STATES: list[dict[str, Any]] = []
# Every state the probe answered or raised, in order (to check what the wait did).
PROBED: list[dict[str, Any]] = []


@bp.activity_trigger(input_name="payload", activity="flaky")
def flaky(payload: dict[str, Any]) -> dict[str, Any]:
    key = payload["key"]
    with _lock:
        CALLS[key] = CALLS.get(key, 0) + 1
        outcome = SCRIPT[key].pop(0) if SCRIPT[key] else "ok"
    if outcome == "temp":
        raise TemporaryError("throttled", retry_after=5)
    if outcome == "perm":
        raise PermanentError("the image is broken")
    return {"key": key, "calls": CALLS[key]}


@bp.activity_trigger(input_name="payload", activity="probe")
def probe(payload: dict[str, Any]) -> dict[str, Any]:
    with _lock:
        state = STATES.pop(0) if STATES else {"exists": False}
        PROBED.append(state)
    if state.get("_raise") == "temp":
        raise TemporaryError("503 ServiceUnavailable", retry_after=state.get("_retry_after"))
    if state.get("_raise") == "perm":
        raise PermanentError("AuthorizationFailed: no read permission")
    return state


@bp.orchestration_trigger(context_name="context", orchestration="exercise_call")
def exercise_call(context: df.DurableOrchestrationContext) -> Any:
    args = context.get_input()
    policy = RetryPolicy(max_attempts=int(args.get("attempts", 4)))
    result = yield from call(context, "flaky", {"key": args["key"]}, policy)
    return result


@bp.orchestration_trigger(context_name="context", orchestration="exercise_wait")
def exercise_wait(context: df.DurableOrchestrationContext) -> Any:
    from datetime import timedelta

    from orchestrators._flow import now

    args = context.get_input()
    state = yield from wait.wait(
        context,
        "probe",
        {},
        args["verdict"],
        interval=timedelta(seconds=10),
        deadline=now(context) + timedelta(seconds=int(args.get("deadline_s", 3600))),
        what="the probe",
        args=args.get("args"),
    )
    return state


# The resource an event-first wait in these tests watches (its events are raised by the tests).
WATCHED = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-image-factory/"
    "providers/Microsoft.Compute/virtualMachines/vm-watched"
)


@bp.orchestration_trigger(context_name="context", orchestration="exercise_event_wait")
def exercise_event_wait(context: df.DurableOrchestrationContext) -> Any:
    """An event-first wait on ``WATCHED``: events end it, a safety poll backs them up."""
    from datetime import timedelta

    from orchestrators._flow import now

    args = context.get_input()
    state = yield from wait.wait(
        context,
        "probe",
        {},
        args["verdict"],
        interval=timedelta(seconds=10),
        deadline=now(context) + timedelta(seconds=int(args.get("deadline_s", 86400))),
        what="the watched VM",
        resource_id=WATCHED,
        event_kind=args.get("kind", "delete"),
        safety_interval=timedelta(seconds=int(args.get("safety_s", 300))),
    )
    return state
