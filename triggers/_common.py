"""Helpers shared by triggers: JSON responses, error bodies, and enqueueing a build request."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from shared import names
from shared.errors import InputError

log = logging.getLogger("imagefactory.triggers")

# An instance in one of these states is alive (continue-as-new shows as ContinuedAsNew briefly).
RUNNING = frozenset({"Running", "Pending", "ContinuedAsNew"})


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, default=str),
        status_code=status,
        mimetype="application/json",
        headers=headers,
    )


def error_response(status: int, code: str, message: str, **details: Any) -> func.HttpResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details:
        body["error"].update(details)
    return json_response(body, status)


def input_error_response(error: InputError) -> func.HttpResponse:
    return json_response(error.to_json(), 400)


def parse_json_body(req: func.HttpRequest, *, required: bool = False) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is ``{}`` unless required."""
    raw = req.get_body() or b""
    if not raw.strip():
        if required:
            raise InputError.single("body", "a JSON object is required")
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError.single("body", f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError.single("body", "must be a JSON object")
    return value


def runtime_status(status: Any) -> str | None:
    """The runtime status name of a DurableOrchestrationStatus (None: no such instance)."""
    value = getattr(getattr(status, "runtime_status", None), "value", None)
    return str(value) if value is not None else None


async def request_build(client: Any, image: str, request: dict[str, Any]) -> dict[str, Any]:
    """Start the request's orchestration (idempotent per image and key); what a caller can follow.

    A request whose instance is still running (the same key asked again) is not started twice.
    A queue whose runner ended without releasing its role (terminated, failed) is released
    first, so the new request can take over the queue.
    """
    key = str(request.get("key") or f"anonymous:{uuid.uuid4().hex}")
    instance_id = names.build_request_instance_id(image, key)
    queue = df.EntityId(names.ENTITY_BUILD_QUEUE, image)
    answer: dict[str, Any] = {"image": image, "key": key, "request_instance_id": instance_id}
    if runtime_status(await client.get_status(instance_id)) in RUNNING:
        log.info("build request %s for %s is already in progress", key, image)
        await client.signal_entity(queue, "repeat", {"key": key})
        return {**answer, "outcome": "in progress"}
    state = (await client.read_entity_state(queue)).entity_state
    runner = state.get("runner") if isinstance(state, dict) else None
    # This request's own instance is not running (checked above): if it is the runner, it is lost.
    if runner and (
        runner == instance_id or runtime_status(await client.get_status(runner)) not in RUNNING
    ):
        log.warning("the build queue of %s lost its runner %s: releasing it", image, runner)
        await client.signal_entity(queue, "release", {"runner": runner})
    try:
        await client.start_new(
            names.ORCH_BUILD_REQUEST,
            instance_id,
            {"image": image, "key": key, "request": {**request, "key": key}},
        )
    except Exception:
        # The same request may have started it between our read and our start: only then is
        # the failure harmless.
        if runtime_status(await client.get_status(instance_id)) not in RUNNING:
            raise
        return {**answer, "outcome": "in progress"}
    log.info("build requested for %s with key %s", image, key)
    return {**answer, "outcome": "submitted"}
