"""Event Grid: marketplace images published, sysprep finished.

Every event comes from outside, so each is validated before it acts: its type, its fields and
the subscription it is about. A malformed or foreign event is logged with its reason and
ignored; it never starts a build. Delivery is at-least-once, so every action here is idempotent
(the build queue drops repeated keys; raising "sysprep finished" twice is harmless).
"""

from __future__ import annotations

import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from shared import names
from shared.app_catalogue import app_catalogue
from shared.domain.events import Accepted, classify_event, marketplace_request_key
from shared.settings import load_settings
from triggers._common import RUNNING, request_build, runtime_status

bp = df.Blueprint()
log = logging.getLogger("imagefactory.triggers.events")


def _event_fields(event: func.EventGridEvent) -> tuple[str, str, Any, str]:
    try:
        data = event.get_json()
    except ValueError:
        data = None
    return event.event_type or "", event.subject or "", data, event.topic or ""


def _classify(event: func.EventGridEvent, expected: set[str]) -> Accepted | None:
    event_type, subject, data, topic = _event_fields(event)
    settings = load_settings()
    verdict = classify_event(
        event_type, subject, data, settings.allowed_subscriptions, topic=topic, expected=expected
    )
    if not isinstance(verdict, Accepted):
        log.warning("ignored event %s (%s): %s", event.id, event_type, verdict.reason)
        return None
    return verdict


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def on_marketplace_image_published(
    event: func.EventGridEvent, client: df.DurableOrchestrationClient
) -> None:
    """A newer marketplace image: queue a build of every catalogue image built on that base."""
    accepted = _classify(event, {names.EG_MARKETPLACE_IMAGE_PUBLISHED})
    if accepted is None:
        return
    base = accepted.data
    images = app_catalogue().images_on_marketplace_base(
        base["publisher"], base["offer"], base["sku"]
    )
    if not images:
        log.info(
            "no catalogue image is built on %s/%s/%s", base["publisher"], base["offer"], base["sku"]
        )
    for image in images:
        key = marketplace_request_key(
            base["publisher"], base["offer"], base["sku"], base["version"]
        )
        await request_build(
            client,
            image.name,
            {"key": key, "reason": "marketplace image published", "base_version": base["version"]},
        )


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def on_sysprep_signal(
    event: func.EventGridEvent, client: df.DurableOrchestrationClient
) -> None:
    """Sysprep finished on a build VM: wake the build that waits for it.

    The build checks the VM id it carries and the VM's state before it acts, so this trigger
    only validates the event and forwards it. (A guest-initiated shutdown at the end of sysprep
    emits no ARM event, so resource events are not a sysprep signal.)
    """
    accepted = _classify(event, {names.EG_SYSPREP_FINISHED})
    if accepted is None:
        return
    build_id = str(accepted.data["build_id"])
    instance_id = names.build_instance_id(build_id)
    status = await client.get_status(instance_id)
    if runtime_status(status) not in RUNNING:
        log.warning("sysprep signal for build %s, which is not running", build_id)
        return
    await client.raise_event(
        instance_id,
        names.EVT_SYSPREP_FINISHED,
        {"build_id": build_id, "vm_id": accepted.data["vm_id"], "event_id": event.id},
    )
