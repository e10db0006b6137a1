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
from typing import Any

import azure.functions as func

from shared import names
from shared.errors import FieldError, InputError
from shared.names import queue_instance_id

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
