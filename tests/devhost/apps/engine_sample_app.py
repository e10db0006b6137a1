"""A blueprint of small orchestrations that exercise every action the devhost engine handles.

Activities record what happened (calls, attempts and their host times) in module-level state
the tests read; ``NOW`` holds the host clock's ``now`` so activities can stamp attempts.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

bp = df.Blueprint()

LOCK = threading.Lock()
CALLS: dict[str, list[Any]] = {}
ATTEMPTS: dict[str, list[datetime | None]] = {}
NOW: list[Callable[[], datetime]] = []
SWITCH = {"version": 1}  # changes the non-determinism orchestrator's code path


def reset(now: Callable[[], datetime] | None = None) -> None:
    with LOCK:
        CALLS.clear()
        ATTEMPTS.clear()
        NOW.clear()
        if now is not None:
            NOW.append(now)
    SWITCH["version"] = 1
    GATE.clear()


def _record(name: str, value: Any) -> None:
    with LOCK:
        CALLS.setdefault(name, []).append(value)


# -- activities ---------------------------------------------------------------------------------
@bp.activity_trigger(input_name="name")
def say_hello(name: str) -> str:
    _record("say_hello", name)
    return f"Hello {name}!"


@bp.activity_trigger(input_name="value")
def double(value: int) -> int:
    _record("double", value)
    return value * 2


@bp.activity_trigger(input_name="value")
async def async_double(value: int) -> int:
    await asyncio.sleep(0)
    _record("async_double", value)
    return value * 2


@bp.activity_trigger(input_name="payload")
def echo(payload: Any) -> Any:
    _record("echo", payload)
    return payload


@bp.activity_trigger(input_name="payload")
def flaky(payload: dict[str, Any]) -> str:
    """Fails until it has been called ``fail_times`` times for ``key``."""
    key = payload["key"]
    with LOCK:
        ATTEMPTS.setdefault(key, []).append(NOW[0]() if NOW else None)
        count = len(ATTEMPTS[key])
    if count <= int(payload["fail_times"]):
        raise RuntimeError(f"TemporaryError: attempt {count} of {key} failed")
    return f"{key} ok after {count}"


@bp.activity_trigger(input_name="payload")
def boom(payload: Any) -> None:
    raise ValueError(f"PermanentError: boom {payload}")


@bp.activity_trigger(input_name="payload")
def not_serializable(payload: Any) -> Any:
    return {"when": object()}


# -- orchestrators ------------------------------------------------------------------------------
@bp.orchestration_trigger(context_name="context")
def hello_sequence(context: df.DurableOrchestrationContext) -> Any:
    out = []
    for city in context.get_input() or ["Tokyo", "Seattle", "London"]:
        out.append((yield context.call_activity("say_hello", city)))
    return out


@bp.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext) -> Any:
    count = int(context.get_input())
    tasks = [context.call_activity("double", i) for i in range(count)]
    tasks.append(context.call_activity("async_double", 100))
    results = yield context.task_all(tasks)
    return sum(results)


@bp.orchestration_trigger(context_name="context")
def with_retry(context: df.DurableOrchestrationContext) -> Any:
    spec = context.get_input()
    options = df.RetryOptions(spec["first_ms"], spec["attempts"])
    try:
        result = yield context.call_activity_with_retry("flaky", options, spec)
    except Exception as exc:
        return {"failed": str(exc).split(" \n ")[0]}
    after = yield context.call_activity("say_hello", "after")
    return {"result": result, "after": after}


@bp.orchestration_trigger(context_name="context")
def timer_chain(context: df.DurableOrchestrationContext) -> Any:
    spec = context.get_input()
    stamps = [context.current_utc_datetime.isoformat()]
    for _ in range(int(spec["count"])):
        yield context.create_timer(
            context.current_utc_datetime + timedelta(minutes=float(spec["minutes"]))
        )
        stamps.append(context.current_utc_datetime.isoformat())
    return stamps


@bp.orchestration_trigger(context_name="context")
def timer_order(context: df.DurableOrchestrationContext) -> Any:
    """Three timers at once; the order in which they fire, as seen by task_any."""
    now = context.current_utc_datetime
    timers = {
        "c": context.create_timer(now + timedelta(minutes=30)),
        "a": context.create_timer(now + timedelta(minutes=10)),
        "b": context.create_timer(now + timedelta(minutes=20)),
    }
    order = []
    pending = dict(timers)
    while pending:
        winner = yield context.task_any(list(pending.values()))
        name = next(k for k, t in pending.items() if t == winner)
        order.append([name, context.current_utc_datetime.isoformat()])
        del pending[name]
    return order


@bp.orchestration_trigger(context_name="context")
def long_timer(context: df.DurableOrchestrationContext) -> Any:
    start = context.current_utc_datetime
    yield context.create_timer(start + timedelta(days=float(context.get_input())))
    return (context.current_utc_datetime - start).total_seconds()


@bp.orchestration_trigger(context_name="context")
def wait_event(context: df.DurableOrchestrationContext) -> Any:
    context.set_custom_status("waiting")
    first = yield context.wait_for_external_event("Approval")
    second = yield context.wait_for_external_event("Approval")
    return [first, second]


@bp.orchestration_trigger(context_name="context")
def event_or_timeout(context: df.DurableOrchestrationContext) -> Any:
    minutes = float(context.get_input())
    event = context.wait_for_external_event("go")
    timer = context.create_timer(context.current_utc_datetime + timedelta(minutes=minutes))
    winner = yield context.task_any([event, timer])
    if winner == event:
        timer.cancel()
        return {"winner": "event", "value": event.result}
    return {"winner": "timer", "at": context.current_utc_datetime.isoformat()}


@bp.orchestration_trigger(context_name="context")
def child(context: df.DurableOrchestrationContext) -> Any:
    spec = context.get_input()
    if spec.get("fail"):
        yield context.call_activity("boom", spec.get("id"))
    return (yield context.call_activity("double", spec["value"]))


@bp.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext) -> Any:
    specs = context.get_input()
    tasks = [
        context.call_sub_orchestrator("child", spec, spec.get("instance_id")) for spec in specs
    ]
    try:
        results = yield context.task_all(tasks)
    except Exception as exc:
        return {"failed": str(exc).split(" \n ")[0]}
    return {"results": results}


@bp.orchestration_trigger(context_name="context")
def sub_with_retry(context: df.DurableOrchestrationContext) -> Any:
    spec = context.get_input()
    options = df.RetryOptions(1000, 2)
    try:
        yield context.call_sub_orchestrator_with_retry("child", options, spec, spec.get("iid"))
    except Exception as exc:
        return {"failed": str(exc).split(" \n ")[0]}
    return "unexpected"


@bp.orchestration_trigger(context_name="context")
def counter(context: df.DurableOrchestrationContext) -> Any:
    """Continue-as-new until the count reaches the limit; collects one event per generation."""
    state = context.get_input()
    if state.get("events"):
        value = yield context.wait_for_external_event("add")
        state["seen"] = [*state.get("seen", []), value]
    state["n"] += 1
    if state["n"] < state["limit"]:
        context.continue_as_new(state)
        return None
    return state


@bp.orchestration_trigger(context_name="context")
def counter_plain(context: df.DurableOrchestrationContext) -> Any:
    state = context.get_input()
    yield context.call_activity("double", state["n"])
    state["n"] += 1
    if state["n"] < state["limit"]:
        context.continue_as_new(state)
        return None
    return state


@bp.orchestration_trigger(context_name="context")
def raises(context: df.DurableOrchestrationContext) -> Any:
    yield context.call_activity("double", 1)
    raise ValueError("the orchestrator gave up")


@bp.orchestration_trigger(context_name="context")
def calls_failing(context: df.DurableOrchestrationContext) -> Any:
    name = context.get_input()
    try:
        yield context.call_activity(name, {"x": 1})
    except Exception as exc:
        return {"error": str(exc)}
    return "no error"


@bp.orchestration_trigger(context_name="context")
def undecodable(context: df.DurableOrchestrationContext) -> Any:
    payload = {"__class__": "Ghost", "__module__": "not_a_loaded_module", "__data__": {}}
    try:
        yield context.call_activity("echo", payload)
    except Exception as exc:
        return {"error": str(exc).split(" \n ")[0]}
    return "decoded?"


@bp.orchestration_trigger(context_name="context")
def changing(context: df.DurableOrchestrationContext) -> Any:
    """Its first action depends on SWITCH: changing it between episodes is non-deterministic."""
    name = "say_hello" if SWITCH["version"] == 1 else "double"
    yield context.call_activity(name, "x" if name == "say_hello" else 1)
    yield context.wait_for_external_event("continue")
    return "done"


@bp.orchestration_trigger(context_name="context")
def status_steps(context: df.DurableOrchestrationContext) -> Any:
    context.set_custom_status({"step": 1})
    yield context.create_timer(context.current_utc_datetime + timedelta(minutes=1))
    context.set_custom_status({"step": 2})
    yield context.wait_for_external_event("finish")
    return "finished"


@bp.orchestration_trigger(context_name="context")
def forever(context: df.DurableOrchestrationContext) -> Any:
    yield context.wait_for_external_event("never")
    return "never"


@bp.orchestration_trigger(context_name="context")
def calls_unknown(context: df.DurableOrchestrationContext) -> Any:
    try:
        yield context.call_activity("no_such_activity", 1)
    except Exception as exc:
        return {"error": str(exc).split(" \n ")[0]}
    return "found?"


class BackoffRetryOptions(df.RetryOptions):
    """RetryOptions that also send the DTFx back-off fields (SDK 1.7 only sends the first two)."""

    def __init__(self, first_ms: int, attempts: int, backoff: float, max_ms: int) -> None:
        super().__init__(first_ms, attempts)
        self.backoff = backoff
        self.max_ms = max_ms

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(super().to_json())
        data["backoffCoefficient"] = self.backoff
        data["maxRetryIntervalInMilliseconds"] = self.max_ms
        return data


@bp.orchestration_trigger(context_name="context")
def backoff_retry(context: df.DurableOrchestrationContext) -> Any:
    spec = context.get_input()
    options = BackoffRetryOptions(
        spec["first_ms"], spec["attempts"], spec["backoff"], spec["max_ms"]
    )
    return (yield context.call_activity_with_retry("flaky", options, spec))


@bp.orchestration_trigger(context_name="context")
def retry_parallel(context: df.DurableOrchestrationContext) -> Any:
    """Retried calls next to plain ones: retry ids interleave with later actions."""
    specs = context.get_input()
    options = df.RetryOptions(1000, 5)
    tasks = [context.call_activity_with_retry("flaky", options, spec) for spec in specs]
    tasks.append(context.call_activity("double", 21))
    first = yield context.task_all(tasks)
    second = yield context.task_all(
        [
            context.call_activity("double", 1),
            context.call_activity_with_retry("flaky", options, specs[0]),
        ]
    )
    timer = yield context.create_timer(context.current_utc_datetime + timedelta(seconds=1))
    return {"first": first, "second": second, "timer": timer is None}


@bp.orchestration_trigger(context_name="context")
def parent_of_forever(context: df.DurableOrchestrationContext) -> Any:
    try:
        yield context.call_sub_orchestrator("forever", None, context.get_input())
    except Exception as exc:
        return {"failed": str(exc).split(" \n ")[0]}
    return "child finished"


GATE = threading.Event()


@bp.activity_trigger(input_name="payload")
def gate(payload: Any) -> str:
    if not GATE.wait(timeout=20):
        raise TimeoutError("the test never opened the gate")
    return "through"


@bp.orchestration_trigger(context_name="context")
def gated(context: df.DurableOrchestrationContext) -> Any:
    return (yield context.call_activity("gate", None))


@bp.orchestration_trigger(context_name="context")
def sleepy(context: df.DurableOrchestrationContext) -> Any:
    yield context.create_timer(
        context.current_utc_datetime + timedelta(minutes=float(context.get_input()))
    )
    return context.current_utc_datetime.isoformat()


@bp.orchestration_trigger(context_name="context")
def uses_http(context: df.DurableOrchestrationContext) -> Any:
    return (yield context.call_http("GET", "https://example.invalid/status"))
