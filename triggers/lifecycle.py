"""HTTP and Event Grid: approve, activate and roll back versions; list an image's versions.

Every route needs an authenticated principal (App Service Authentication's
``X-MS-CLIENT-PRINCIPAL``; 401 without one) and an app role: ``Approver`` for approvals,
``Operator`` for activation and rollback, any of ``Reader``/``Operator``/``Approver`` to read.
Input is checked here, against the catalogue and the versions' current states, before anything
starts: 400 names the bad field, 404 an unknown image or version, 409 gives the current state
and the actions allowed from it. A refusal changes nothing in Azure. Routes (docs/lifecycle.md):

- ``POST /api/images/{image}/versions/{version}/approval`` ``{decision, change_ticket, comment}``
- ``POST /api/images/{image}/activation`` ``{version, change_ticket, reason?}``
- ``POST /api/images/{image}/rollback`` ``{to_version?, change_ticket, reason}``
- ``GET  /api/images/{image}/versions``

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
import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from activities.lifecycle import versions_overview
from shared import names
from shared.app_catalogue import find_image
from shared.azure import gallery
from shared.domain.catalogue import CatalogueImage
from shared.domain.lifecycle import (
    ROLLBACK_SOURCES,
    Action,
    Refusal,
    allowed_actions,
    rollback_target,
    transition,
)
from shared.domain.principal import (
    HEADER,
    ROLE_APPROVER,
    ROLE_OPERATOR,
    ROLE_READER,
    Principal,
    parse_principal,
)
from shared.domain.versions import ImageVersion, VersionState
from shared.errors import InputError, NotFoundError, field_errors_from_pydantic
from shared.settings import load_settings
from triggers._common import (
    RUNNING,
    error_response,
    input_error_response,
    json_response,
    parse_json_body,
    runtime_status,
)

bp = df.Blueprint()
log = logging.getLogger("imagefactory.triggers.lifecycle")

DECISION_WAIT_SECONDS = 2.0  # real time an approval waits for its (usually quick) write


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ApprovalBody(_Body):
    decision: Literal["approve", "reject"]
    change_ticket: str = Field(min_length=1, max_length=200)
    comment: str = Field(default="", max_length=1000)


class ActivationBody(_Body):
    version: str = Field(pattern=r"^\d{1,10}\.\d{1,10}\.\d{1,10}$")
    change_ticket: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=1000)


class RollbackBody(_Body):
    to_version: str | None = Field(default=None, pattern=r"^\d{1,10}\.\d{1,10}\.\d{1,10}$")
    change_ticket: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=1000)


class _RefusedError(Exception):
    """A finished answer (an error response) raised out of a helper."""

    def __init__(self, response: func.HttpResponse) -> None:
        super().__init__("refused")
        self.response = response


def _principal(req: func.HttpRequest, *roles: str) -> Principal:
    principal = parse_principal(req.headers.get(HEADER))
    if principal is None:
        raise _RefusedError(
            error_response(
                401,
                "Unauthenticated",
                f"an authenticated principal is required (the {HEADER} header of App Service "
                "Authentication)",
            )
        )
    if not any(principal.has_role(r) for r in roles):
        raise _RefusedError(
            error_response(
                403,
                "Forbidden",
                f"{principal.name} lacks the role this needs: {' or '.join(roles)}",
                missing_role=roles[0] if len(roles) == 1 else list(roles),
            )
        )
    return principal


def _body(req: func.HttpRequest, model: type[_Body]) -> Any:
    try:
        return model.model_validate(parse_json_body(req, required=True))
    except ValidationError as exc:
        errors = field_errors_from_pydantic(exc.errors())  # type: ignore[arg-type]
        raise _RefusedError(input_error_response(InputError(errors))) from None
    except InputError as exc:
        raise _RefusedError(input_error_response(exc)) from None


def _image(req: func.HttpRequest) -> CatalogueImage:
    name = req.route_params.get("image", "")
    try:
        return find_image(name)
    except NotFoundError as exc:
        raise _RefusedError(error_response(404, "ImageNotFound", str(exc), image=name)) from None
    except (InputError, OSError) as exc:
        log.error("catalogue unavailable: %s", exc)
        raise _RefusedError(
            error_response(
                503, "CatalogueUnavailable", f"the image catalogue cannot be read: {exc}"
            )
        ) from None


def _read_overview(image: CatalogueImage) -> dict[str, Any]:
    settings = load_settings()
    g = image.gallery
    found = gallery.list_version_lifecycles(
        settings, g.resource_group, g.gallery_name, g.image_definition
    )
    return versions_overview(image, found)


async def _overview(image: CatalogueImage) -> dict[str, Any]:
    """The image's versions (a blocking SDK read, off the event loop)."""
    try:
        return await asyncio.to_thread(_read_overview, image)
    except Exception as exc:  # Azure unreachable or throttled: retry later
        log.warning("versions of %s could not be read: %s", image.name, exc)
        raise _RefusedError(
            error_response(503, "AzureUnavailable", f"versions could not be read: {exc}")
        ) from None


def _version(overview: dict[str, Any], image: str, version: str, field: str) -> dict[str, Any]:
    found: dict[str, Any] | None = next(
        (v for v in overview["versions"] if v["version"] == version), None
    )
    if found is None:
        raise _RefusedError(
            error_response(
                404,
                "VersionNotFound",
                f"image {image} has no version {version}",
                field=field,
                image=image,
                version=version,
            )
        )
    return found


def _conflict(
    code: str, message: str, version: dict[str, Any] | None, **extra: Any
) -> _RefusedError:
    state = version.get("state") if version else None
    allowed: list[str] = []
    if state:
        try:
            allowed = [a.value for a in allowed_actions(VersionState(state))]
        except ValueError:
            allowed = []
    return _RefusedError(
        error_response(
            409,
            code,
            message,
            state=state,
            version=version.get("version") if version else None,
            allowed_actions=allowed,
            **extra,
        )
    )


async def _running(client: df.DurableOrchestrationClient, instance_id: str) -> Any:
    status = await client.get_status(instance_id)
    return status if runtime_status(status) in RUNNING else None


def _in_progress(instance_id: str, status: Any) -> _RefusedError:
    return _RefusedError(
        error_response(
            409,
            "ActivationInProgress",
            "an activation or rollback of this image is already running; wait for it to end",
            instance_id=instance_id,
            progress=getattr(status, "custom_status", None),
        )
    )


async def _start_exclusive(
    client: df.DurableOrchestrationClient, orchestrator: str, instance_id: str, payload: Any
) -> None:
    """Start the image's one activation or rollback; 409 when one already runs."""
    running = await _running(client, instance_id)
    if running is not None:
        raise _in_progress(instance_id, running)
    try:
        await client.start_new(orchestrator, instance_id, payload)
    except Exception:
        running = await _running(client, instance_id)
        if running is not None:  # another request won the race
            raise _in_progress(instance_id, running) from None
        raise


def _accepted(req: func.HttpRequest, image: str, body: dict[str, Any]) -> func.HttpResponse:
    base = req.url.split("/api/", 1)[0]
    status_url = f"{base}/api/images/{image}/versions"
    return json_response(
        {**body, "status_url": status_url},
        202,
        headers={"Location": status_url, "Retry-After": "10"},
    )


def _input_of(status: Any) -> dict[str, Any]:
    raw = getattr(status, "input_", None)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) else {}


async def _decision_answer(
    client: df.DurableOrchestrationClient, instance_id: str, wait: float
) -> tuple[Any, str | None]:
    """The decision instance's status, waiting up to ``wait`` real seconds for it to end."""
    deadline = time.monotonic() + wait
    while True:
        status = await client.get_status(instance_id)
        state = runtime_status(status)
        if state not in RUNNING or time.monotonic() >= deadline:
            return status, state
        await asyncio.sleep(0.05)


def _decision_response(
    req: func.HttpRequest, image: str, version: str, status: Any, state: str | None
) -> func.HttpResponse:
    if state == "Completed":
        output = getattr(status, "output", None) or {}
        if isinstance(output, dict) and output.get("status") == "refused":
            return error_response(409, "DecisionRefused", str(output.get("reason")), **output)
        return json_response(output, 200)
    if state in RUNNING:
        return _accepted(req, image, {"image": image, "version": version, "status": "deciding"})
    # Azure kept refusing the write (throttled, busy): the same request may succeed later.
    response = error_response(
        503,
        "DecisionNotWritten",
        f"the decision on {image} {version} was not written; retry",
        state=state,
    )
    response.headers["Retry-After"] = "60"
    return response


@bp.route(
    route="images/{image}/versions/{version}/approval",
    methods=["POST"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
@bp.durable_client_input(client_name="client")
async def approve_version(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """An approver approves or rejects a validated version (four eyes, change ticket)."""
    try:
        principal = _principal(req, ROLE_APPROVER)
        image = _image(req)
        version = req.route_params.get("version", "")
        if ImageVersion.try_parse(version) is None:
            raise _RefusedError(
                error_response(
                    400,
                    "InvalidInput",
                    f"version: {version!r} is not Major.Minor.Patch",
                    field="version",
                )
            )
        body: ApprovalBody = _body(req, ApprovalBody)
        instance_id = names.approval_instance_id(image.name, version)
        existing = await client.get_status(instance_id)
        previous = _input_of(existing) if runtime_status(existing) else {}
        overview = await _overview(image)
        found = _version(overview, image.name, version, "version")
        if previous and not _retryable(existing):
            if previous.get("decision") == body.decision:
                status, state = await _decision_answer(client, instance_id, 0)
                return _decision_response(req, image.name, version, status, state)
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
                raise _RefusedError(
                    error_response(
                        403,
                        "SelfApprovalRefused",
                        change.reason,
                        state=state.value,
                        requested_by=found.get("requested_by"),
                    )
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
            await client.start_new(names.ORCH_DECIDE_APPROVAL, instance_id, payload)
        except Exception:
            if runtime_status(await client.get_status(instance_id)) not in RUNNING:
                raise
        status, rstate = await _decision_answer(client, instance_id, DECISION_WAIT_SECONDS)
        return _decision_response(req, image.name, version, status, rstate)
    except _RefusedError as refused:
        return refused.response


def _retryable(status: Any) -> bool:
    """A decision instance that failed or was refused may be tried again."""
    state = runtime_status(status)
    if state in ("Failed", "Terminated", "Canceled"):
        return True
    output = getattr(status, "output", None)
    return state == "Completed" and isinstance(output, dict) and output.get("status") == "refused"


@bp.route(route="images/{image}/activation", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def activate(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """An operator activates an approved version (one activation per image at a time)."""
    try:
        principal = _principal(req, ROLE_OPERATOR)
        image = _image(req)
        body: ActivationBody = _body(req, ActivationBody)
        instance_id = names.activation_instance_id(image.name)
        running = await _running(client, instance_id)
        if running is not None:
            raise _in_progress(instance_id, running)
        overview = await _overview(image)
        found = _version(overview, image.name, body.version, "version")
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
            "actor": principal.actor,
            "change_ticket": body.change_ticket,
            "reason": body.reason or f"activated by {principal.actor}",
        }
        await _start_exclusive(client, names.ORCH_ACTIVATE_VERSION, instance_id, payload)
        return _accepted(
            req,
            image.name,
            {"image": image.name, "version": body.version, "instance_id": instance_id},
        )
    except _RefusedError as refused:
        return refused.response


@bp.route(route="images/{image}/rollback", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def rollback(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """An operator rolls back to the backup (or a named backup / deprecated version)."""
    try:
        principal = _principal(req, ROLE_OPERATOR)
        image = _image(req)
        body: RollbackBody = _body(req, RollbackBody)
        instance_id = names.activation_instance_id(image.name)
        running = await _running(client, instance_id)
        if running is not None:
            raise _in_progress(instance_id, running)
        overview = await _overview(image)
        if body.to_version:
            target = _version(overview, image.name, body.to_version, "to_version")
            if target.get("state") not in ROLLBACK_SOURCES:
                raise _conflict(
                    "NotARollbackTarget",
                    f"version {body.to_version} is {target.get('state')}: a rollback re-activates"
                    " a backup or deprecated version",
                    target,
                )
        else:
            chosen = rollback_target(overview["versions"])
            if chosen is None:
                active = next(
                    (v for v in overview["versions"] if v.get("state") == VersionState.ACTIVE),
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
            "actor": principal.actor,
            "change_ticket": body.change_ticket,
            "reason": body.reason,
        }
        await _start_exclusive(client, names.ORCH_ROLL_BACK, instance_id, payload)
        return _accepted(
            req,
            image.name,
            {"image": image.name, "version": target["version"], "instance_id": instance_id},
        )
    except _RefusedError as refused:
        return refused.response


@bp.route(route="images/{image}/versions", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def list_versions(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """Each version's state and what ``latest`` resolves to per region."""
    try:
        _principal(req, ROLE_READER, ROLE_OPERATOR, ROLE_APPROVER)
        image = _image(req)
        overview = await _overview(image)
        activation = await client.get_status(names.activation_instance_id(image.name))
        if runtime_status(activation):
            overview["activation"] = {
                "runtime_status": runtime_status(activation),
                "progress": getattr(activation, "custom_status", None),
                "output": getattr(activation, "output", None),
            }
        return json_response(overview)
    except _RefusedError as refused:
        return refused.response


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
