"""Retention: the daily timer and the HTTP API (plan preview, runs, run status).

``retention_timer`` starts a run on the NCRONTAB schedule in ``RETENTION_SCHEDULE`` (default
daily at 03:00 UTC). ``GET /api/retention/plan[?image=NAME]`` runs a dry run and answers its
plan (200 when it finishes within a few seconds, else 202 with the status URL);
``POST /api/retention/runs`` with ``{"dry_run": bool, "images": [names]}`` starts a run and
answers 202 with the status URL; ``GET /api/retention/runs/{run_id}`` is that status. Before a
run starts, the trigger lists the running orchestrations and the gallery images their inputs
and statuses name (a version a running orchestration works on is in use). One applying run at
a time: a second is refused with 409 (the timer skips). docs/retention.md. The routes are
declared through ``triggers/_api.py``: the plan and run status need Reader, a run Operator.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus
from pydantic import Field, StrictBool

from shared import names
from shared.azure.retention_gateway import orchestration_refs
from shared.errors import InputError, SettingsError
from shared.settings import (
    DEFAULT_RETENTION_SCHEDULE,
    load_settings,
    refuse_without_settings,
    retention_schedule,
)
from triggers._api import (
    Answer,
    ApiError,
    Body,
    Call,
    Reply,
    Role,
    readable_catalogue,
    route,
    unavailable,
)
from triggers._common import RUNNING, runtime_status

bp = df.Blueprint()
log = logging.getLogger("imagefactory.triggers.retention")

APPLYING_PREFIX = names.retention_instance_id("run-")
PLAN_PREFIX = names.retention_instance_id("plan-")
PLAN_WAIT_SECONDS = 20.0
RUN_ID_PATTERN = r"^(?:run|plan)-[a-z0-9]{12}$"


def _schedule() -> str:
    """The timer's schedule (a binding property, so read when the app is indexed)."""
    try:
        return retention_schedule()
    except InputError as error:
        log.error("%s: the retention timer uses %s instead", error, DEFAULT_RETENTION_SCHEDULE)
        return DEFAULT_RETENTION_SCHEDULE


class RunBody(Body):
    """What a caller may ask of a retention run."""

    dry_run: StrictBool = False
    images: list[str] | None = Field(default=None, min_length=1, max_length=100)


def _check_images(images: list[str] | None, field: str) -> None:
    """InputError naming ``field[i]`` for each name not in the catalogue."""
    if images is None:
        return
    known = set(readable_catalogue().names())
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


def _input(error: InputError) -> ApiError:
    """Unknown image names are 404 (as everywhere in the API), naming each; the rest 400."""
    if error.errors and all("is not a catalogue image" in e.reason for e in error.errors):
        details = [{"field": e.path, "reason": e.reason} for e in error.errors]
        message = "; ".join(str(e) for e in error.errors)
        return ApiError(404, "ImageNotFound", message, field=details[0]["field"], details=details)
    return ApiError.from_input(error)


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


class PlanQuery(Body):
    image: str | None = Field(default=None, max_length=64, description="only this image")


class RunStarted(Answer):
    run_id: str
    status_url: str
    dry_run: bool | None = None


class RunStatus(Answer):
    instanceId: str | None  # noqa: N815 - the durable status's own names (kept shape)
    runtimeStatus: str | None  # noqa: N815
    customStatus: Any = None  # noqa: N815
    output: Any = None


async def _start(call: Call, *, dry_run: bool, images: list[str] | None) -> str:
    try:
        return await start_run(call.client, dry_run=dry_run, images=images)
    except Exception as exc:
        raise unavailable("StoreUnavailable", f"the retention run could not start: {exc}") from None


@route(
    bp,
    "GET",
    "retention/plan",
    role=Role.READER,
    tag="retention",
    summary="A dry run's plan: per version the decision, its reason, the storage it frees",
    query=PlanQuery,
    also=(202,),
    errors=(404,),
)
async def retention_plan(call: Call) -> Reply:
    """A dry run's plan (200 when it ends within seconds, else 202 with the status URL)."""
    image = call.query.image
    extra = sorted(set(call.req.params) - {"image", "code"})
    try:
        if extra:
            raise InputError.single(extra[0], "unknown query parameter (only 'image')")
        if image is not None:
            _check_images([image], "image")
    except SettingsError:
        raise  # the operator's problem: the route answers 503 AppMisconfigured
    except InputError as error:
        raise _input(error) from None
    run_id = await _start(call, dry_run=True, images=[image] if image else None)
    instance = names.retention_instance_id(run_id)
    url = call.url(f"retention/runs/{run_id}")
    deadline = time.monotonic() + PLAN_WAIT_SECONDS
    while time.monotonic() < deadline:
        status = await call.client.get_status(instance)
        state = runtime_status(status)
        if state == "Completed":
            return Reply(status.output, 200)
        if state in {"Failed", "Terminated", "Canceled"}:
            raise ApiError(500, "RetentionPlanFailed", f"the dry run ended {state}", status_url=url)
        await asyncio.sleep(0.2)
    return call.accepted({"run_id": run_id}, f"retention/runs/{run_id}", retry_after=5)


@route(
    bp,
    "POST",
    "retention/runs",
    role=Role.OPERATOR,
    tag="retention",
    summary="Start a retention run (dry_run changes nothing)",
    request=RunBody,
    response=RunStarted,
    status=202,
    errors=(404, 409),
)
async def start_retention_run(call: Call) -> Reply:
    """Start a retention run (``dry_run`` changes nothing); 202 with its status URL."""
    body: RunBody = call.body
    try:
        _check_images(body.images, "images")
    except SettingsError:
        raise  # the operator's problem: the route answers 503 AppMisconfigured
    except InputError as error:
        raise _input(error) from None
    if not body.dry_run:
        running = await _applying_run(call.client)
        if running is not None:
            raise ApiError(
                409,
                "RetentionRunning",
                f"retention run {running} is still applying; try again when it has ended",
                instance_id=running,
            )
    run_id = await _start(call, dry_run=body.dry_run, images=body.images)
    return call.accepted(
        {"run_id": run_id, "dry_run": body.dry_run}, f"retention/runs/{run_id}", retry_after=5
    )


@route(
    bp,
    "GET",
    "retention/runs/{run_id}",
    role=Role.READER,
    tag="retention",
    summary="One run: phase while it runs, the plan and outcomes when it ended",
    response=RunStatus,
    params={"run_id": RUN_ID_PATTERN},
    errors=(404,),
)
async def get_retention_run(call: Call) -> dict[str, Any]:
    """One run: phase while it runs, the plan and outcomes when it ended."""
    run_id = call.params["run_id"]
    status = await call.client.get_status(names.retention_instance_id(run_id))
    if runtime_status(status) is None:
        raise ApiError(404, "RetentionRunNotFound", f"no retention run {run_id!r}", field="run_id")
    return _status_body(status)
