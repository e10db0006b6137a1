"""Every Azure-calling activity maps throttling and failed provisioning to the error model."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from shared import names
from shared.errors import TemporaryError
from tests.activities.conftest import (
    FACTORY_RG,
    activity,
    add_fault,
    plan_for,
    point_app_at,
    wait_for,
)
from tests.emulator.conftest import EmulatorEnv, EmulatorFactory

BUILD = "win11-office-feedf00d"


def _ids(sub: str) -> dict[str, str]:
    base = f"/subscriptions/{sub}/resourceGroups/{FACTORY_RG}/providers/Microsoft.Compute"
    gallery = (
        f"/subscriptions/{sub}/resourceGroups/rg-gallery/providers/Microsoft.Compute/"
        "galleries/galFactory/images/win11-office/versions/1.0.0"
    )
    return {
        "vm": f"{base}/virtualMachines/vm-{BUILD}",
        "disk": f"{base}/disks/osdisk-{BUILD}",
        "snapshot": f"{base}/snapshots/snap-{BUILD}",
        "version": gallery,
    }


Payload = Callable[[str], dict[str, Any]]

CASES: list[tuple[str, Payload]] = [
    (names.ACT_RESOLVE_BUILD_PLAN, lambda sub: {"image": "win11-office", "build_id": BUILD}),
    (names.ACT_ENSURE_GALLERY_IMAGE, lambda sub: {"plan": plan_for(sub, BUILD)}),
    (names.ACT_ALLOCATE_VERSION, lambda sub: {"plan": plan_for(sub, BUILD), "build_id": BUILD}),
    (names.ACT_CREATE_BUILD_VM, lambda sub: {"plan": plan_for(sub, BUILD), "build_id": BUILD}),
    (names.ACT_GET_VM_STATE, lambda sub: {"vm_id": _ids(sub)["vm"]}),
    (
        names.ACT_START_RUN_COMMAND,
        lambda sub: {"vm_id": _ids(sub)["vm"], "name": "step-01", "script": ["Write-Output x"]},
    ),
    (names.ACT_GET_RUN_COMMAND, lambda sub: {"vm_id": _ids(sub)["vm"], "name": "step-01"}),
    (
        names.ACT_CREATE_SNAPSHOT,
        lambda sub: {
            "plan": plan_for(sub, BUILD),
            "build_id": BUILD,
            "source_disk_id": _ids(sub)["disk"],
            "name": f"snap-{BUILD}",
        },
    ),
    (
        names.ACT_CREATE_DISK_FROM_SNAPSHOT,
        lambda sub: {
            "plan": plan_for(sub, BUILD),
            "build_id": BUILD,
            "snapshot_id": _ids(sub)["snapshot"],
            "name": f"clonedisk-{BUILD}",
        },
    ),
    (names.ACT_GET_RESOURCE_STATE, lambda sub: {"resource_id": _ids(sub)["disk"]}),
    (names.ACT_DEALLOCATE_VM, lambda sub: {"vm_id": _ids(sub)["vm"]}),
    (names.ACT_GENERALIZE_VM, lambda sub: {"vm_id": _ids(sub)["vm"]}),
    (
        names.ACT_CREATE_IMAGE_VERSION,
        lambda sub: {
            "plan": plan_for(sub, BUILD),
            "build_id": BUILD,
            "version": "1.0.0",
            "source_vm_id": _ids(sub)["vm"],
            "manifest": {},
        },
    ),
    (names.ACT_GET_IMAGE_VERSION, lambda sub: {"version_id": _ids(sub)["version"]}),
    (names.ACT_LIST_BUILD_RESOURCES, lambda sub: {"build_id": BUILD}),
    (names.ACT_DELETE_RESOURCE, lambda sub: {"resource_id": _ids(sub)["snapshot"]}),
]


@pytest.mark.parametrize(("name", "payload"), CASES, ids=[c[0] for c in CASES])
def test_throttling_is_temporary_with_retry_after(
    emulator_factory: EmulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    payload: Payload,
) -> None:
    env = emulator_factory(retry_after="seconds")
    point_app_at(env, monkeypatch, IMAGE_CATALOGUE_PATH="catalogue/images.yaml")
    status, _ = env.admin(
        "POST", "faults", {"type": "http", "status": 429, "retry_after": 21, "count": 1}
    )
    assert status == 201
    with pytest.raises(TemporaryError) as caught:
        activity(name)(payload(env.subscription))
    assert caught.value.retry_after == 21
    assert "429" in str(caught.value)
    _, rules = env.admin("GET", "faults")
    assert rules["value"][0]["fired"] == 1


def test_publish_event_to_an_unreachable_topic_is_temporary(
    emulator_env: EmulatorEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    point_app_at(
        emulator_env, monkeypatch, EVENTGRID_TOPIC_ENDPOINT=f"https://127.0.0.1:{port}/api/events"
    )
    with pytest.raises(TemporaryError) as caught:
        activity(names.ACT_PUBLISH_EVENT)({"event_type": "ImageFactory.X", "subject": "s"})
    assert "did not answer" in str(caught.value)


def test_failed_vm_provisioning_is_reported_and_the_vm_can_be_recreated(
    app_env: EmulatorEnv,
) -> None:
    plan = plan_for(app_env.subscription, BUILD)
    add_fault(
        app_env, type="flag", kind="vm_provisioning_failure", match={"vm": f"vm-{BUILD}"}, count=1
    )
    vm_id = activity(names.ACT_CREATE_BUILD_VM)({"plan": plan, "build_id": BUILD})["vm_id"]
    failed = wait_for(
        lambda: activity(names.ACT_GET_VM_STATE)({"vm_id": vm_id}),
        lambda s: s["provisioning_state"] == "Failed",
    )
    assert failed["error"]
    assert "ProvisioningState/failed" in failed["error"]
    # What the orchestrator does: delete, wait until gone, create again under the same name.
    assert activity(names.ACT_DELETE_RESOURCE)({"resource_id": vm_id}) == {"deleted": True}
    wait_for(
        lambda: activity(names.ACT_GET_RESOURCE_STATE)({"resource_id": vm_id}),
        lambda s: not s["exists"],
    )
    again = activity(names.ACT_CREATE_BUILD_VM)({"plan": plan, "build_id": BUILD})["vm_id"]
    assert again == vm_id
    wait_for(
        lambda: activity(names.ACT_GET_VM_STATE)({"vm_id": vm_id}),
        lambda s: s["provisioning_state"] == "Succeeded",
    )
