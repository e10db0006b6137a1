"""Retention: the daily timer and the HTTP API (plan preview, runs, run status).

``retention_timer`` starts a run on the NCRONTAB schedule in ``RETENTION_SCHEDULE`` (default
daily at 03:00 UTC). ``GET /api/retention/plan[?image=NAME]`` runs a dry run and answers its
plan (200 when it finishes within a few seconds, else 202 with the status URL);
``POST /api/retention/runs`` with ``{"dry_run": bool, "images": [names]}`` starts a run and
answers 202 with the status URL; ``GET /api/retention/runs/{run_id}`` is that status. Before a
run starts, the trigger lists the running orchestrations and the gallery images their inputs
and statuses name (a version a running orchestration works on is in use). One applying run at
a time: a second is refused with 409 (the timer skips). docs/retention.md.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from shared import names
from shared.app_catalogue import app_catalogue
from shared.azure.retention_gateway import orchestration_refs
from shared.errors import InputError, field_errors_from_pydantic
from shared.settings import (
    DEFAULT_RETENTION_SCHEDULE,
    load_settings,
    refuse_without_settings,
    retention_schedule,
)
from triggers._common import (
    RUNNING,
    error_response,
    input_error_response,
    json_response,
    parse_json_body,
    runtime_status,
)

bp = df.Blueprint()
log = logging.getLogger("imagefactory.triggers.retention")

APPLYING_PREFIX = names.retention_instance_id("run-")
PLAN_PREFIX = names.retention_instance_id("plan-")
PLAN_WAIT_SECONDS = 20.0
_RUN_ID = re.compile(r"(?:run|plan)-[a-z0-9]{12}")


def _schedule() -> str:
    """The timer's schedule (a binding property, so read when the app is indexed)."""
    try:
        return retention_schedule()
    except InputError as error:
        log.error("%s: the retention timer uses %s instead", error, DEFAULT_RETENTION_SCHEDULE)
        return DEFAULT_RETENTION_SCHEDULE


class RunBody(BaseModel):
    """What a caller may ask of a retention run."""

    model_config = ConfigDict(extra="forbid")

    dry_run: StrictBool = False
    images: list[str] | None = Field(default=None, min_length=1, max_length=100)


class CatalogueUnavailableError(Exception):
    """The catalogue cannot be read: the operators' problem (503), not the caller's."""


def _check_images(images: list[str] | None, field: str) -> None:
    """InputError naming ``field[i]`` for each name not in the catalogue."""
    if images is None:
        return
    try:
        known = set(app_catalogue(load_settings()).names())
    except (InputError, OSError) as error:
        raise CatalogueUnavailableError(str(error)) from None
    bad = [(i, name) for i, name in enumerate(images) if name not in known]
    if bad:
        raise InputError(
            [
                InputError.single(
                    f"{field}[{i}]" if field == "images" else field,
                    f"{name!r} is not a catalogue image",
                ).errors[0]
                for i, name in bad
            ]
        )


async def _orchestrations(client: Any) -> list[dict[str, Any]]:
    """Every running orchestration (not retention's own) and the gallery ids it names."""
    statuses = await client.get_status_by(
        runtime_status=[OrchestrationRuntimeStatus.Running, OrchestrationRuntimeStatus.Pending]
    )
    found: list[dict[str, Any]] = []
    for status in statuses:
        instance = str(getattr(status, "instance_id", "") or "")
        if not instance or instance.startswith(names.retention_instance_id("")):
            continue
        given = getattr(status, "input_", None)
        if given is None:
            status = await client.get_status(instance, show_input=True)
            given = getattr(status, "input_", None)
        refs = orchestration_refs([given, getattr(status, "custom_status", None)])
        found.append({"instance": instance, "refs": list(refs)})
    return found


async def _applying_run(client: Any) -> str | None:
    """The instance id of an applying (not dry) run still going, if any."""
    statuses = await client.get_status_by(
        runtime_status=[OrchestrationRuntimeStatus.Running, OrchestrationRuntimeStatus.Pending],
        instance_id_prefix=APPLYING_PREFIX,
    )
    for status in statuses:
        if runtime_status(status) in RUNNING:
            return str(status.instance_id)
    return None


async def start_run(client: Any, *, dry_run: bool, images: list[str] | None) -> str:
    """Start a retention run; returns its run id."""
    run_id = f"{'plan' if dry_run else 'run'}-{uuid.uuid4().hex[:12]}"
    settings = load_settings()
    await client.start_new(
        names.ORCH_RETENTION,
        names.retention_instance_id(run_id),
        {
            "run_id": run_id,
            "dry_run": dry_run,
            "images": images,
            "orchestrations": await _orchestrations(client),
            "poll_seconds": settings.poll_interval_seconds,
        },
    )
    log.info("retention run %s started (dry run: %s)", run_id, dry_run)
    return run_id


def _unavailable(error: Exception) -> func.HttpResponse:
    log.error("catalogue unavailable: %s", error)
    return error_response(
        503, "CatalogueUnavailable", f"the image catalogue cannot be read: {error}"
    )


def _status_url(req: func.HttpRequest, run_id: str) -> str:
    base = req.url.split("/api/", 1)[0]
    return f"{base}/api/retention/runs/{run_id}"


def _status_body(status: Any) -> dict[str, Any]:
    data: dict[str, Any] = status.to_json()
    return {
        "instanceId": data.get("instanceId"),
        "runtimeStatus": data.get("runtimeStatus"),
        "customStatus": data.get("customStatus"),
        "output": data.get("output"),
        "createdTime": data.get("createdTime"),
        "lastUpdatedTime": data.get("lastUpdatedTime"),
    }


@bp.timer_trigger(arg_name="timer", schedule=_schedule(), run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def retention_timer(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    """On the retention schedule: start an applying run unless one is still going."""
    if refuse_without_settings(log, "the retention timer") is None:
        return
    running = await _applying_run(client)
    if running is not None:
        log.warning("retention: %s still runs, this firing is skipped", running)
        return
    await start_run(client, dry_run=False, images=None)


@bp.route(route="retention/plan", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def retention_plan(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """A dry run's plan: per version the decision, its reason and the storage it frees."""
    image = req.params.get("image")
    extra = sorted(set(req.params) - {"image", "code"})
    try:
        if extra:
            raise InputError.single(extra[0], "unknown query parameter (only 'image')")
        if image is not None:
            _check_images([image], "image")
    except InputError as error:
        return input_error_response(error)
    except CatalogueUnavailableError as error:
        return _unavailable(error)
    run_id = await start_run(client, dry_run=True, images=[image] if image else None)
    instance = names.retention_instance_id(run_id)
    url = _status_url(req, run_id)
    deadline = time.monotonic() + PLAN_WAIT_SECONDS
    while time.monotonic() < deadline:
        status = await client.get_status(instance)
        state = runtime_status(status)
        if state == "Completed":
            return json_response(status.output)
        if state in {"Failed", "Terminated", "Canceled"}:
            return error_response(
                500, "RetentionPlanFailed", f"the dry run ended {state}", status_url=url
            )
        await asyncio.sleep(0.2)
    return json_response(
        {"run_id": run_id, "status_url": url},
        202,
        headers={"Location": url, "Retry-After": "5"},
    )


@bp.route(route="retention/runs", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def start_retention_run(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """Start a retention run (``dry_run`` changes nothing); 202 with its status URL."""
    try:
        body = RunBody.model_validate(parse_json_body(req))
        _check_images(body.images, "images")
    except ValidationError as error:
        errors = field_errors_from_pydantic(error.errors())  # type: ignore[arg-type]
        return input_error_response(InputError(errors))
    except InputError as error:
        return input_error_response(error)
    except CatalogueUnavailableError as error:
        return _unavailable(error)
    if not body.dry_run:
        running = await _applying_run(client)
        if running is not None:
            return error_response(
                409,
                "RetentionRunning",
                f"retention run {running} is still applying; try again when it has ended",
                instance_id=running,
            )
    run_id = await start_run(client, dry_run=body.dry_run, images=body.images)
    url = _status_url(req, run_id)
    return json_response(
        {"run_id": run_id, "dry_run": body.dry_run, "status_url": url},
        202,
        headers={"Location": url, "Retry-After": "5"},
    )


@bp.route(route="retention/runs/{run_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def get_retention_run(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """One run: phase while it runs, the plan and outcomes when it ended."""
    run_id = req.route_params.get("run_id", "")
    if not _RUN_ID.fullmatch(run_id):
        return error_response(400, "InvalidInput", "run_id: not a retention run id", field="run_id")
    status = await client.get_status(names.retention_instance_id(run_id))
    if runtime_status(status) is None:
        return error_response(404, "RetentionRunNotFound", f"no retention run {run_id!r}")
    return json_response(_status_body(status))
