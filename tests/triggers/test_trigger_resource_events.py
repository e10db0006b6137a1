"""``on_resource_event``: Azure's resource events wake the wait watching that resource.

Both delivery schemas act alike; only events about resources the app owns (allowed
subscription, a type it waits for, a group the catalogue builds or publishes in) reach an
orchestration, and always the one whose id follows from the resource and the kind of operation.
No wait to wake is acknowledged (2xx), a host that cannot take the event is a 5xx (retry).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter
from trigger_kit import FOREIGN, SUB, FakeClient, run, user_function

from shared import names
from triggers import resource_events
from triggers.events import normalise_event

on_resource_event = user_function(resource_events.on_resource_event)
BUILD_RG = "rg-image-factory"  # catalogue/images.yaml: build.resource_group
GALLERY_RG = "rg-avd-images"  # and gallery.resource_group
VM = (
    f"/subscriptions/{SUB}/resourceGroups/{BUILD_RG}/providers/Microsoft.Compute/"
    "virtualMachines/vm-a"
)
RUN = f"{VM}/runCommands/step-01"
VERSION = (
    f"/subscriptions/{SUB}/resourceGroups/{GALLERY_RG}/providers/Microsoft.Compute/galleries/g/"
    "images/win11/versions/1.0.3"
)


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    monkeypatch.setenv("ALLOWED_SUBSCRIPTIONS", SUB)
    monkeypatch.delenv("IMAGE_CATALOGUE_PATH", raising=False)


def _data(resource: str, operation: str, status: str = "Succeeded") -> dict[str, Any]:
    sub = resource.split("/")[2]
    return {
        "authorization": {"scope": resource, "action": operation, "evidence": {}},
        "claims": {},
        "correlationId": "c-1",
        "resourceProvider": "Microsoft.Compute",
        "resourceUri": resource,
        "operationName": operation,
        "status": status,
        "subscriptionId": sub,
        "tenantId": "t",
    }


def resource_event(
    event_type: str, resource: str, operation: str, *, schema: str = "eventgrid", **extra: Any
) -> Any:
    """What the worker hands the function, built by the SDK's own converter."""
    sub = resource.split("/")[2]
    data = {**_data(resource, operation), **extra}
    if schema == "cloudevents":
        body: dict[str, Any] = {
            "specversion": "1.0",
            "id": "ce-1",
            "type": event_type,
            "source": f"/subscriptions/{sub}",
            "subject": resource,
            "time": "2026-01-01T00:00:00Z",
            "data": data,
        }
    else:
        body = {
            "id": "eg-1",
            "eventType": event_type,
            "subject": resource,
            "eventTime": "2026-01-01T00:00:00Z",
            "dataVersion": "2",
            "metadataVersion": "1",
            "topic": f"/subscriptions/{sub}",
            "data": data,
        }
    return EventGridEventInConverter.decode(
        meta.Datum(json.dumps(body), "json"), trigger_metadata={}
    )


WRITE = "Microsoft.Resources.ResourceWriteSuccess"
CASES = [
    (WRITE, VM, "Microsoft.Compute/virtualMachines/write", VM, "write"),
    (WRITE, RUN, "Microsoft.Compute/virtualMachines/runCommands/write", RUN, "write"),
    (
        "Microsoft.Resources.ResourceActionSuccess",
        VM,
        "Microsoft.Compute/virtualMachines/deallocate/action",
        VM,
        "deallocate",
    ),
    (
        "Microsoft.Resources.ResourceDeleteSuccess",
        VM,
        "Microsoft.Compute/virtualMachines/delete",
        VM,
        "delete",
    ),
    (
        "Microsoft.Resources.ResourceWriteFailure",
        VERSION,
        "Microsoft.Compute/galleries/images/versions/write",
        VERSION,
        "write",
    ),
]


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
@pytest.mark.parametrize(("event_type", "resource", "operation", "target", "kind"), CASES)
def test_an_owned_resource_event_wakes_the_wait_named_after_resource_and_kind(
    schema: str, event_type: str, resource: str, operation: str, target: str, kind: str
) -> None:
    client = FakeClient()
    event = resource_event(event_type, resource, operation, schema=schema)
    assert run(on_resource_event(event=event, client=client)) is None
    raised = client.raised()
    assert len(raised) == 1
    instance, name, payload = raised[0]
    assert instance == names.resource_wait_instance_id(target, kind)
    assert name == names.EVT_RESOURCE_CHANGED
    assert payload["kind"] == kind
    assert payload["resource_id"].lower() == target.lower()


def test_the_wait_id_ignores_the_case_of_the_resource_id() -> None:
    lower = names.resource_wait_instance_id(VM.lower(), "write")
    assert lower == names.resource_wait_instance_id(VM, "write")
    assert lower != names.resource_wait_instance_id(VM, "delete")
    assert lower != names.resource_wait_instance_id(VM + "x", "write")
    assert "/" not in lower
    assert len(lower) <= 100


FOREIGN_VM = VM.replace(SUB, FOREIGN)
OTHER_RG_VM = VM.replace(BUILD_RG, "rg-somebody-else")
STORAGE = (
    f"/subscriptions/{SUB}/resourceGroups/{BUILD_RG}/providers/Microsoft.Storage/"
    "storageAccounts/st1"
)


@pytest.mark.parametrize(
    ("event_type", "resource", "operation", "why"),
    [
        (WRITE, FOREIGN_VM, "Microsoft.Compute/virtualMachines/write", "not allowed"),
        (WRITE, OTHER_RG_VM, "Microsoft.Compute/virtualMachines/write", "resource group"),
        (WRITE, STORAGE, "Microsoft.Storage/storageAccounts/write", "resource type"),
        ("ImageFactory.SysprepFinished", VM, "x", "not a resource event"),
        (WRITE, "/not/an/arm/id", "Microsoft.Compute/virtualMachines/write", "not a resource id"),
    ],
)
def test_events_about_what_the_app_does_not_own_are_acknowledged_and_ignored(
    event_type: str, resource: str, operation: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = FakeClient()
    caplog.set_level("INFO", logger="imagefactory.triggers.resource_events")
    event = resource_event(event_type, resource, operation)
    assert run(on_resource_event(event=event, client=client)) is None
    assert client.raised() == []
    assert why in caplog.text


def test_a_subscription_id_that_contradicts_the_resource_id_is_ignored() -> None:
    client = FakeClient()
    event = resource_event(
        WRITE, VM, "Microsoft.Compute/virtualMachines/write", subscriptionId=FOREIGN
    )
    assert run(on_resource_event(event=event, client=client)) is None
    assert client.raised() == []


@pytest.mark.parametrize(
    "answer",
    [
        "No instance with ID rwait:write:vm-a:0 found.",
        "Instance with ID rwait:write:vm-a:0 is gone: either completed or failed",
    ],
)
def test_no_wait_to_wake_is_acknowledged(answer: str) -> None:
    client = FakeClient(fail={"raise_event": Exception(answer)})
    event = resource_event(WRITE, VM, "Microsoft.Compute/virtualMachines/write")
    assert run(on_resource_event(event=event, client=client)) is None


def test_a_host_that_cannot_take_the_event_fails_the_delivery_so_event_grid_retries() -> None:
    client = FakeClient(fail={"raise_event": ConnectionError("host unreachable")})
    event = resource_event(WRITE, VM, "Microsoft.Compute/virtualMachines/write")
    with pytest.raises(ConnectionError):
        run(on_resource_event(event=event, client=client))


def test_malformed_data_is_ignored_without_raising() -> None:
    incoming = normalise_event(object())
    verdict = resource_events.classify_resource_event(incoming, [SUB], [BUILD_RG])
    assert isinstance(verdict, resource_events.Ignored)


def test_owned_groups_are_the_catalogues_build_and_gallery_groups() -> None:
    groups = resource_events.owned_resource_groups()
    assert {BUILD_RG, GALLERY_RG} <= groups


@pytest.mark.parametrize(
    ("event_type", "operation", "kind"),
    [
        ("Microsoft.Resources.ResourceWriteSuccess", "Microsoft.Compute/disks/write", "write"),
        ("Microsoft.Resources.ResourceWriteCancel", "Microsoft.Compute/disks/write", "write"),
        ("Microsoft.Resources.ResourceDeleteFailure", "Microsoft.Compute/disks/delete", "delete"),
        (
            "Microsoft.Resources.ResourceActionFailure",
            "Microsoft.Compute/virtualMachines/start/action",
            "start",
        ),
        ("Microsoft.Resources.ResourceActionSuccess", "Microsoft.Compute/nonsense", None),
        ("Microsoft.Storage.BlobCreated", "x/write", None),
    ],
)
def test_event_kinds(event_type: str, operation: str, kind: str | None) -> None:
    assert names.resource_event_kind(event_type, operation) == kind
