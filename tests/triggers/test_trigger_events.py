"""Event Grid triggers: both delivery schemas act alike; no event crashes a trigger.

The rule under test: a trigger fails (the host answers 5xx, Event Grid retries) only where a
retry can succeed; an event that can never succeed is logged with its reason and acknowledged.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter
from trigger_kit import FOREIGN, MARKETPLACE, SUB, TOPIC, FakeClient, run, user_function

from shared import names
from triggers import events

on_marketplace = user_function(events.on_marketplace_image_published)
on_sysprep = user_function(events.on_sysprep_signal)
VM_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-build/providers/Microsoft.Compute/virtualMachines/"
    "vm-b1"
)


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    monkeypatch.setenv("ALLOWED_SUBSCRIPTIONS", SUB)
    monkeypatch.delenv("IMAGE_CATALOGUE_PATH", raising=False)


def decode(body: dict[str, Any]) -> Any:
    """The object the worker hands the function, built by the SDK's own converter."""
    return EventGridEventInConverter.decode(
        meta.Datum(json.dumps(body), "json"), trigger_metadata={}
    )


def grid_event(event_type: str, data: Any, topic: str = TOPIC, subject: str = "s") -> Any:
    return decode(
        {
            "id": "eg-1",
            "eventType": event_type,
            "subject": subject,
            "eventTime": "2026-01-01T00:00:00Z",
            "dataVersion": "1",
            "topic": topic,
            "data": data,
        }
    )


def cloud_event(event_type: str, data: Any, source: str = TOPIC, subject: str = "s") -> Any:
    return decode(
        {
            "specversion": "1.0",
            "id": "ce-1",
            "type": event_type,
            "source": source,
            "subject": subject,
            "time": "2026-01-01T00:00:00Z",
            "datacontenttype": "application/json",
            "data": data,
        }
    )


MAKERS = {"eventgrid": grid_event, "cloudevents": cloud_event}


@pytest.mark.parametrize("schema", sorted(MAKERS))
def test_marketplace_published_queues_the_same_builds_in_either_schema(schema: str) -> None:
    client = FakeClient()
    event = MAKERS[schema](names.EG_MARKETPLACE_IMAGE_PUBLISHED, dict(MARKETPLACE))
    assert run(on_marketplace(event=event, client=client)) is None
    started = client.started()
    assert started, "a build of every catalogue image on that base is requested"
    for orchestrator, instance_id, payload in started:
        assert orchestrator == names.ORCH_BUILD_REQUEST
        assert instance_id.startswith(names.BUILD_REQUEST_PREFIX)
        assert payload["request"]["base_version"] == MARKETPLACE["version"]


def test_both_schemas_give_identical_requests() -> None:
    seen = []
    for make in (grid_event, cloud_event):
        client = FakeClient()
        run(
            on_marketplace(
                event=make(names.EG_MARKETPLACE_IMAGE_PUBLISHED, MARKETPLACE), client=client
            )
        )
        seen.append(client.calls)
    assert seen[0] == seen[1]


@pytest.mark.parametrize("schema", sorted(MAKERS))
def test_sysprep_signal_wakes_the_running_build_in_either_schema(schema: str) -> None:
    build_id = "win11-office-0001"
    client = FakeClient(running={names.build_instance_id(build_id)})
    event = MAKERS[schema](names.EG_SYSPREP_FINISHED, {"build_id": build_id, "vm_id": VM_ID})
    run(on_sysprep(event=event, client=client))
    assert client.raised() == [
        (
            names.build_instance_id(build_id),
            names.EVT_SYSPREP_FINISHED,
            {"build_id": build_id, "vm_id": VM_ID, "event_id": event.id},
        )
    ]


DEEP = json.loads("[" * 500 + "]" * 500)
NEVER_SUCCEEDS = {
    "foreign topic": (
        names.EG_MARKETPLACE_IMAGE_PUBLISHED,
        MARKETPLACE,
        f"/subscriptions/{FOREIGN}",
    ),
    "a type nobody handles": ("Microsoft.Storage.BlobCreated", {"url": "x"}, TOPIC),
    "data not an object": (names.EG_MARKETPLACE_IMAGE_PUBLISHED, "text", TOPIC),
    "no data": (names.EG_MARKETPLACE_IMAGE_PUBLISHED, None, TOPIC),
    "bad field": (names.EG_MARKETPLACE_IMAGE_PUBLISHED, {**MARKETPLACE, "sku": "a b"}, TOPIC),
    "no topic": (names.EG_MARKETPLACE_IMAGE_PUBLISHED, MARKETPLACE, ""),
    "deep data": (names.EG_MARKETPLACE_IMAGE_PUBLISHED, {**MARKETPLACE, "sku": DEEP}, TOPIC),
}


@pytest.mark.parametrize("schema", sorted(MAKERS))
@pytest.mark.parametrize("case", sorted(NEVER_SUCCEEDS))
def test_an_event_that_can_never_succeed_is_logged_and_acknowledged(
    schema: str, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    event_type, data, topic = NEVER_SUCCEEDS[case]
    client = FakeClient()
    event = MAKERS[schema](event_type, data, topic)
    with caplog.at_level(logging.WARNING, "imagefactory.triggers.events"):
        assert run(on_marketplace(event=event, client=client)) is None
        assert run(on_sysprep(event=event, client=client)) is None
    assert client.calls == []
    assert any("ignored event" in r.getMessage() for r in caplog.records)


def test_an_event_object_with_nothing_in_it_is_acknowledged() -> None:
    """Whatever the converter hands over (every field None) is judged, never crashes."""
    for body in ({"specversion": "1.0"}, {}):
        client = FakeClient()
        assert run(on_marketplace(event=decode(body), client=client)) is None
        assert run(on_sysprep(event=decode(body), client=client)) is None
        assert client.calls == []


def test_sysprep_signal_for_a_build_that_is_not_running_is_acknowledged() -> None:
    client = FakeClient()
    event = cloud_event(names.EG_SYSPREP_FINISHED, {"build_id": "b-1", "vm_id": VM_ID})
    assert run(on_sysprep(event=event, client=client)) is None
    assert client.calls == []


def test_normalise_reads_both_schemas_into_one_shape() -> None:
    grid = events.normalise_event(grid_event("T", {"a": 1}, subject="sub/1"))
    cloud = events.normalise_event(cloud_event("T", {"a": 1}, subject="sub/1"))
    assert (grid.type, grid.subject, grid.data, grid.topic) == ("T", "sub/1", {"a": 1}, TOPIC)
    assert (cloud.type, cloud.subject, cloud.data, cloud.topic) == ("T", "sub/1", {"a": 1}, TOPIC)
    assert (grid.schema, cloud.schema) == ("eventgrid", "cloudevents")
    assert (grid.id, cloud.id) == ("eg-1", "ce-1")


# -- the other side of the rule: a retry can succeed, so the trigger fails ------------------------
@pytest.mark.parametrize("schema", sorted(MAKERS))
def test_a_durable_client_failure_fails_the_trigger_so_event_grid_retries(schema: str) -> None:
    client = FakeClient(fail={"start_new": ConnectionError("host unreachable")})
    event = MAKERS[schema](names.EG_MARKETPLACE_IMAGE_PUBLISHED, MARKETPLACE)
    with pytest.raises(ConnectionError):
        run(on_marketplace(event=event, client=client))
    build_id = "b-2"
    client = FakeClient(fail={"get_status": ConnectionError("host unreachable")})
    event = MAKERS[schema](names.EG_SYSPREP_FINISHED, {"build_id": build_id, "vm_id": VM_ID})
    with pytest.raises(ConnectionError):
        run(on_sysprep(event=event, client=client))


def test_a_broken_setting_fails_the_trigger_so_a_fixed_app_gets_the_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID")
    event = cloud_event(names.EG_MARKETPLACE_IMAGE_PUBLISHED, MARKETPLACE)
    with pytest.raises(Exception, match="AZURE_SUBSCRIPTION_ID"):
        run(on_marketplace(event=event, client=FakeClient()))
