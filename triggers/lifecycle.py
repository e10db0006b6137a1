"""HTTP and Event Grid: approve, activate and roll back versions; list an image's versions.

The routes are declared through ``triggers/_api.py`` (principal from App Service
Authentication, 401 without one, 403 naming the missing role, errors in one shape, idempotent
replays, callbacks). Input is checked here, against the catalogue and the versions' current
states, before anything starts: 400 names the bad field, 404 an unknown image or version, 409
gives the current state and the actions allowed from it. A refusal changes nothing in Azure.
Routes (docs/lifecycle.md, docs/api.md):

- ``POST /api/images/{image}/versions/{version}/approval`` (Approver)
  ``{decision, change_ticket, comment?, callback_url?}``
- ``POST /api/images/{image}/activation`` (Operator) ``{version, change_ticket, reason?}``
- ``POST /api/images/{image}/rollback`` (Operator) ``{to_version?, change_ticket, reason}``
- ``GET  /api/images/{image}/versions`` (Reader)

``on_image_version_validated`` (Event Grid, ``ImageFactory.ImageVersionValidated``) starts the
version's approval timer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Literal

import azure.durable_functions as df
from pydantic import Field

from shared import names
from shared.app_catalogue import find_image
from shared.domain.lifecycle import (
    ROLLBACK_SOURCES,
    Action,
    Refusal,
    allowed_actions,
    rollback_target,
    transition,
)
from shared.domain.versions import ImageVersion, VersionState
from shared.errors import InputError, NotFoundError
from triggers._api import (
    CALLBACK_URL_PATTERN,
    IMAGE_PATTERN,
    VERSION_PATTERN,
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
from triggers._common import RUNNING, runtime_status
from triggers.images import catalogue_image, image_exists, overview

bp = df.Blueprint()
log = logging.getLogger("imagefactory.triggers.lifecycle")

DECISION_WAIT_SECONDS = 2.0  # real time an approval waits for its (usually quick) write
_VERSION = r"^\d{1,10}\.\d{1,10}\.\d{1,10}$"


class ApprovalBody(Body):
    decision: Literal["approve", "reject"]
    change_ticket: str = Field(min_length=1, max_length=200)
    comment: str = Field(default="", max_length=1000)
    callback_url: str | None = Field(default=None, max_length=2048, pattern=CALLBACK_URL_PATTERN)


class ActivationBody(Body):
    version: str = Field(pattern=_VERSION)
    change_ticket: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=1000)
    callback_url: str | None = Field(default=None, max_length=2048, pattern=CALLBACK_URL_PATTERN)


class RollbackBody(Body):
    to_version: str | None = Field(default=None, pattern=_VERSION)
    change_ticket: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=1000)
    callback_url: str | None = Field(default=None, max_length=2048, pattern=CALLBACK_URL_PATTERN)


class Decision(Answer):
    """The decision (200) or, while it is written, ``status: deciding`` and ``status_url``."""

    image: str | None = None
    version: str | None = None
    status: str | None = None


class ActivationAccepted(Answer):
    image: str
    version: str
    instance_id: str
    status_url: str


class VersionsOverview(Answer):
    image: str
    versions: list[dict[str, Any]]
    latest: dict[str, str | None]
    host_pools: list[str]
    lifecycle: dict[str, Any]
    activation: dict[str, Any] | None = None


def _version(
    found_overview: dict[str, Any], image: str, version: str, field: str
) -> dict[str, Any]:
    found: dict[str, Any] | None = next(
        (v for v in found_overview["versions"] if v["version"] == version), None
    )
    if found is None:
        raise ApiError(
            404,
            "VersionNotFound",
            f"image {image} has no version {version}",
            field=field,
            image=image,
            version=version,
        )
    return found


def _conflict(code: str, message: str, version: dict[str, Any] | None, **extra: Any) -> ApiError:
    state = version.get("state") if version else None
    allowed: list[str] = []
    if state:
        try:
            allowed = [a.value for a in allowed_actions(VersionState(state))]
        except ValueError:
            allowed = []
    return ApiError(
        409,
        code,
        message,
        state=state,
        version=version.get("version") if version else None,
        allowed_actions=allowed,
        **extra,
    )


async def _status(client: Any, instance_id: str) -> Any:
    try:
        return await client.get_status(instance_id)
    except Exception as exc:
        raise unavailable("StoreUnavailable", f"{instance_id} cannot be read: {exc}") from None


async def _running(client: Any, instance_id: str) -> Any:
    status = await _status(client, instance_id)
    return status if runtime_status(status) in RUNNING else None


def _in_progress(instance_id: str, status: Any) -> ApiError:
    return ApiError(
        409,
        "ActivationInProgress",
        "an activation or rollback of this image is already running; wait for it to end",
        instance_id=instance_id,
        progress=getattr(status, "custom_status", None),
    )


async def _start_exclusive(client: Any, orchestrator: str, instance_id: str, payload: Any) -> None:
    """Start the image's one activation or rollback; 409 when one already runs."""
    running = await _running(client, instance_id)
    if running is not None:
        raise _in_progress(instance_id, running)
    try:
        await client.start_new(orchestrator, instance_id, payload)
    except Exception as exc:
        running = await _running(client, instance_id)
        if running is not None:  # another request won the race
            raise _in_progress(instance_id, running) from None
        raise unavailable("StoreUnavailable", f"{instance_id} could not start: {exc}") from None


def _accepted(call: Call, image: str, body: dict[str, Any], operation: Operation | None) -> Reply:
    return call.accepted(body, f"images/{image}/versions", operation)


def _input_of(status: Any) -> dict[str, Any]:
    raw = getattr(status, "input_", None)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) else {}


async def _decision_answer(client: Any, instance_id: str, wait: float) -> tuple[Any, str | None]:
    """The decision instance's status, waiting up to ``wait`` real seconds for it to end."""
    deadline = time.monotonic() + wait
    while True:
        status = await _status(client, instance_id)
        state = runtime_status(status)
        if state not in RUNNING or time.monotonic() >= deadline:
            return status, state
        await asyncio.sleep(0.05)


def _decision_reply(
    call: Call, image: str, version: str, status: Any, state: str | None, instance_id: str
) -> Reply:
    if state == "Completed":
        output = getattr(status, "output", None) or {}
        if isinstance(output, dict) and output.get("status") == "refused":
            extra = {k: v for k, v in output.items() if k not in ("code", "message", "field")}
            raise ApiError(409, "DecisionRefused", str(output.get("reason")), **extra)
        return Reply(output, 200)
    if state in RUNNING:
        operation = Operation("instance", f"decision on {image} {version}", instance_id)
        return _accepted(
            call, image, {"image": image, "version": version, "status": "deciding"}, operation
        )
    # Azure kept refusing the write (throttled, busy): the same request may succeed later.
    raise ApiError(
        503,
        "DecisionNotWritten",
        f"the decision on {image} {version} was not written; retry",
        headers={"Retry-After": "60"},
        state=state,
    )


def _retryable(status: Any) -> bool:
    """A decision instance that failed or was refused may be tried again."""
    state = runtime_status(status)
    if state in ("Failed", "Terminated", "Canceled"):
        return True
    output = getattr(status, "output", None)
    return state == "Completed" and isinstance(output, dict) and output.get("status") == "refused"


@route(
    bp,
    "POST",
    "images/{image}/versions/{version}/approval",
    role=Role.APPROVER,
    tag="lifecycle",
    summary="Approve or reject a validated version (four eyes)",
    request=ApprovalBody,
    response=Decision,
    status=202,
    params={"image": IMAGE_PATTERN, "version": VERSION_PATTERN},
    resolve=image_exists,
    errors=(404, 409),
    callbacks=True,
)
async def approve_version(call: Call) -> Reply:
    """An approver approves or rejects a validated version (four eyes, change ticket).

    200 with the decision once written (usually at once); 202 while it is written. The
    requester of the version's build may not approve it (403 ``SelfApprovalRefused``).
    """
    principal = call.principal
    image = catalogue_image(call.params["image"])
    version = call.params["version"]
    body: ApprovalBody = call.body
    instance_id = names.approval_instance_id(image.name, version)
    existing = await _status(call.client, instance_id)
    previous = _input_of(existing) if runtime_status(existing) else {}
    found_overview = await overview(image)
    found = _version(found_overview, image.name, version, "version")
    if previous and not _retryable(existing):
        if previous.get("decision") == body.decision:
            status, state = await _decision_answer(call.client, instance_id, 0)
            return _decision_reply(call, image.name, version, status, state, instance_id)
        raise _conflict(
            "AlreadyDecided",
            f"version {version} was already decided ({previous.get('decision')} by "
            f"{previous.get('actor')})",
            found,
        )
    action = Action.APPROVE if body.decision == "approve" else Action.REJECT
    state = VersionState(found["state"]) if found.get("state") else None
    change = transition(state, action, principal.actor, requester=found.get("requested_by"))
    if isinstance(change, Refusal):
        if state is VersionState.VALIDATED:  # the state allows it: the person does not
            raise ApiError(
                403,
                "SelfApprovalRefused",
                change.reason,
                state=state.value,
                requested_by=found.get("requested_by"),
            )
        raise _conflict("VersionNotAwaitingDecision", change.text, found)
    payload = {
        "image": image.name,
        "version": version,
        "decision": body.decision,
        "actor": principal.actor,
        "change_ticket": body.change_ticket,
        "comment": body.comment,
        "reason": body.comment,
    }
    try:
        await call.client.start_new(names.ORCH_DECIDE_APPROVAL, instance_id, payload)
    except Exception as exc:
        if runtime_status(await _status(call.client, instance_id)) not in RUNNING:
            raise unavailable("StoreUnavailable", f"the decision could not start: {exc}") from None
    status, rstate = await _decision_answer(call.client, instance_id, DECISION_WAIT_SECONDS)
    return _decision_reply(call, image.name, version, status, rstate, instance_id)


@route(
    bp,
    "POST",
    "images/{image}/activation",
    role=Role.OPERATOR,
    tag="lifecycle",
    summary="Activate an approved version (latest everywhere, host pools follow)",
    request=ActivationBody,
    response=ActivationAccepted,
    status=202,
    params={"image": IMAGE_PATTERN},
    resolve=image_exists,
    errors=(404, 409),
    callbacks=True,
)
async def activate(call: Call) -> Reply:
    """An operator activates an approved version (one activation per image at a time)."""
    image = catalogue_image(call.params["image"])
    body: ActivationBody = call.body
    instance_id = names.activation_instance_id(image.name)
    running = await _running(call.client, instance_id)
    if running is not None:
        raise _in_progress(instance_id, running)
    found_overview = await overview(image)
    found = _version(found_overview, image.name, body.version, "version")
    if found.get("state") != VersionState.APPROVED:
        raise _conflict(
            "VersionNotApproved",
            f"version {body.version} is {found.get('state')}: only an approved version can "
            "be activated",
            found,
        )
    payload = {
        "image": image.name,
        "version": body.version,
        "actor": call.principal.actor,
        "change_ticket": body.change_ticket,
        "reason": body.reason or f"activated by {call.principal.actor}",
    }
    await _start_exclusive(call.client, names.ORCH_ACTIVATE_VERSION, instance_id, payload)
    operation = Operation("instance", f"activation of {image.name} {body.version}", instance_id)
    return _accepted(
        call,
        image.name,
        {"image": image.name, "version": body.version, "instance_id": instance_id},
        operation,
    )


@route(
    bp,
    "POST",
    "images/{image}/rollback",
    role=Role.OPERATOR,
    tag="lifecycle",
    summary="Roll back to the backup (or a named backup / deprecated version)",
    request=RollbackBody,
    response=ActivationAccepted,
    status=202,
    params={"image": IMAGE_PATTERN},
    resolve=image_exists,
    errors=(404, 409),
    callbacks=True,
)
async def rollback(call: Call) -> Reply:
    """An operator rolls back to the backup (or a named backup / deprecated version)."""
    image = catalogue_image(call.params["image"])
    body: RollbackBody = call.body
    instance_id = names.activation_instance_id(image.name)
    running = await _running(call.client, instance_id)
    if running is not None:
        raise _in_progress(instance_id, running)
    found_overview = await overview(image)
    if body.to_version:
        target = _version(found_overview, image.name, body.to_version, "to_version")
        if target.get("state") not in ROLLBACK_SOURCES:
            raise _conflict(
                "NotARollbackTarget",
                f"version {body.to_version} is {target.get('state')}: a rollback re-activates"
                " a backup or deprecated version",
                target,
            )
    else:
        chosen = rollback_target(found_overview["versions"])
        if chosen is None:
            active = next(
                (v for v in found_overview["versions"] if v.get("state") == VersionState.ACTIVE),
                None,
            )
            raise _conflict(
                "NoBackup",
                f"image {image.name} has no backup version to roll back to; name a "
                "deprecated version in to_version",
                active,
            )
        target = dict(chosen)
    payload = {
        "image": image.name,
        "to_version": target["version"],
        "actor": call.principal.actor,
        "change_ticket": body.change_ticket,
        "reason": body.reason,
    }
    await _start_exclusive(call.client, names.ORCH_ROLL_BACK, instance_id, payload)
    operation = Operation("instance", f"rollback of {image.name}", instance_id)
    return _accepted(
        call,
        image.name,
        {"image": image.name, "version": target["version"], "instance_id": instance_id},
        operation,
    )


@route(
    bp,
    "GET",
    "images/{image}/versions",
    role=Role.READER,
    tag="versions",
    summary="Each version's state and what latest resolves to per region",
    response=VersionsOverview,
    params={"image": IMAGE_PATTERN},
    resolve=image_exists,
    errors=(404,),
)
async def list_versions(call: Call) -> dict[str, Any]:
    """Every version's state and lifecycle tags, ``latest`` per region, the running activation."""
    image = catalogue_image(call.params["image"])
    found_overview = await overview(image)
    activation = await _status(call.client, names.activation_instance_id(image.name))
    if runtime_status(activation):
        found_overview["activation"] = {
            "runtime_status": runtime_status(activation),
            "progress": getattr(activation, "custom_status", None),
            "output": getattr(activation, "output", None),
        }
    return found_overview


# ---- events -----------------------------------------------------------------------------


def _event_fields(event: Any) -> tuple[str, dict[str, Any]]:
    """Type and data of an Event Grid schema event or a CloudEvent."""
    event_type = getattr(event, "event_type", None) or getattr(event, "type", None) or ""
    data: Any = None
    if hasattr(event, "get_json"):
        try:
            data = event.get_json()
        except ValueError:
            data = None
    if data is None:
        data = getattr(event, "data", None)
    return str(event_type), data if isinstance(data, dict) else {}


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def on_image_version_validated(event: Any, client: df.DurableOrchestrationClient) -> None:
    """A version passed validation: start its approval timer (once per version)."""
    event_type, data = _event_fields(event)
    if event_type != names.EG_IMAGE_VERSION_VALIDATED:
        log.warning("ignored event of type %r", event_type)
        return
    image, version = data.get("image"), data.get("version")
    if not isinstance(image, str) or not isinstance(version, str):
        log.warning("ignored %s without image and version", event_type)
        return
    if ImageVersion.try_parse(version) is None:
        log.warning("ignored %s: %r is not a version", event_type, version)
        return
    try:
        find_image(image)
    except (NotFoundError, InputError, OSError) as exc:
        log.warning("ignored %s for %s: %s", event_type, image, exc)
        return
    instance_id = names.approval_timer_instance_id(image, version)
    if runtime_status(await client.get_status(instance_id)) is not None:
        return  # a redelivered event: the timer exists
    await client.start_new(
        names.ORCH_APPROVAL_TIMEOUT,
        instance_id,
        {"image": image, "version": version, "validated_at": data.get("at")},
    )
