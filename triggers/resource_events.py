"""Azure resource events: wake the wait that watches the resource, nothing more.

Azure publishes ``Microsoft.Resources.Resource{Write,Delete,Action}{Success,Failure,Cancel}``
on a subscription's system topic when an operation *completes* (the end of a long-running
operation, not its acceptance), at least once, in no particular order, usually within seconds.
``on_resource_event`` receives them (Event Grid or CloudEvents schema, through the same
normaliser as the other Event Grid functions), keeps only those about resources the app owns
(allowed subscriptions; VMs, their run commands, disks, snapshots, NICs and gallery versions;
the resource groups the catalogue builds and publishes in), and raises ``ResourceChanged`` to
the wait that watches that resource for that kind of operation. The wait's instance id is a
pure function of the resource id and the kind (:func:`shared.names.resource_wait_instance_id`),
so no state maps events to orchestrations.

An event is only a hint: the wait re-reads the resource before it decides, and polls slowly
in case an event is late or lost. So anything that cannot help is acknowledged (2xx) with a
log line: a foreign subscription, type or group, a malformed event, no wait for that resource
(404) or a wait that has ended (410). Only a durable client that cannot reach the host, or a
catalogue that cannot be read, fails the delivery (5xx) so that Event Grid retries it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from shared import names
from shared.app_catalogue import app_catalogue
from shared.settings import load_settings
from triggers.events import IncomingEvent, normalise_event

bp = df.Blueprint()
log = logging.getLogger("imagefactory.triggers.resource_events")

RESOURCE_EVENT_PREFIX = "Microsoft.Resources.Resource"
# Resource types whose operations a build (or its clean-up) waits for, lower case.
OWNED_TYPES = frozenset(
    {
        "microsoft.compute/virtualmachines",
        "microsoft.compute/virtualmachines/runcommands",
        "microsoft.compute/disks",
        "microsoft.compute/snapshots",
        "microsoft.network/networkinterfaces",
        "microsoft.compute/galleries/images/versions",
    }
)


@dataclass(frozen=True)
class ResourceHint:
    """An accepted resource event: which wait to wake and what to tell it."""

    resource_id: str
    kind: str
    instance_id: str
    status: str
    operation: str


@dataclass(frozen=True)
class Ignored:
    reason: str


def _resource_type(segments: list[str]) -> tuple[str, str] | None:
    """``(type, name)`` of an ARM id split on ``/`` (the type lower case), or None."""
    lowered = [s.lower() for s in segments]
    try:
        at = lowered.index("providers")
    except ValueError:
        return None
    rest = segments[at + 1 :]
    if len(rest) < 3 or len(rest) % 2 == 0:
        return None
    # namespace/type/name[/type/name...]: the type is the namespace and every other segment.
    rtype = "/".join([rest[0], *rest[1::2]])
    return rtype.lower(), rest[-1]


def classify_resource_event(
    incoming: IncomingEvent,
    allowed_subscriptions: Iterable[str],
    owned_groups: Iterable[str],
) -> ResourceHint | Ignored:
    """Decide, without I/O, whether an event may wake a wait, and which one."""
    if not incoming.type.startswith(RESOURCE_EVENT_PREFIX):
        return Ignored(f"not a resource event: {incoming.type or 'no type'}")
    data = incoming.data if isinstance(incoming.data, dict) else None
    if data is None:
        return Ignored("no data object")
    resource_id = data.get("resourceUri") or incoming.subject
    operation = data.get("operationName")
    if not isinstance(resource_id, str) or not isinstance(operation, str):
        return Ignored("data.resourceUri or data.operationName missing")
    segments = resource_id.strip("/").split("/")
    if (
        len(segments) < 4
        or segments[0].lower() != "subscriptions"
        or segments[2].lower() != "resourcegroups"
    ):
        return Ignored(f"not a resource id: {resource_id[:200]}")
    subscription, group = segments[1].lower(), segments[3].lower()
    if str(data.get("subscriptionId") or subscription).lower() != subscription:
        return Ignored("data.subscriptionId does not match the resource id")
    if subscription not in {s.lower() for s in allowed_subscriptions}:
        return Ignored(f"subscription {subscription} is not allowed")
    if group not in {g.lower() for g in owned_groups}:
        return Ignored(f"resource group {group} is not one the app builds or publishes in")
    typed = _resource_type(segments)
    if typed is None or typed[0] not in OWNED_TYPES:
        return Ignored(f"resource type {typed[0] if typed else '?'} is not one the app waits for")
    kind = names.resource_event_kind(incoming.type, operation)
    if kind is None:
        return Ignored(f"no operation kind in {incoming.type} / {operation}")
    canonical = "/" + "/".join(segments)
    return ResourceHint(
        resource_id=canonical,
        kind=kind,
        instance_id=names.resource_wait_instance_id(canonical, kind),
        status=str(data.get("status") or ""),
        operation=operation,
    )


def owned_resource_groups() -> set[str]:
    """The groups the app owns: the factory's, and each catalogue image's build and gallery
    group (and the group of a source VM it customises)."""
    settings = load_settings()
    groups = {settings.factory_resource_group}
    for image in app_catalogue(settings).images:
        groups.add(image.build.resource_group)
        groups.add(image.gallery.resource_group)
        source_vm = image.build.source_vm_id
        if source_vm:
            parts = source_vm.strip("/").split("/")
            if len(parts) > 3:
                groups.add(parts[3])
    return {g.lower() for g in groups}


def _gone(error: Exception) -> bool:
    """The durable client's words for 'no such instance' (404) and 'it has ended' (410)."""
    text = str(error)
    return text.startswith("No instance with ID") or " is gone" in text


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def on_resource_event(
    event: func.EventGridEvent, client: df.DurableOrchestrationClient
) -> None:
    """A resource operation completed: tell the wait watching it to look now.

    ``event`` is a ``func.CloudEvent`` for CloudEvents deliveries (see triggers/events.py).
    """
    incoming = normalise_event(event)
    hint = classify_resource_event(
        incoming, load_settings().allowed_subscriptions, owned_resource_groups()
    )
    if isinstance(hint, Ignored):
        log.info("ignored resource event %r (%s): %s", incoming.id, incoming.type, hint.reason)
        return
    payload: dict[str, Any] = {
        "resource_id": hint.resource_id,
        "kind": hint.kind,
        "status": hint.status,
        "operation": hint.operation,
        "event_id": incoming.id,
    }
    try:
        await client.raise_event(hint.instance_id, names.EVT_RESOURCE_CHANGED, payload)
    except Exception as error:  # the SDK raises plain Exception for every non-202 answer
        if not _gone(error):
            raise  # the host could not take it: let Event Grid retry
        log.info(
            "resource event %r for %s (%s): no wait is watching (%s)",
            incoming.id,
            hint.resource_id,
            hint.kind,
            error,
        )
        return
    log.info("resource event %r raised to %s", incoming.id, hint.instance_id)
