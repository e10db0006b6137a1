"""The Event Grid webhook: ``/runtime/webhooks/eventgrid?functionName=NAME``.

Speaks the delivery protocol of the host's Event Grid extension:

* ``aeg-event-type: SubscriptionValidation`` with a ``SubscriptionValidationEvent``: answered
  ``200 {"validationResponse": <validationCode>}`` without invoking the function.
* ``OPTIONS`` with ``WebHook-Request-Origin`` (the CloudEvents abuse-protection handshake):
  answered ``200`` with ``WebHook-Allowed-Origin`` (and ``WebHook-Allowed-Rate: *``).
* ``aeg-event-type: Notification`` (or no header): the body is an array of Event Grid schema
  events, a single CloudEvent (``specversion``) or a CloudEvents batch; the function is invoked
  once per event, in order, with ``func.EventGridEvent`` / ``func.CloudEvent`` built by the SDK's
  converter. ``202`` when every invocation succeeded; ``500`` naming the failed events otherwise
  (Event Grid retries the delivery).
* ``aeg-event-type: Unsubscribe``: ``202``.

Unknown functions are ``404``, malformed deliveries (or arrays/objects nested more than
:data:`MAX_DELIVERY_DEPTH` levels) ``400``, deliveries over :data:`MAX_DELIVERY_BYTES` ``413``;
each with a JSON body naming the problem. A 5xx means only that a function failed, where Event
Grid's retry may succeed. A failing function never takes the host down.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from azure.functions.eventgrid import EventGridEventInConverter

from devhost.functions import EVENT_GRID, FunctionIndex, FunctionInfo
from devhost.server import HttpError, Request, Response, json_response
from devhost.triggers import (
    BusyScope,
    ClientBinding,
    FunctionFailedError,
    FunctionInvoker,
    Keys,
    invoke_event_grid,
)

log = logging.getLogger("devhost.eventgrid")

PATH = "/runtime/webhooks/eventgrid"
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
# Event Grid never delivers more than 1 MB in one request (its event and batch size limit).
MAX_DELIVERY_BYTES = 1024 * 1024
# Arrays/objects nested deeper than this are refused (JSON.NET's default reader MaxDepth).
MAX_DELIVERY_DEPTH = 64


def _text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _check_time(event: Mapping[str, Any], key: str, where: str, required: bool) -> None:
    value = event.get(key)
    if value is None:
        if required:
            raise HttpError(400, "BadRequest", f"{where}: '{key}' is required")
        return
    if not isinstance(value, str):
        raise HttpError(400, "BadRequest", f"{where}: '{key}' must be an ISO 8601 string")
    try:
        parsed = EventGridEventInConverter._parse_datetime(value)
    except (ValueError, TypeError) as exc:
        raise HttpError(
            400, "BadRequest", f"{where}: '{key}' {value!r} is not a date-time ({exc})"
        ) from None
    if parsed is None:
        raise HttpError(400, "BadRequest", f"{where}: '{key}' is empty")


def validate_event(event: Any, where: str) -> str:
    """Check one event's envelope; returns its schema (``eventgrid`` or ``cloudevents``)."""
    if not isinstance(event, dict):
        raise HttpError(
            400, "BadRequest", f"{where} must be a JSON object, not {type(event).__name__}"
        )
    if "specversion" in event:
        if event.get("specversion") != "1.0":
            raise HttpError(
                400,
                "BadRequest",
                f"{where}: specversion {event.get('specversion')!r} is not supported (only 1.0)",
            )
        for key in ("id", "source", "type"):
            if not _text(event.get(key)):
                raise HttpError(
                    400, "BadRequest", f"{where}: CloudEvent '{key}' must be a non-empty string"
                )
        _check_time(event, "time", where, required=False)
        return "cloudevents"
    for key in ("id", "eventType", "subject"):
        if not isinstance(event.get(key), str) or (key != "subject" and not event.get(key)):
            raise HttpError(
                400,
                "BadRequest",
                f"{where}: Event Grid event '{key}' must be a "
                f"{'string' if key == 'subject' else 'non-empty string'}",
            )
    _check_time(event, "eventTime", where, required=True)
    if "dataVersion" in event and not isinstance(event["dataVersion"], str):
        raise HttpError(400, "BadRequest", f"{where}: 'dataVersion' must be a string")
    return "eventgrid"


class EventGridWebhook:
    """Delivers Event Grid webhook requests to the app's Event Grid triggers."""

    def __init__(
        self,
        index: FunctionIndex,
        invoker: FunctionInvoker,
        *,
        keys: Keys | None = None,
        client_binding: ClientBinding | None = None,
        participant: BusyScope | None = None,
        timeout: float | None = 230.0,
    ) -> None:
        self.index = index
        self.invoker = invoker
        self.keys = keys or Keys()
        self.client_binding = client_binding
        self.participant = participant
        self.timeout = timeout

    def _function(self, request: Request) -> FunctionInfo:
        name = request.param("functionName")
        if not name:
            raise HttpError(400, "BadRequest", "the functionName query parameter is required")
        for info in self.index.of_type(EVENT_GRID):
            if info.name.lower() == name.lower():
                return info
        known = ", ".join(f.name for f in self.index.of_type(EVENT_GRID)) or "none"
        raise HttpError(
            404,
            "FunctionNotFound",
            f"no Event Grid trigger function named {name!r} (Event Grid functions: {known})",
        )

    def handle(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return self._abuse_protection(request)
        if request.method != "POST":
            raise HttpError(
                405,
                "MethodNotAllowed",
                f"{request.method} is not supported here; Event Grid delivers with POST",
                headers={"Allow": "POST, OPTIONS"},
            )
        self.keys.check("function", request, "the Event Grid webhook")
        info = self._function(request)
        kind = (request.header("aeg-event-type") or "").strip()
        if kind.lower() == "unsubscribe":
            return json_response(202, {"unsubscribed": info.name})
        if kind and kind.lower() not in ("subscriptionvalidation", "notification"):
            raise HttpError(
                400,
                "BadRequest",
                f"aeg-event-type {kind!r} is not one of SubscriptionValidation, Notification, "
                "Unsubscribe",
            )
        if len(request.body) > MAX_DELIVERY_BYTES:
            raise HttpError(
                413,
                "PayloadTooLarge",
                f"the Event Grid delivery is {len(request.body)} bytes; the limit is "
                f"{MAX_DELIVERY_BYTES} bytes (Event Grid's own delivery limit)",
                extra={"limit_bytes": MAX_DELIVERY_BYTES},
            )
        if not request.body.strip():
            raise HttpError(400, "BadRequest", "the delivery has no body")
        body = request.json("Event Grid delivery", max_depth=MAX_DELIVERY_DEPTH)
        if not isinstance(body, list | dict):
            raise HttpError(
                400,
                "BadRequest",
                "the delivery must be a JSON array of events or a single CloudEvent object",
            )
        events: list[Any] = body if isinstance(body, list) else [body]
        if kind.lower() == "subscriptionvalidation" or (
            not kind
            and events
            and isinstance(events[0], dict)
            and events[0].get("eventType") == VALIDATION_EVENT
        ):
            return self._validation(events)
        for position, event in enumerate(events):
            validate_event(event, f"event [{position}]")
        return self._deliver(info, events)

    def _abuse_protection(self, request: Request) -> Response:
        origin = request.header("WebHook-Request-Origin")
        if not origin:
            raise HttpError(
                400,
                "BadRequest",
                "OPTIONS here is the CloudEvents validation handshake: "
                "the WebHook-Request-Origin header is required",
            )
        self._function(request)
        rate = request.header("WebHook-Request-Rate")
        return Response(
            200,
            [
                ("WebHook-Allowed-Origin", origin),
                ("WebHook-Allowed-Rate", rate or "*"),
                ("Allow", "POST, OPTIONS"),
            ],
            b"",
        )

    def _validation(self, events: list[Any]) -> Response:
        for event in events:
            data = event.get("data") if isinstance(event, dict) else None
            if (
                isinstance(event, dict)
                and event.get("eventType") == VALIDATION_EVENT
                and isinstance(data, dict)
                and _text(data.get("validationCode"))
            ):
                code = data["validationCode"]
                log.info("Event Grid subscription validated (code %s)", code)
                return json_response(200, {"validationResponse": code})
        raise HttpError(
            400,
            "BadRequest",
            f"a SubscriptionValidation delivery needs a {VALIDATION_EVENT} "
            "with data.validationCode",
        )

    def _deliver(self, info: FunctionInfo, events: list[dict[str, Any]]) -> Response:
        failed: list[dict[str, str]] = []
        for event in events:
            try:
                invoke_event_grid(
                    self.invoker,
                    info,
                    event,
                    client_binding=self.client_binding,
                    participant=self.participant,
                    timeout=self.timeout,
                )
            except FunctionFailedError as exc:
                log.error(
                    "Event Grid event %s to %s failed: %s",
                    event.get("id"),
                    info.name,
                    exc,
                    exc_info=exc.__cause__ or None,
                )
                failed.append({"id": str(event.get("id")), "error": str(exc)})
        if failed:
            return json_response(
                500,
                {
                    "error": {
                        "code": "FunctionFailed",
                        "message": f"{len(failed)} of {len(events)} event(s) failed in "
                        f"function {info.name!r}; Event Grid will retry the delivery",
                    },
                    "failed": failed,
                    "delivered": len(events) - len(failed),
                },
            )
        return json_response(202, {"delivered": len(events)})
