"""HTTP: start, list, follow and cancel builds (ITSM tools, operators, the CLI).

- ``POST /api/images/{image}/builds`` (Operator) queues a build: ``202`` with the request's
  status URL (``GET /api/images/{image}/build-requests/{key}``: the queue's answer, then the
  build id). The ``Idempotency-Key`` header (or the body's ``key``) is the queue's request key,
  so a retried call never builds twice (one request orchestration per image and key); the
  framework also replays the first answer. The requester recorded on the version is the
  authenticated principal (four eyes: it may not approve it).
- ``GET /api/images/{image}/builds`` (Reader): the image's queue entity (running, queued, recent).
- ``GET /api/images/{image}/build-requests/{key}`` (Reader): one request: ``accepted`` with its
  build id, ``duplicate`` (of a queued, running or built key) or ``refused``.
- ``GET /api/builds`` (Reader): builds, newest first (``image``, ``status``, ``top``).
- ``GET /api/builds/{build_id}`` (Reader): one build with its phase, per-step results and
  timings (phase seconds; each customisation step's state, exit code, start, end, seconds).
- ``POST /api/builds/{build_id}/cancel`` (Operator): terminates a running build; the janitor
  deletes what it left (``cleanup.py``). ``409`` when it is not running.

Authentication, body caps and errors: ``triggers/_api.py``.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

import azure.durable_functions as df
from pydantic import Field

from shared import names
from shared.names import build_instance_id
from triggers._api import (
    BUILD_ID_PATTERN,
    CALLBACK_URL_PATTERN,
    IMAGE_PATTERN,
    KEY_PATTERN,
    Answer,
    ApiError,
    Body,
    Call,
    Operation,
    Reply,
    Role,
    route,
    unavailable,
)
from triggers._common import RUNNING, request_build, runtime_status
from triggers.images import catalogue_image, image_exists

bp = df.Blueprint()
log = logging.getLogger("imagefactory.triggers.builds")


class BuildRequestBody(Body):
    """What a caller may say about a build it requests."""

    reason: str = Field(default="manual", max_length=500)
    base_version: str | None = Field(default=None, pattern=r"^\d+\.\d+\.\d+$")
    key: str | None = Field(default=None, pattern=KEY_PATTERN)
    requested_by: str | None = Field(
        default=None,
        max_length=200,
        description="ignored: the requester recorded is always the authenticated principal",
    )
    callback_url: str | None = Field(default=None, max_length=2048, pattern=CALLBACK_URL_PATTERN)


class BuildQueued(Answer):
    image: str
    key: str
    request_instance_id: str
    outcome: str
    status_url: str
    queue_url: str


class BuildRequestStatus(Answer):
    image: str
    key: str
    request_instance_id: str
    runtime_status: str | None
    outcome: str | None = None
    build_id: str | None = None
    reason: str | None = None


class BuildQueue(Answer):
    image: str
    queue: dict[str, Any] | None


class BuildListQuery(Body):
    image: str | None = Field(default=None, pattern=IMAGE_PATTERN)
    status: Literal["Running", "Pending", "Completed", "Failed", "Terminated"] | None = None
    top: int = Field(default=50, ge=1, le=500)


class BuildItem(Answer):
    build_id: str
    image: str
    runtime_status: str | None
    phase: str | None = None
    percent: int | None = None
    created: str | None = None
    last_updated: str | None = None


class BuildList(Answer):
    builds: list[BuildItem]


class BuildStep(Answer):
    name: str
    state: str | None = None
    exit_code: int | None = None
    started: str | None = None
    ended: str | None = None
    seconds: float | None = None


class BuildDetail(Answer):
    instanceId: str | None  # noqa: N815 - the durable status's own names (kept shape)
    runtimeStatus: str | None  # noqa: N815
    customStatus: Any = None  # noqa: N815
    output: Any = None
    createdTime: str | None = None  # noqa: N815
    lastUpdatedTime: str | None = None  # noqa: N815
    build_id: str
    steps: list[BuildStep]
    phase_seconds: dict[str, float]


class CancelBody(Body):
    reason: str = Field(default="cancelled by request", max_length=500)


class Cancelled(Answer):
    build_id: str
    instance_id: str
    status: str
    status_url: str


def status_json(status: Any) -> dict[str, Any] | None:
    if status is None or getattr(status, "runtime_status", None) is None:
        return None
    data: dict[str, Any] = status.to_json()
    return {
        "instanceId": data.get("instanceId"),
        "runtimeStatus": data.get("runtimeStatus"),
        "customStatus": data.get("customStatus"),
        "output": data.get("output"),
        "createdTime": data.get("createdTime"),
        "lastUpdatedTime": data.get("lastUpdatedTime"),
    }


def _seconds(started: Any, ended: Any) -> float | None:
    try:
        return (
            datetime.fromisoformat(str(ended)) - datetime.fromisoformat(str(started))
        ).total_seconds()
    except ValueError:
        return None


def steps_of(output: Any) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Each customisation step with its seconds, and the phase timings, from a build's output."""
    if not isinstance(output, dict):
        return [], {}
    manifest = output.get("manifest") if isinstance(output.get("manifest"), dict) else {}
    steps = []
    for record in (manifest or {}).get("steps") or []:
        if isinstance(record, dict) and isinstance(record.get("name"), str):
            steps.append(
                {
                    "name": record["name"],
                    "state": record.get("state"),
                    "exit_code": record.get("exit_code"),
                    "started": record.get("started"),
                    "ended": record.get("ended"),
                    "seconds": _seconds(record.get("started"), record.get("ended")),
                }
            )
    timings = output.get("phase_seconds") or (manifest or {}).get("phase_seconds") or {}
    clean = {str(k): float(v) for k, v in timings.items() if isinstance(v, int | float)}
    return steps, clean


def image_of(build_id: str) -> str:
    """Build ids are ``<image>-<8 hex>`` (the queue's naming)."""
    return build_id.rsplit("-", 1)[0] if "-" in build_id else build_id


@route(
    bp,
    "POST",
    "images/{image}/builds",
    role=Role.OPERATOR,
    tag="builds",
    summary="Queue a build of a catalogue image",
    request=BuildRequestBody,
    response=BuildQueued,
    status=202,
    params={"image": IMAGE_PATTERN},
    resolve=image_exists,
    errors=(404,),
    callbacks=True,
)
async def start_build(call: Call) -> Reply:
    """Queue a build; the same key (``Idempotency-Key`` or ``key``) never builds twice."""
    image = catalogue_image(call.params["image"]).name
    body: BuildRequestBody = call.body
    if body.requested_by is not None and body.requested_by != call.principal.actor:
        log.warning("requested_by %r ignored: the principal is the requester", body.requested_by)
    key = call.idempotency_key or body.key
    if key is None and body.callback_url is not None:
        key = uuid.uuid4().hex  # the callback watcher finds the build by its request
    request = {
        "key": f"manual:{key}" if key else None,
        "reason": body.reason,
        "base_version": body.base_version,
        "requested_by": call.principal.actor,
    }
    try:
        queued = await request_build(call.client, image, request)
    except Exception as exc:
        raise unavailable("QueueUnavailable", f"the build could not be queued: {exc}") from None
    request_path = f"images/{image}/build-requests/{quote(str(queued['key']), safe='')}"
    queued["queue_url"] = call.url(f"images/{image}/builds")
    operation = Operation(
        "build",
        f"build of {image}",
        instance_id=str(queued["request_instance_id"]),
        image=image,
        key=str(queued["key"]),
    )
    return call.accepted(queued, request_path, operation, retry_after=30)


@route(
    bp,
    "GET",
    "images/{image}/builds",
    role=Role.READER,
    tag="builds",
    summary="The image's build queue",
    response=BuildQueue,
    params={"image": IMAGE_PATTERN},
    resolve=image_exists,
    errors=(404,),
)
async def get_build_queue(call: Call) -> dict[str, Any]:
    """What runs, what waits, recent outcomes (the image's queue entity)."""
    image = catalogue_image(call.params["image"]).name
    try:
        entity = await call.client.read_entity_state(df.EntityId(names.ENTITY_BUILD_QUEUE, image))
    except Exception as exc:
        raise unavailable("StoreUnavailable", f"the queue cannot be read: {exc}") from None
    state = entity.entity_state if isinstance(entity.entity_state, dict) else {}
    pending = list(state.get("pending") or [])
    queue = {
        "running": state.get("running"),
        "queued": [item.get("key") for item in pending],
        "pending": pending,
        "runner": state.get("runner"),
        "builds_numbered": state.get("seq", 0),
        "recent": list(state.get("recent") or [])[-5:],
    }
    return {"image": image, "queue": queue}


@route(
    bp,
    "GET",
    "images/{image}/build-requests/{key}",
    role=Role.READER,
    tag="builds",
    summary="One build request: the queue's answer and its build id",
    response=BuildRequestStatus,
    params={"image": IMAGE_PATTERN, "key": KEY_PATTERN},
    errors=(404,),
    resolve=image_exists,
)
async def get_build_request(call: Call) -> dict[str, Any]:
    """``accepted`` (with the build id), ``duplicate`` or ``refused``; 404 for an unknown key."""
    image, key = call.params["image"], call.params["key"]
    instance_id = names.build_request_instance_id(image, key)
    try:
        status = await call.client.get_status(instance_id)
    except Exception as exc:
        raise unavailable("StoreUnavailable", f"the request cannot be read: {exc}") from None
    state = runtime_status(status)
    if state is None:
        raise ApiError(
            404, "BuildRequestNotFound", f"no build request {key!r} of {image}", field="key"
        )
    answer = getattr(status, "custom_status", None)
    answer = answer if isinstance(answer, dict) else {}
    return {
        "image": image,
        "key": key,
        "request_instance_id": instance_id,
        "runtime_status": state,
        "outcome": answer.get("outcome"),
        "build_id": answer.get("build_id"),
        "reason": answer.get("reason"),
    }


@route(
    bp,
    "GET",
    "builds",
    role=Role.READER,
    tag="builds",
    summary="List builds, newest first",
    query=BuildListQuery,
    response=BuildList,
)
async def list_builds(call: Call) -> dict[str, Any]:
    """Builds of every image (or of ``image``), optionally only those in ``status``."""
    q: BuildListQuery = call.query
    prefix = build_instance_id(f"{q.image}-" if q.image else "")
    try:
        found = await call.client.get_status_by(instance_id_prefix=prefix)
    except Exception as exc:
        raise unavailable("StoreUnavailable", f"builds cannot be listed: {exc}") from None
    items = []
    for status in found or []:
        instance_id = str(getattr(status, "instance_id", "") or "")
        build_id = instance_id.removeprefix(build_instance_id(""))
        if not instance_id.startswith(build_instance_id("")) or ":" in build_id:
            continue  # a build's children (clean-up, waits) are not builds
        state = runtime_status(status)
        if q.status is not None and state != q.status:
            continue
        custom = getattr(status, "custom_status", None)
        custom = custom if isinstance(custom, dict) else {}
        created = getattr(status, "created_time", None)
        updated = getattr(status, "last_updated_time", None)
        items.append(
            {
                "build_id": build_id,
                "image": custom.get("image") or image_of(build_id),
                "runtime_status": state,
                "phase": custom.get("phase"),
                "percent": custom.get("percent"),
                "created": created.isoformat() if created else None,
                "last_updated": updated.isoformat() if updated else None,
            }
        )
    items.sort(key=lambda i: i["created"] or "", reverse=True)
    return {"builds": items[: q.top]}


async def _build_status(call: Call, build_id: str) -> Any:
    try:
        status = await call.client.get_status(build_instance_id(build_id))
    except Exception as exc:
        raise unavailable("StoreUnavailable", f"the build cannot be read: {exc}") from None
    if runtime_status(status) is None:
        raise ApiError(
            404, "BuildNotFound", f"no build {build_id!r}", field="build_id", build_id=build_id
        )
    return status


@route(
    bp,
    "GET",
    "builds/{build_id}",
    role=Role.READER,
    tag="builds",
    response=BuildDetail,
    summary="One build: phase, percent, steps and timings; output when it ended",
    params={"build_id": BUILD_ID_PATTERN},
    errors=(404,),
)
async def get_build(call: Call) -> dict[str, Any]:
    """One build with each customisation step (state, exit code, seconds) and phase timings."""
    build_id = call.params["build_id"]
    status = status_json(await _build_status(call, build_id))
    assert status is not None
    steps, timings = steps_of(status.get("output"))
    custom = status.get("customStatus")
    if not timings and isinstance(custom, dict) and isinstance(custom.get("phase_seconds"), dict):
        timings = {k: float(v) for k, v in custom["phase_seconds"].items()}
    return {**status, "build_id": build_id, "steps": steps, "phase_seconds": timings}


@route(
    bp,
    "POST",
    "builds/{build_id}/cancel",
    role=Role.OPERATOR,
    tag="builds",
    summary="Cancel a running build (its resources are cleaned up by the janitor)",
    request=CancelBody,
    response=Cancelled,
    status=202,
    params={"build_id": BUILD_ID_PATTERN},
    errors=(404, 409),
)
async def cancel_build(call: Call) -> Reply:
    """Terminate a running build; a build that ended is a ``409`` giving its status."""
    build_id = call.params["build_id"]
    status = await _build_status(call, build_id)
    state = runtime_status(status)
    if state not in RUNNING:
        raise ApiError(
            409,
            "BuildNotRunning",
            f"build {build_id} is {state}: only a running build can be cancelled",
            field="build_id",
            runtime_status=state,
        )
    reason = f"{call.body.reason} (by {call.principal.actor})"
    try:
        await call.client.terminate(build_instance_id(build_id), reason)
    except Exception as exc:
        raise unavailable("StoreUnavailable", f"the build could not be cancelled: {exc}") from None
    log.info("build %s cancelled by %s", build_id, call.principal.actor)
    body = {
        "build_id": build_id,
        "instance_id": build_instance_id(build_id),
        "status": "cancelling",
    }
    return call.accepted(body, f"builds/{build_id}")
