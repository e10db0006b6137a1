"""Validation and ring promotion: started by the staged-version event or over HTTP.

- Event Grid ``ImageFactory.ImageVersionStaged`` (published by the build when a version is
  staged): starts the version's validation when its catalogue image has a ``validation``
  section with ``auto_start`` (the default). The build knows nothing of validation, and a
  redelivered event finds the instance already there and does nothing.
- ``POST /api/images/{image}/versions/{version}/validation``: start it on request (202 with a
  status URL; 409 while one runs or when it already ran).
- ``GET  /api/images/{image}/versions/{version}/validation``: its status.
- ``POST /api/images/{image}/versions/{version}/rings``: promote the version ring by ring
  (``force: true`` lets it pass an earlier version still soaking in a ring).
- ``GET  /api/images/{image}/versions/{version}/rings``: where the promotion is.

The routes are declared through ``triggers/_api.py`` (Operator starts, Reader reads; the actor
recorded is the authenticated principal; errors in the API's one shape).
"""

from __future__ import annotations

import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from pydantic import Field

from shared import names
from shared.app_catalogue import find_image
from shared.errors import NotFoundError
from triggers._api import (
    IMAGE_PATTERN,
    VERSION_PATTERN,
    Answer,
    ApiError,
    Body,
    Call,
    Reply,
    Role,
    route,
    unavailable,
)
from triggers._common import runtime_status
from triggers.builds import status_json
from triggers.events import accept_event
from triggers.images import catalogue_image, image_exists

bp = df.Blueprint()
log = logging.getLogger("imagefactory.triggers.validation")

_PARAMS = {"image": IMAGE_PATTERN, "version": VERSION_PATTERN}


class ValidationBody(Body):
    reason: str | None = Field(default=None, max_length=500)
    change_ticket: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:/-]{1,64}$")
    requested_by: str | None = Field(
        default=None,
        max_length=200,
        description="ignored: the actor recorded is the authenticated principal",
    )


class RingsBody(ValidationBody):
    force: bool = False


class Started(Answer):
    instance_id: str
    status_url: str


class InstanceStatus(Answer):
    instanceId: str | None  # noqa: N815 - the durable status's own names (kept shape)
    runtimeStatus: str | None  # noqa: N815
    customStatus: Any = None  # noqa: N815
    output: Any = None


def _target(call: Call, section: str) -> tuple[str, str]:
    """(image, version) of the route; 409 when the image has no such catalogue section."""
    image, version = call.params["image"], call.params["version"]
    entry = catalogue_image(image)
    if section == "validation" and entry.validation is None:
        raise ApiError(
            409,
            "NoValidation",
            f"image {image!r} has no validation section in the catalogue",
            field="validation",
        )
    if section == "rings" and not entry.rings:
        raise ApiError(
            409, "NoRings", f"image {image!r} has no rings in the catalogue", field="rings"
        )
    return image, version


async def _start(
    client: df.DurableOrchestrationClient,
    orchestrator: str,
    instance_id: str,
    payload: dict[str, Any],
) -> bool:
    """Start ``instance_id`` unless it exists (running or ended): True when started now."""
    if runtime_status(await client.get_status(instance_id)) is not None:
        return False
    try:
        await client.start_new(orchestrator, instance_id, payload)
    except Exception:
        if runtime_status(await client.get_status(instance_id)) is None:
            raise
        return False  # started by a concurrent request
    return True


async def _status(call: Call, instance_id: str) -> Any:
    try:
        return await call.client.get_status(instance_id)
    except Exception as exc:
        raise unavailable("StoreUnavailable", f"{instance_id} cannot be read: {exc}") from None


@route(
    bp,
    "POST",
    "images/{image}/versions/{version}/validation",
    role=Role.OPERATOR,
    tag="validation",
    summary="Validate a staged version on real session hosts",
    request=ValidationBody,
    response=Started,
    status=202,
    params=_PARAMS,
    errors=(404, 409),
    resolve=image_exists,
)
async def start_validation(call: Call) -> Reply:
    """Validate a staged version on real session hosts (202, or 409 if one exists)."""
    image, version = _target(call, "validation")
    body: ValidationBody = call.body
    instance_id = names.validation_instance_id(image, version)
    payload = {
        "image": image,
        "version": version,
        "actor": call.principal.actor,
        "reason": body.reason or "validation requested",
        "change_ticket": body.change_ticket,
    }
    try:
        started = await _start(call.client, names.ORCH_VALIDATE_VERSION, instance_id, payload)
    except Exception as exc:
        raise unavailable("StoreUnavailable", f"{instance_id} could not start: {exc}") from None
    if not started:
        status = status_json(await _status(call, instance_id)) or {}
        raise ApiError(
            409,
            "ValidationExists",
            f"version {version} of {image} has a validation already "
            f"({status.get('runtimeStatus')})",
            instance_id=instance_id,
            runtimeStatus=status.get("runtimeStatus"),
        )
    return call.accepted(
        {"instance_id": instance_id}, f"images/{image}/versions/{version}/validation"
    )


async def _get(call: Call, section: str) -> dict[str, Any]:
    image, version = _target(call, section)
    make = names.validation_instance_id if section == "validation" else names.rings_instance_id
    status = status_json(await _status(call, make(image, version)))
    if status is None:
        raise ApiError(
            404,
            "NotFound",
            f"no {section} of version {version} of {image}",
            field="version",
            version=version,
        )
    return status


@route(
    bp,
    "GET",
    "images/{image}/versions/{version}/validation",
    role=Role.READER,
    tag="validation",
    summary="The validation's phase, results and outcome",
    response=InstanceStatus,
    params=_PARAMS,
    errors=(404, 409),
    resolve=image_exists,
)
async def get_validation(call: Call) -> dict[str, Any]:
    """The validation's phase, results and outcome."""
    return await _get(call, "validation")


@route(
    bp,
    "POST",
    "images/{image}/versions/{version}/rings",
    role=Role.OPERATOR,
    tag="validation",
    summary="Promote a version ring by ring",
    request=RingsBody,
    response=Started,
    status=202,
    params=_PARAMS,
    errors=(404, 409),
    resolve=image_exists,
)
async def start_rings(call: Call) -> Reply:
    """Promote a version ring by ring (202, or 409 while a promotion of it runs)."""
    image, version = _target(call, "rings")
    body: RingsBody = call.body
    instance_id = names.rings_instance_id(image, version)
    if runtime_status(await _status(call, instance_id)) in {"Running", "Pending", "ContinuedAsNew"}:
        raise ApiError(409, "PromotionRunning", f"version {version} of {image} is being promoted")
    payload = {
        "image": image,
        "version": version,
        "actor": call.principal.actor,
        "reason": body.reason or "ring promotion requested",
        "change_ticket": body.change_ticket,
        "force": body.force,
    }
    try:
        await call.client.start_new(names.ORCH_PROMOTE_RINGS, instance_id, payload)
    except Exception as exc:
        raise unavailable("StoreUnavailable", f"{instance_id} could not start: {exc}") from None
    return call.accepted({"instance_id": instance_id}, f"images/{image}/versions/{version}/rings")


@route(
    bp,
    "GET",
    "images/{image}/versions/{version}/rings",
    role=Role.READER,
    tag="validation",
    summary="Which ring the version is in, soaking, passed or held",
    response=InstanceStatus,
    params=_PARAMS,
    errors=(404, 409),
    resolve=image_exists,
)
async def get_rings(call: Call) -> dict[str, Any]:
    """Which ring the version is in, soaking, passed or held (and why)."""
    return await _get(call, "rings")


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def on_image_version_staged(
    event: func.EventGridEvent, client: df.DurableOrchestrationClient
) -> None:
    """A version was staged: validate it when its image asks for that."""
    accepted = accept_event(event, {names.EG_IMAGE_VERSION_STAGED})
    if accepted is None:
        return
    image, version = str(accepted.data["image"]), str(accepted.data["version"])
    try:
        entry = find_image(image)
    except NotFoundError:
        log.warning("staged version %s of %s: image not in the catalogue", version, image)
        return
    if entry.validation is None or not entry.validation.auto_start:
        log.info("staged version %s of %s: no automatic validation", version, image)
        return
    started = await _start(
        client,
        names.ORCH_VALIDATE_VERSION,
        names.validation_instance_id(image, version),
        {
            "image": image,
            "version": version,
            "actor": None,
            "reason": f"staged by build {accepted.data.get('build_id')}",
            "change_ticket": None,
        },
    )
    log.info(
        "staged version %s of %s: validation %s", version, image, "started" if started else "exists"
    )
