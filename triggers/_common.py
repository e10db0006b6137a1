"""Helpers shared by triggers: JSON responses, error bodies, request bodies, enqueueing a build.

Request bodies are parsed here and only here, with two caps that keep any body from crashing a
trigger: at most :data:`MAX_BODY_BYTES` (a larger body is ``413`` with a JSON error naming the
limit) and at most :data:`MAX_JSON_DEPTH` levels of nested arrays/objects (deeper is ``400``
naming ``body``; Python's parser would otherwise raise ``RecursionError``, a ``500``). A trigger
answers 5xx only where a retry can succeed (the durable client or the catalogue failed); a client
mistake is a 4xx naming the field.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from shared import names
from shared.errors import FieldError, InputError

log = logging.getLogger("imagefactory.triggers")

# An instance in one of these states is alive (continue-as-new shows as ContinuedAsNew briefly).
RUNNING = frozenset({"Running", "Pending", "ContinuedAsNew"})

# A build request is a handful of short fields; 256 KiB is far above any honest one and still
# cheap to parse (and lets the classic 200 KB nesting probe reach the depth check: 400, not 413).
MAX_BODY_BYTES = 256 * 1024
# Containers (arrays/objects) nested deeper than this are refused before anything reads them.
MAX_JSON_DEPTH = 32


class PayloadTooLargeError(InputError):
    """A request body over the trigger's cap: answered ``413`` naming the limit."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            FieldError("body", f"{size} bytes is over the limit of {limit} bytes"),
            "payload too large",
        )

    def to_json(self) -> dict[str, object]:
        return {
            "error": {
                "code": "PayloadTooLarge",
                "message": (
                    f"the request body is {self.size} bytes; the limit is {self.limit} bytes"
                ),
                "limit_bytes": self.limit,
                "details": [{"field": e.path, "reason": e.reason} for e in self.errors],
            }
        }


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
    """``413`` for a body over its cap, ``400`` for every other input error."""
    status = 413 if isinstance(error, PayloadTooLargeError) else 400
    return json_response(error.to_json(), status)


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` holds arrays/objects nested more than ``limit`` levels (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_json_body(
    req: func.HttpRequest,
    *,
    required: bool = False,
    max_bytes: int = MAX_BODY_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is ``{}`` unless required.

    Raises :class:`PayloadTooLargeError` over ``max_bytes`` and :class:`InputError` naming
    ``body`` for anything that is not a JSON object nested at most ``max_depth`` levels.
    """
    raw = req.get_body() or b""
    if len(raw) > max_bytes:
        raise PayloadTooLargeError(len(raw), max_bytes)
    if not raw.strip():
        if required:
            raise InputError.single("body", "a JSON object is required")
        return {}
    too_deep = f"nested more than {max_depth} levels deep"
    try:
        value = json.loads(raw)
    except RecursionError:
        raise InputError.single("body", too_deep) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError.single("body", f"not valid JSON ({exc})") from None
    if nested_deeper_than(value, max_depth):
        raise InputError.single("body", too_deep)
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
