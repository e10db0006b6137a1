"""A custom Event Grid topic: the app publishes its ImageFactory.* events here.

``POST /_emulator/eventgrid/topics/{topic}/api/events`` accepts what
``azure.eventgrid.EventGridPublisherClient`` sends (an array of Event Grid schema events, or
CloudEvents) and fans each event out to the emulator's subscribers, as Event Grid does. Each
event is validated first: a malformed one refuses the whole batch with a 400 naming the field.

Like a topic with local (key) authentication disabled, it takes only Entra ID tokens: a publish
without ``Authorization: Bearer <token>`` for ``https://eventgrid.azure.net``, or with a token
this emulator did not issue (IMDS, see emulator/identity.py) or that expired, is refused with
401 and nothing is delivered. (Azure would also check the caller holds *EventGrid Data Sender*
on the topic; the emulator does not model role assignments.)
"""

from __future__ import annotations

from typing import Any

from emulator.arm import ArmError, Request, Response
from emulator.core import Emulator
from emulator.identity import bearer_claims

AUDIENCE = "https://eventgrid.azure.net"

_REQUIRED = ("id", "eventType", "subject", "data", "dataVersion")
_CLOUD_REQUIRED = ("id", "type", "source", "specversion")


def _check(events: Any) -> list[tuple[str, str, dict[str, Any], str]]:
    if isinstance(events, dict):
        events = [events]
    if not isinstance(events, list) or not events:
        raise ArmError(400, "InvalidRequestContent", "body: expected a non-empty array of events")
    out: list[tuple[str, str, dict[str, Any], str]] = []
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            raise ArmError(400, "InvalidRequestContent", f"[{i}]: an event must be an object")
        cloud = "specversion" in event
        for key in _CLOUD_REQUIRED if cloud else _REQUIRED:
            if key not in event or event[key] in (None, ""):
                if key == "data" and key in event:
                    continue
                raise ArmError(400, "InvalidRequestContent", f"[{i}].{key}: required")
        data = event.get("data")
        if data is not None and not isinstance(data, dict):
            raise ArmError(400, "InvalidRequestContent", f"[{i}].data: must be an object")
        if cloud:
            out.append((event["type"], str(event.get("subject") or ""), data or {}, "1.0"))
        else:
            out.append((event["eventType"], event["subject"], data or {}, event["dataVersion"]))
    return out


def register(emu: Emulator) -> None:
    @emu.admin_route("POST", "/_emulator/eventgrid/topics/{topic}/api/events")
    def publish(req: Request) -> Response:
        bearer_claims(emu, req.headers, AUDIENCE)
        topic_name = req.params["topic"]
        sub = emu.scenario.default_subscription
        topic = (
            f"/subscriptions/{sub}/resourceGroups/eventgrid/providers/"
            f"Microsoft.EventGrid/topics/{topic_name}"
        )
        for event_type, subject, data, version in _check(req.body):
            emu.events.publish(event_type, subject, data, topic=topic, data_version=version)
        return Response(200, None)
