"""Event Grid: marketplace images published, sysprep finished.

Every event comes from outside, so each is validated before it acts: its type, its fields and
the subscription it is about. Delivery is at-least-once, so every action here is idempotent
(the build queue drops repeated keys; raising "sysprep finished" twice is harmless).

Both delivery schemas arrive: the worker hands a function ``func.EventGridEvent`` (``event_type``,
``topic``, ``subject``, ``get_json()``) for Event Grid schema deliveries and ``func.CloudEvent``
(``type``, ``source``, ``subject``, ``get_json()``) for CloudEvents ones, whatever the parameter's
annotation says. :func:`normalise_event` reads either (and anything else) into one
:class:`IncomingEvent` without raising; every function judges that, never the raw object.

The rule for what a function may fail with (a raised exception is a 5xx from the host, and a 5xx
makes Event Grid retry with back-off for up to 24 hours):

* a 5xx only where a retry can succeed: the durable client cannot reach the host, a setting or the
  catalogue is missing or broken (the operators fix it, the retry then works);
* an event that can never succeed (unknown or foreign type, malformed data, a subscription not
  allowed, a build that is no longer running, no catalogue image on that base) is logged with its
  reason and acknowledged (the function returns normally: 2xx), so Event Grid does not retry it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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


@dataclass(frozen=True)
class IncomingEvent:
    """One delivered event in one shape, whichever schema it came in (``""`` when absent)."""

    schema: str  # "eventgrid" or "cloudevents"
    id: str
    type: str
    subject: str
    topic: str  # Event Grid ``topic``; CloudEvents ``source`` (the topic or resource scope)
    data: Any


def _text(event: object, name: str) -> str:
    value = getattr(event, name, None)
    return value if isinstance(value, str) else ""


def normalise_event(event: object) -> IncomingEvent:
    """Read a ``func.EventGridEvent`` or ``func.CloudEvent`` (or anything else) without raising."""
    try:
        data = event.get_json()  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        data = None
    if isinstance(event, func.CloudEvent) or hasattr(event, "specversion"):
        return IncomingEvent(
            "cloudevents",
            _text(event, "id"),
            _text(event, "type"),
            _text(event, "subject"),
            _text(event, "source"),
            data,
        )
    return IncomingEvent(
        "eventgrid",
        _text(event, "id"),
        _text(event, "event_type"),
        _text(event, "subject"),
        _text(event, "topic"),
        data,
    )


def _classify(incoming: IncomingEvent, expected: set[str]) -> Accepted | None:
    """The accepted event, or None (logged with its reason): an event that can never succeed."""
    settings = load_settings()
    verdict = classify_event(
        incoming.type,
        incoming.subject,
        incoming.data,
        settings.allowed_subscriptions,
        topic=incoming.topic,
        expected=expected,
    )
    if not isinstance(verdict, Accepted):
        log.warning(
            "ignored event %r (%s, %s schema): %s",
            incoming.id,
            incoming.type,
            incoming.schema,
            verdict.reason,
        )
        return None
    return verdict


def accept_event(event: object, expected: set[str]) -> Accepted | None:
    """Any delivery (Event Grid schema or CloudEvent) judged as :func:`_classify` does."""
    return _classify(normalise_event(event), expected)


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def on_marketplace_image_published(
    event: func.EventGridEvent, client: df.DurableOrchestrationClient
) -> None:
    """A newer marketplace image: queue a build of every catalogue image built on that base.

    ``event`` is a ``func.CloudEvent`` for CloudEvents deliveries (the annotation names one type
    because the worker accepts only a single class there). Never-succeeding events are
    acknowledged; a failing durable client or catalogue raises so Event Grid retries.
    """
    accepted = _classify(normalise_event(event), {names.EG_MARKETPLACE_IMAGE_PUBLISHED})
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
    emits no ARM event, so resource events are not a sysprep signal.) Either schema, same rule
    as above: a signal for a build that is not running is acknowledged, a durable client failure
    raises.
    """
    incoming = normalise_event(event)
    accepted = _classify(incoming, {names.EG_SYSPREP_FINISHED})
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
        {"build_id": build_id, "vm_id": accepted.data["vm_id"], "event_id": incoming.id},
    )
