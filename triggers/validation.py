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
"""

from __future__ import annotations

import logging
import re
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import names
from shared.app_catalogue import find_image
from shared.errors import InputError, NotFoundError, field_errors_from_pydantic
from triggers._common import (
    error_response,
    input_error_response,
    json_response,
    parse_json_body,
    runtime_status,
)
from triggers.builds import _known_image, _status_json
from triggers.events import accept_event

bp = df.Blueprint()
log = logging.getLogger("imagefactory.triggers.validation")

_VERSION = re.compile(r"\d{1,10}\.\d{1,10}\.\d{1,10}")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)
    change_ticket: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:/-]{1,64}$")
    requested_by: str | None = Field(default=None, max_length=200)


class RingsBody(_Body):
    force: bool = False


def _target(req: func.HttpRequest, section: str) -> tuple[str, str] | func.HttpResponse:
    """(image, version) from the route, or the error response to send."""
    image = req.route_params.get("image", "")
    version = req.route_params.get("version", "")
    problem = _known_image(image)
    if problem is not None:
        return problem
    if not _VERSION.fullmatch(version):
        return error_response(
            400, "InvalidInput", "version: a Major.Minor.Patch version", field="version"
        )
    entry = find_image(image)
    if section == "validation" and entry.validation is None:
        return error_response(
            409,
            "NoValidation",
            f"image {image!r} has no validation section in the catalogue",
            field="validation",
        )
    if section == "rings" and not entry.rings:
        return error_response(
            409, "NoRings", f"image {image!r} has no rings in the catalogue", field="rings"
        )
    return image, version


def _body(req: func.HttpRequest, model: type[_Body]) -> _Body | func.HttpResponse:
    try:
        return model.model_validate(parse_json_body(req))
    except ValidationError as exc:
        errors = field_errors_from_pydantic(exc.errors())  # type: ignore[arg-type]
        return input_error_response(InputError(errors))
    except InputError as exc:
        return input_error_response(exc)


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


def _accepted(req: func.HttpRequest, path: str, instance_id: str) -> func.HttpResponse:
    base = req.url.split("/api/", 1)[0]
    url = f"{base}/api/{path}"
    return json_response(
        {"instance_id": instance_id, "status_url": url}, 202, headers={"Location": url}
    )


@bp.route(
    route="images/{image}/versions/{version}/validation",
    methods=["POST"],
    auth_level=func.AuthLevel.FUNCTION,
)
@bp.durable_client_input(client_name="client")
async def start_validation(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """Validate a staged version on real session hosts (202, or 409 if one exists)."""
    target = _target(req, "validation")
    if isinstance(target, func.HttpResponse):
        return target
    body = _body(req, _Body)
    if isinstance(body, func.HttpResponse):
        return body
    image, version = target
    instance_id = names.validation_instance_id(image, version)
    payload = {
        "image": image,
        "version": version,
        "actor": body.requested_by,
        "reason": body.reason or "validation requested",
        "change_ticket": body.change_ticket,
    }
    if not await _start(client, names.ORCH_VALIDATE_VERSION, instance_id, payload):
        status = _status_json(await client.get_status(instance_id)) or {}
        return error_response(
            409,
            "ValidationExists",
            f"version {version} of {image} has a validation already "
            f"({status.get('runtimeStatus')})",
            instance_id=instance_id,
            runtimeStatus=status.get("runtimeStatus"),
        )
    return _accepted(req, f"images/{image}/versions/{version}/validation", instance_id)


async def _get(
    req: func.HttpRequest, client: df.DurableOrchestrationClient, section: str
) -> func.HttpResponse:
    target = _target(req, section)
    if isinstance(target, func.HttpResponse):
        return target
    image, version = target
    make = names.validation_instance_id if section == "validation" else names.rings_instance_id
    status = _status_json(await client.get_status(make(image, version)))
    if status is None:
        return error_response(
            404, "NotFound", f"no {section} of version {version} of {image}", version=version
        )
    return json_response(status)


@bp.route(
    route="images/{image}/versions/{version}/validation",
    methods=["GET"],
    auth_level=func.AuthLevel.FUNCTION,
)
@bp.durable_client_input(client_name="client")
async def get_validation(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """The validation's phase, results and outcome."""
    return await _get(req, client, "validation")


@bp.route(
    route="images/{image}/versions/{version}/rings",
    methods=["POST"],
    auth_level=func.AuthLevel.FUNCTION,
)
@bp.durable_client_input(client_name="client")
async def start_rings(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """Promote a version ring by ring (202, or 409 while a promotion of it runs)."""
    target = _target(req, "rings")
    if isinstance(target, func.HttpResponse):
        return target
    body = _body(req, RingsBody)
    if isinstance(body, func.HttpResponse):
        return body
    assert isinstance(body, RingsBody)
    image, version = target
    instance_id = names.rings_instance_id(image, version)
    status = runtime_status(await client.get_status(instance_id))
    if status in {"Running", "Pending", "ContinuedAsNew"}:
        return error_response(
            409, "PromotionRunning", f"version {version} of {image} is being promoted"
        )
    payload = {
        "image": image,
        "version": version,
        "actor": body.requested_by,
        "reason": body.reason or "ring promotion requested",
        "change_ticket": body.change_ticket,
        "force": body.force,
    }
    await client.start_new(names.ORCH_PROMOTE_RINGS, instance_id, payload)
    return _accepted(req, f"images/{image}/versions/{version}/rings", instance_id)


@bp.route(
    route="images/{image}/versions/{version}/rings",
    methods=["GET"],
    auth_level=func.AuthLevel.FUNCTION,
)
@bp.durable_client_input(client_name="client")
async def get_rings(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """Which ring the version is in, soaking, passed or held (and why)."""
    return await _get(req, client, "rings")


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
