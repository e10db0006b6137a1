"""A test Functions app for the devhost's front: HTTP routes, durable starters, Event Grid.

Written in the v2 programming model like function_app.py; loaded by the devhost tests (and by
``python -m devhost --app devhost_http_app:app`` with this directory on PYTHONPATH).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

# What the Event Grid functions saw (the tests read it).
EVENTS: list[dict[str, Any]] = []
NOW: list[Callable[[], datetime]] = []  # a test puts the host clock's now() here
LOCK = threading.Lock()


# -- plain HTTP -----------------------------------------------------------------------------------
@app.route(route="hello/{name?}", methods=["GET"])
def hello(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("name") or req.params.get("name") or "world"
    return func.HttpResponse(f"hello {name}", mimetype="text/plain")


@app.route(
    route="items/{id:int}/{tag?}", methods=["GET", "POST"], auth_level=func.AuthLevel.FUNCTION
)
def items(req: func.HttpRequest) -> func.HttpResponse:
    payload = {
        "method": req.method,
        "url": req.url,
        "route": dict(req.route_params),
        "params": dict(req.params),
        "header": req.headers.get("x-test"),
        "body": req.get_body().decode() if req.get_body() else None,
    }
    return func.HttpResponse(
        json.dumps(payload),
        status_code=201 if req.method == "POST" else 200,
        mimetype="application/json",
        headers={"x-served-by": "items"},
    )


@app.route(route="items/new", methods=["GET"])
def items_new(req: func.HttpRequest) -> str:
    return "the literal route wins"


@app.route(route="secret", auth_level=func.AuthLevel.ADMIN)
def secret(req: func.HttpRequest) -> str:
    return "admin only"


@app.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise ValueError("the function blew up on purpose")


@app.route(route="echo", methods=["POST"])
async def echo(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.get_body().upper(), status_code=200)


@app.route(route="ctx")
def ctx(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps({"function": context.function_name, "invocation": context.invocation_id}),
        mimetype="application/json",
    )


@app.route(route="slow")
def slow(req: func.HttpRequest) -> str:
    """Reads host time before and after 200 real ms of work."""
    before = NOW[0]() if NOW else None
    time.sleep(0.2)
    after = NOW[0]() if NOW else None
    return json.dumps({"before": str(before), "after": str(after)})


@app.route(route="nothing")
def nothing(req: func.HttpRequest) -> None:
    return None


# -- durable: orchestrators, activities and starters ----------------------------------------------
@app.orchestration_trigger(context_name="context")
def greet_orchestrator(context: df.DurableOrchestrationContext) -> Any:
    names = context.get_input() or ["Tokyo"]
    greetings = []
    for name in names:
        greetings.append((yield context.call_activity("say_hello", name)))
    return greetings


@app.orchestration_trigger(context_name="context")
def approval_orchestrator(context: df.DurableOrchestrationContext) -> Any:
    context.set_custom_status("waiting")
    approval = yield context.wait_for_external_event("approve")
    return {"input": context.get_input(), "approval": approval}


@app.orchestration_trigger(context_name="context")
def failing_orchestrator(context: df.DurableOrchestrationContext) -> Any:
    yield context.call_activity("say_hello", "x")
    raise RuntimeError("orchestrator failed on purpose")


@app.activity_trigger(input_name="name")
def say_hello(name: str) -> str:
    return f"Hello {name}!"


@app.route(route="orchestrators/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> Any:
    body = req.get_body()
    data = json.loads(body) if body else None
    instance_id = await client.start_new(req.route_params["name"], None, data)
    return client.create_check_status_response(req, instance_id)


@app.route(route="orchestrators/{name}/wait", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start_wait(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> Any:
    body = req.get_body()
    instance_id = await client.start_new(req.route_params["name"], None, json.loads(body or "null"))
    return await client.wait_for_completion_or_create_check_status_response(
        req, instance_id, timeout_in_milliseconds=10000, retry_interval_in_milliseconds=50
    )


@app.route(route="client/{op}/{id?}", methods=["GET", "POST", "DELETE"])
@app.durable_client_input(client_name="client")
async def client_ops(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> Any:
    """Drive every DurableOrchestrationClient call the tests need through the real SDK."""
    op, instance_id = req.route_params["op"], req.route_params.get("id", "")
    body = req.get_body()
    data = json.loads(body) if body else None
    result: Any
    if op == "raise":
        await client.raise_event(instance_id, "approve", data)
        result = {"raised": instance_id}
    elif op == "terminate":
        await client.terminate(instance_id, "enough")
        result = {"terminated": instance_id}
    elif op == "status":
        status = await client.get_status(instance_id, show_history=True)
        result = status.to_json() if status else {"found": False, "message": repr(status)}
    elif op == "purge":
        purged = await client.purge_instance_history(instance_id)
        result = {"deleted": purged.instances_deleted}
    elif op == "purge-by":
        statuses = [df.OrchestrationRuntimeStatus(s) for s in (data or {}).get("status", [])]
        purged = await client.purge_instance_history_by(
            created_time_from=datetime(2000, 1, 1, tzinfo=UTC), runtime_status=statuses or None
        )
        result = {"deleted": purged.instances_deleted}
    elif op == "query":
        statuses = [df.OrchestrationRuntimeStatus(s) for s in (data or {}).get("status", [])]
        found = await client.get_status_by(runtime_status=statuses or None)
        result = sorted(s.instance_id for s in found)
    elif op == "all":
        result = sorted(s.instance_id for s in await client.get_status_all())
    elif op == "start-with-id":
        try:
            started = await client.start_new("approval_orchestrator", instance_id, data)
            result = {"started": started}
        except Exception as exc:
            return func.HttpResponse(
                json.dumps({"error": str(exc)}), status_code=409, mimetype="application/json"
            )
    elif op == "start-unknown":
        try:
            await client.start_new("no_such_orchestrator", None, None)
            result = {"started": True}
        except Exception as exc:
            return func.HttpResponse(
                json.dumps({"error": str(exc)}), status_code=400, mimetype="application/json"
            )
    elif op == "links":
        result = client.create_http_management_payload(instance_id or "abc")
    elif op == "signal":
        entity = df.EntityId("Tally", instance_id)
        await client.signal_entity(entity, data["op"], data.get("input"))
        result = {"signalled": instance_id}
    elif op == "entity":
        state = await client.read_entity_state(df.EntityId("Tally", instance_id))
        result = {"exists": state.entity_exists, "state": state.entity_state}
    else:
        return func.HttpResponse(f"unknown op {op}", status_code=404)
    return func.HttpResponse(json.dumps(result), mimetype="application/json")


def tally(context: df.DurableEntityContext) -> None:
    """An entity: ``add`` appends its input to a list, ``reset`` deletes the entity."""
    if context.operation_name == "reset":
        context.destruct_on_exit()
        return
    items = context.get_state(list)
    items.append(context.get_input())
    context.set_state(items)


app.entity_trigger(context_name="context", entity_name="Tally")(tally)


# -- Event Grid -----------------------------------------------------------------------------------
@app.event_grid_trigger(arg_name="event")
def on_event(event: func.EventGridEvent) -> None:
    record: dict[str, Any] = {"kind": type(event).__name__, "id": event.id}
    if isinstance(event, func.EventGridEvent):
        record.update(type=event.event_type, subject=event.subject, data=event.get_json())
    else:
        record.update(type=event.type, source=event.source, data=event.get_json())
    with LOCK:
        EVENTS.append(record)
    if isinstance(record.get("data"), dict) and record["data"].get("fail"):
        raise RuntimeError(f"event {event.id} asked to fail")


@app.event_grid_trigger(arg_name="event")
@app.durable_client_input(client_name="client")
async def on_event_start(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    await client.start_new("greet_orchestrator", f"eg-{event.id}", [event.subject])
