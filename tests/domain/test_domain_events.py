"""Events: validation, the subscription fence, the reasons for ignoring, idempotency keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared import names
from shared.domain.events import (
    RESOURCE_ACTION_SUCCESS,
    Accepted,
    Ignored,
    MarketplaceImagePublishedData,
    classify_event,
    marketplace_request_key,
    sysprep_finished_event,
)
from shared.errors import InputError

SUB = "00000000-0000-0000-0000-000000000001"
OTHER = "99999999-0000-0000-0000-000000000009"
ALLOWED = (SUB,)
TOPIC = f"/subscriptions/{SUB}/resourceGroups/eg/providers/Microsoft.EventGrid/topics/factory"
VM_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-image-factory/providers/Microsoft.Compute/"
    "virtualMachines/vm-win11-office-1a2b3c4d"
)
VERSION_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/"
    "win11-office/versions/1.3.0"
)
MARKETPLACE = {
    "publisher": "MicrosoftWindowsDesktop",
    "offer": "windows-11",
    "sku": "win11-25h2-avd",
    "version": "26200.7462.251210",
    "location": "westeurope",
}


def accepted(verdict: Accepted | Ignored) -> Accepted:
    assert isinstance(verdict, Accepted), getattr(verdict, "reason", verdict)
    return verdict


def ignored(verdict: Accepted | Ignored) -> Ignored:
    assert isinstance(verdict, Ignored), verdict
    return verdict


def test_event_type_names_match_the_shared_constants() -> None:
    for event_type in (
        names.EG_MARKETPLACE_IMAGE_PUBLISHED,
        names.EG_SYSPREP_FINISHED,
        names.EG_IMAGE_VERSION_STAGED,
    ):
        assert event_type.startswith("ImageFactory.")


def test_marketplace_event_accepted_with_typed_data() -> None:
    verdict = accepted(
        classify_event(
            names.EG_MARKETPLACE_IMAGE_PUBLISHED, "marketplace/x", MARKETPLACE, ALLOWED, topic=TOPIC
        )
    )
    assert verdict.event_type == names.EG_MARKETPLACE_IMAGE_PUBLISHED
    assert verdict.data == MARKETPLACE
    assert isinstance(verdict.model, MarketplaceImagePublishedData)
    assert verdict.model.sku == "win11-25h2-avd"
    assert verdict.subscriptions == (SUB,)


def test_event_type_case_is_forgiven_and_extra_fields_are_dropped() -> None:
    data = {**MARKETPLACE, "note": "ignored"}
    verdict = accepted(
        classify_event("imagefactory.marketplaceimagepublished", "s", data, ALLOWED, topic=TOPIC)
    )
    assert verdict.event_type == names.EG_MARKETPLACE_IMAGE_PUBLISHED
    assert "note" not in verdict.data


@pytest.mark.parametrize(
    ("event_type", "expected", "reason"),
    [
        (
            "Microsoft.Storage.BlobCreated",
            None,
            "event type 'Microsoft.Storage.BlobCreated' is not handled",
        ),
        ("", None, "event type '' is not handled"),
        (None, None, "event type None is not handled"),
        (
            names.EG_SYSPREP_FINISHED,
            {names.EG_MARKETPLACE_IMAGE_PUBLISHED},
            "(handled: ImageFactory.MarketplaceImagePublished)",
        ),
    ],
)
def test_wrong_type_is_ignored(
    event_type: str | None, expected: set[str] | None, reason: str
) -> None:
    verdict = ignored(
        classify_event(event_type, "s", MARKETPLACE, ALLOWED, topic=TOPIC, expected=expected)
    )
    assert reason in verdict.reason


def test_missing_and_bad_fields_are_named() -> None:
    data = {k: v for k, v in MARKETPLACE.items() if k != "sku"}
    data["version"] = "latest"
    verdict = ignored(
        classify_event(names.EG_MARKETPLACE_IMAGE_PUBLISHED, "s", data, ALLOWED, topic=TOPIC)
    )
    assert verdict.details == (
        "data.sku: Field required",
        "data.version: 'latest' is not a Major.Minor.Patch version",
    )
    assert verdict.reason == "; ".join(verdict.details)
    assert verdict.event_type == names.EG_MARKETPLACE_IMAGE_PUBLISHED


@pytest.mark.parametrize("data", [None, [], "text", 3])
def test_data_must_be_an_object(data: Any) -> None:
    verdict = ignored(
        classify_event(names.EG_MARKETPLACE_IMAGE_PUBLISHED, "s", data, ALLOWED, topic=TOPIC)
    )
    assert verdict.reason == "data: must be a JSON object"


def test_foreign_topic_is_refused() -> None:
    topic = TOPIC.replace(SUB, OTHER)
    verdict = ignored(
        classify_event(names.EG_MARKETPLACE_IMAGE_PUBLISHED, "s", MARKETPLACE, ALLOWED, topic=topic)
    )
    assert (
        verdict.reason == f"outside the allowed subscriptions: topic is in subscription '{OTHER}'"
    )


def test_subscriptions_compare_case_insensitively() -> None:
    upper = TOPIC.replace(SUB, SUB.upper())
    accepted(
        classify_event(names.EG_MARKETPLACE_IMAGE_PUBLISHED, "s", MARKETPLACE, [SUB], topic=upper)
    )


def test_an_event_naming_no_subscription_is_refused() -> None:
    for topic in (None, "", "/emulator"):
        verdict = ignored(
            classify_event(
                names.EG_MARKETPLACE_IMAGE_PUBLISHED, "s", MARKETPLACE, ALLOWED, topic=topic
            )
        )
        assert "names no subscription" in verdict.reason


def test_nothing_allowed_refuses_everything() -> None:
    verdict = ignored(
        classify_event(names.EG_MARKETPLACE_IMAGE_PUBLISHED, "s", MARKETPLACE, [], topic=TOPIC)
    )
    assert "ALLOWED_SUBSCRIPTIONS is empty" in verdict.reason


def test_sysprep_finished_is_fenced_by_its_vm() -> None:
    data = {"build_id": "win11-office-1a2b3c4d", "vm_id": VM_ID}
    verdict = accepted(classify_event(names.EG_SYSPREP_FINISHED, "builds/x", data, ALLOWED))
    assert verdict.data == data
    foreign = {"build_id": "b", "vm_id": VM_ID.replace(SUB, OTHER)}
    refused = ignored(classify_event(names.EG_SYSPREP_FINISHED, "s", foreign, ALLOWED))
    assert refused.reason == (
        f"outside the allowed subscriptions: data.vm_id is in subscription '{OTHER}'"
    )
    mixed = ignored(
        classify_event(
            names.EG_SYSPREP_FINISHED, "s", data, ALLOWED, topic="/subscriptions/" + OTHER
        )
    )
    assert "topic is in subscription" in mixed.reason


def test_sysprep_finished_needs_a_vm_id() -> None:
    bad = {"build_id": "b; drop", "vm_id": VERSION_ID}
    verdict = ignored(classify_event(names.EG_SYSPREP_FINISHED, "s", bad, ALLOWED))
    assert [d.split(":")[0] for d in verdict.details] == ["data.build_id", "data.vm_id"]
    assert "not a Microsoft.Compute/virtualMachines resource id" in verdict.reason


def test_image_version_staged() -> None:
    data = {
        "image": "win11-office",
        "version": "1.3.0",
        "version_id": VERSION_ID,
        "build_id": "win11-office-1a2b3c4d",
        "manifest_hash": "ab" * 32,
    }
    verdict = accepted(classify_event(names.EG_IMAGE_VERSION_STAGED, "s", data, ALLOWED))
    assert verdict.data == data
    without_hash = {k: v for k, v in data.items() if k != "manifest_hash"}
    assert (
        accepted(classify_event(names.EG_IMAGE_VERSION_STAGED, "s", without_hash, ALLOWED)).data[
            "manifest_hash"
        ]
        is None
    )


def resource_action(**changes: Any) -> dict[str, Any]:
    data = {
        "operationName": "Microsoft.Compute/virtualMachines/deallocate/action",
        "resourceUri": VM_ID,
        "subscriptionId": SUB,
        "status": "Succeeded",
        "tenantId": "t",
        "authorization": {"action": "x"},
    }
    data.update(changes)
    return data


def test_resource_action_on_a_build_vm_carries_the_build_id() -> None:
    verdict = accepted(
        classify_event(
            RESOURCE_ACTION_SUCCESS,
            VM_ID,
            resource_action(),
            ALLOWED,
            topic=f"/subscriptions/{SUB}",
        )
    )
    assert verdict.data["operationName"] == "Microsoft.Compute/virtualMachines/deallocate/action"
    assert verdict.data["build_id"] == "win11-office-1a2b3c4d"
    assert verdict.data["vm_name"] == "vm-win11-office-1a2b3c4d"
    assert "tenantId" not in verdict.data


def test_resource_action_on_another_resource_has_no_build_id() -> None:
    uri = VM_ID.replace("vm-win11-office-1a2b3c4d", "avd-host-0")
    verdict = accepted(
        classify_event(RESOURCE_ACTION_SUCCESS, uri, resource_action(resourceUri=uri), ALLOWED)
    )
    assert "build_id" not in verdict.data
    disk = VM_ID.replace("virtualMachines", "disks")
    on_disk = accepted(
        classify_event(RESOURCE_ACTION_SUCCESS, disk, resource_action(resourceUri=disk), ALLOWED)
    )
    assert "vm_name" not in on_disk.data


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"subscriptionId": OTHER}, f"data.subscriptionId is in subscription '{OTHER}'"),
        (
            {"resourceUri": VM_ID.replace(SUB, OTHER)},
            f"data.resourceUri is in subscription '{OTHER}'",
        ),
        ({"resourceUri": "vm-1"}, "data.resourceUri: not an ARM resource id"),
        ({"status": "Failed"}, "data.status: 'Failed', not 'Succeeded'"),
        ({"operationName": ""}, "data.operationName: String should have at least 1 character"),
    ],
)
def test_resource_action_refusals(changes: dict[str, Any], reason: str) -> None:
    verdict = ignored(
        classify_event(RESOURCE_ACTION_SUCCESS, VM_ID, resource_action(**changes), ALLOWED)
    )
    assert reason in verdict.reason


def test_marketplace_request_key() -> None:
    key = marketplace_request_key(
        "MicrosoftWindowsDesktop", "windows-11", "win11-25h2-avd", "1.2.3"
    )
    assert key == "marketplace:microsoftwindowsdesktop:windows-11:win11-25h2-avd:1.2.3"
    assert key == marketplace_request_key(
        "microsoftwindowsdesktop", "WINDOWS-11", "win11-25h2-avd", "1.2.3"
    )
    long_key = marketplace_request_key("p" * 100, "o", "s", "1.2.3")
    assert len(long_key) <= 128
    assert long_key.startswith("marketplace:")
    with pytest.raises(InputError):
        marketplace_request_key("p", "", "s", "1")


def test_sysprep_finished_event_body() -> None:
    when = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    event = sysprep_finished_event("b-1", VM_ID, event_id="sysprep-b-1", event_time=when)
    assert event == {
        "id": "sysprep-b-1",
        "eventType": names.EG_SYSPREP_FINISHED,
        "subject": "builds/b-1",
        "eventTime": "2026-01-05T08:00:00+00:00",
        "dataVersion": "1",
        "data": {"build_id": "b-1", "vm_id": VM_ID},
    }
    # What the factory sends is what it accepts.
    verdict = classify_event(event["eventType"], event["subject"], event["data"], ALLOWED)
    assert isinstance(verdict, Accepted)
    with pytest.raises(InputError):
        sysprep_finished_event("b", VM_ID, event_id="x", event_time=datetime(2026, 1, 5))  # noqa: DTZ001
