"""HTTP: start a build by hand and read the build queue of an image (ITSM tools, operators).

``POST /api/images/{image}/builds`` queues a build (202); a repeated ``Idempotency-Key`` (header
or ``key`` field) is dropped by the queue, so a retried ITSM call never builds twice. The answer
names the request's own status URL (``Location``): its custom status and output carry the
queue's answer (``accepted`` with the build id, ``duplicate`` or ``refused``) once given.
``GET /api/images/{image}/builds`` shows the queue (the image's queue entity);
``GET /api/builds/{build_id}`` one build.
Every route needs a function key in Azure (auth level FUNCTION).

Bodies go through ``parse_json_body``: over 256 KiB is ``413`` naming the limit, malformed or
nested deeper than 32 levels is ``400`` naming ``body``, so no body can crash the trigger. A 5xx
comes only from what a retry can fix (the durable client or the catalogue failing).
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
from shared.names import build_instance_id
from triggers._common import (
    error_response,
    input_error_response,
    json_response,
    parse_json_body,
    request_build,
)

bp = df.Blueprint()
log = logging.getLogger("imagefactory.triggers.builds")

_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class BuildRequestBody(BaseModel):
    """What a caller may say about a build it requests."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="manual", max_length=500)
    base_version: str | None = Field(default=None, pattern=r"^\d+\.\d+\.\d+$")
    key: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,128}$")
    requested_by: str | None = Field(default=None, max_length=200)


def _status_json(status: Any) -> dict[str, Any] | None:
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


def _known_image(image: str) -> func.HttpResponse | None:
    """None when ``image`` is in the catalogue, else the error response to send.

    A client naming an unknown image gets 404; a catalogue or setting the operators broke is
    not the caller's fault: 503 naming what to fix.
    """
    try:
        find_image(image)
    except NotFoundError as exc:
        return error_response(404, "ImageNotFound", str(exc), image=image)
    except (InputError, OSError) as exc:
        log.error("catalogue unavailable: %s", exc)
        return error_response(
            503, "CatalogueUnavailable", f"the image catalogue cannot be read: {exc}"
        )
    return None


@bp.route(route="images/{image}/builds", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def start_build(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """Queue a build of one catalogue image."""
    image = req.route_params.get("image", "")
    problem = _known_image(image)
    if problem is not None:
        return problem
    try:
        body = BuildRequestBody.model_validate(parse_json_body(req))
        key = req.headers.get("Idempotency-Key") or body.key
        if key is not None and not _KEY.fullmatch(key):
            raise InputError.single("Idempotency-Key", "1-128 letters, digits or . _ : -")
    except ValidationError as exc:
        errors = field_errors_from_pydantic(exc.errors())  # type: ignore[arg-type]
        return input_error_response(InputError(errors))
    except InputError as exc:
        return input_error_response(exc)
    request = {
        "key": f"manual:{key}" if key else None,
        "reason": body.reason,
        "base_version": body.base_version,
        "requested_by": body.requested_by,
    }
    queued = await request_build(client, image, request)
    base = req.url.split("/api/", 1)[0]
    links = client.create_http_management_payload(queued["request_instance_id"])
    queued["status_url"] = links["statusQueryGetUri"]
    queued["queue_url"] = f"{base}/api/images/{image}/builds"
    return json_response(queued, 202, headers={"Location": queued["status_url"]})


@bp.route(route="images/{image}/builds", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def get_build_queue(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """The image's build queue: what runs, what waits, recent outcomes."""
    image = req.route_params.get("image", "")
    problem = _known_image(image)
    if problem is not None:
        return problem
    entity = await client.read_entity_state(df.EntityId(names.ENTITY_BUILD_QUEUE, image))
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
    return json_response({"image": image, "queue": queue})


@bp.route(route="builds/{build_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def get_build(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """One build: phase, percent, current operation; output when it ended."""
    build_id = req.route_params.get("build_id", "")
    if not _KEY.fullmatch(build_id):
        return error_response(400, "InvalidInput", "build_id: not a build id", field="build_id")
    status = _status_json(await client.get_status(build_instance_id(build_id)))
    if status is None:
        return error_response(404, "BuildNotFound", f"no build {build_id!r}", build_id=build_id)
    return json_response(status)
