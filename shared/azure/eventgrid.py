"""Event Grid gateway: publish the app's custom ``ImageFactory.*`` events to its topic.

Uses ``EventGridPublisherClient`` with a token credential (Entra ID, role *EventGrid Data
Sender*; never a key) from :func:`shared.azure.clients.credential`. Endpoint and CA bundle come
from settings at call time. SDK quirk (azure-eventgrid 4.22): for a basic topic the client drops
transport keywords given to its constructor, so ``connection_verify`` and ``retry_total`` are
passed with each ``send``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from azure.eventgrid import EventGridEvent, EventGridPublisherClient

from shared.azure.clients import credential
from shared.azure.errors import azure_call
from shared.settings import Settings
from shared.telemetry import record_event

log = logging.getLogger("imagefactory.azure.eventgrid")

DATA_VERSION = "1.0"


def publish(
    settings: Settings,
    event_type: str,
    subject: str,
    data: Mapping[str, Any],
    *,
    event_id: str | None = None,
) -> bool:
    """Publish one Event Grid schema event; ``False`` (logged) when no topic is configured."""
    endpoint = settings.eventgrid_topic_endpoint
    if not endpoint:
        record_event(event_type, {**data, "subject": subject})
        log.warning(
            "EVENTGRID_TOPIC_ENDPOINT is not set: %s for %s was not published", event_type, subject
        )
        return False
    event = EventGridEvent(
        subject=subject,
        event_type=event_type,
        data=dict(data),
        data_version=DATA_VERSION,
        id=event_id or str(uuid.uuid4()),
        event_time=datetime.now(UTC),
    )
    call_options: dict[str, Any] = {"retry_total": settings.arm_max_retries}
    if settings.ca_bundle:
        call_options["connection_verify"] = settings.ca_bundle
    client = EventGridPublisherClient(endpoint, credential(settings))
    with client, azure_call(f"publish {event_type} for {subject}"):
        client.send(event, **call_options)
    record_event(event_type, {**data, "subject": subject})  # metrics once it is out
    return True
