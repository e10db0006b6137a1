"""Helpers shared by triggers: JSON responses, error bodies, and enqueueing a build request."""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

from orchestrators.build_queue import queue_instance_id
from shared import names
from shared.errors import FactoryError, InputError

log = logging.getLogger("imagefactory.triggers")

RUNNING = {"Running", "Pending", "ContinuedAsNew"}


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


async def request_build(client: Any, image: str, request: dict[str, Any]) -> dict[str, Any]:
    """Hand a build request to the image's queue, starting the queue if it is not running."""
    instance_id = queue_instance_id(image)
    status = await client.get_status(instance_id)
    runtime = getattr(getattr(status, "runtime_status", None), "value", None)
    if runtime not in RUNNING:
        try:
            await client.start_new(names.ORCH_IMAGE_BUILD_QUEUE, instance_id, {"image": image})
        except Exception as exc:  # another request started it first: that is fine
            if "already exists" not in str(exc).lower() and "409" not in str(exc):
                raise
    await client.raise_event(instance_id, names.EVT_BUILD_REQUESTED, request)
    log.info("build requested for %s with key %s", image, request.get("key"))
    return {"image": image, "queue_instance_id": instance_id, "key": request.get("key")}


def describe_failure(error: Exception) -> tuple[int, str]:
    """HTTP status and code for an exception raised while serving a request."""
    if isinstance(error, InputError):
        return 400, "InvalidInput"
    if isinstance(error, FactoryError):
        cls = type(error).__name__
        return (404, "NotFound") if cls == "NotFoundError" else (409, cls)
    return 500, "InternalError"
