"""Orchestrations and entities for the engine's entity and continue-as-new tests."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import azure.durable_functions as df

bp = df.Blueprint()


def _counter(context: df.DurableEntityContext) -> None:
    """A counter: add, get, fail (raises after changing nothing), log (keeps arrival order)."""
    state = context.get_state(lambda: {"value": 0, "log": []})
    operation = context.operation_name
    if operation == "add":
        amount = context.get_input()
        state["value"] += amount
        state["log"].append(amount)
        context.set_state(state)
        context.set_result(state["value"])
    elif operation == "get":
        context.set_result(state["value"])
    elif operation == "fail":
        raise ValueError(f"counter refused: {context.get_input()}")
    elif operation == "delete":
        context.destruct_on_exit()
    else:
        raise ValueError(f"unknown operation {operation}")


bp.entity_trigger(context_name="context", entity_name="Counter")(_counter)


@bp.orchestration_trigger(context_name="context")
def call_counter(context: df.DurableOrchestrationContext) -> Any:
    """Add each input amount to the counter named by the input; collect results and errors."""
    spec = context.get_input()
    entity = df.EntityId("Counter", spec["key"])
    results: list[Any] = []
    for amount in spec["amounts"]:
        results.append((yield context.call_entity(entity, "add", amount)))
    try:
        yield context.call_entity(entity, "fail", "please")
    except Exception as exc:
        results.append({"error": str(exc)})
    results.append((yield context.call_entity(entity, "get")))
    return results


@bp.orchestration_trigger(context_name="context")
def signal_counter(context: df.DurableOrchestrationContext) -> Any:
    """Signal the counter (fire and forget) and finish at once."""
    spec = context.get_input()
    for amount in spec["amounts"]:
        context.signal_entity(df.EntityId("Counter", spec["key"]), "add", amount)
    return "signalled"


@bp.orchestration_trigger(context_name="context")
def signal_then_call(context: df.DurableOrchestrationContext) -> Any:
    """Signal, then call: on Azure the signal takes a sequence number the SDK does not count."""
    entity = df.EntityId("Counter", context.get_input())
    context.signal_entity(entity, "add", 1)
    value = yield context.call_entity(entity, "get")
    return value


@bp.orchestration_trigger(context_name="context")
def generations(context: df.DurableOrchestrationContext) -> Any:
    """Generation 0 sleeps a minute and continues as new; generation 1 waits for 'x' or an hour."""
    state = context.get_input() or {"gen": 0}
    if state["gen"] == 0:
        yield context.create_timer(context.current_utc_datetime + timedelta(minutes=1))
        context.continue_as_new({"gen": 1})
        return None
    event = context.wait_for_external_event("x")
    timer = context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    winner = yield context.task_any([event, timer])
    if winner == event:
        timer.cancel()
        return {"winner": "event", "value": event.result}
    return {"winner": "timer"}
