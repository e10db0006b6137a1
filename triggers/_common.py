"""Helpers shared by triggers: JSON responses, error bodies, and enqueueing a build request."""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

from shared import names
from shared.errors import InputError
from shared.names import queue_instance_id

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
    """Hand a build request to the image's queue, starting the queue if it is not running."""
    instance_id = queue_instance_id(image)
    if runtime_status(await client.get_status(instance_id)) not in RUNNING:
        try:
            await client.start_new(names.ORCH_IMAGE_BUILD_QUEUE, instance_id, {"image": image})
        except Exception:
            # Another request may have started it between our read and our start: only then
            # is the failure harmless.
            if runtime_status(await client.get_status(instance_id)) not in RUNNING:
                raise
    await client.raise_event(instance_id, names.EVT_BUILD_REQUESTED, request)
    log.info("build requested for %s with key %s", image, request.get("key"))
    return {"image": image, "queue_instance_id": instance_id, "key": request.get("key")}
