"""Disk copies, the attach path, listing a build's resources and deleting them."""

from __future__ import annotations

from typing import Any

import pytest

import emulator
from emulator.compute import seed_vm
from shared import names
from shared.azure import compute
from shared.errors import ConflictError, InputError, TemporaryError
from shared.settings import load_settings
from tests.activities.conftest import (
    FACTORY_RG,
    WIN11,
    WIN11_LATEST,
    activity,
    add_fault,
    plan_for,
    point_app_at,
    wait_for,
)
from tests.emulator.conftest import EmulatorEnv, EmulatorFactory

BUILD = "win11-dev-0badcafe"


def _ready(resource_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: activity(names.ACT_GET_RESOURCE_STATE)({"resource_id": resource_id}),
        lambda s: s["exists"] and s["provisioning_state"] == "Succeeded",
    )


def _gone(resource_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: activity(names.ACT_GET_RESOURCE_STATE)({"resource_id": resource_id}),
        lambda s: not s["exists"],
    )


def _running_vm(plan: dict[str, Any], **extra: Any) -> str:
    vm_id = str(
        activity(names.ACT_CREATE_BUILD_VM)({"plan": plan, "build_id": BUILD, **extra})["vm_id"]
    )
    wait_for(
        lambda: activity(names.ACT_GET_VM_STATE)({"vm_id": vm_id}),
        lambda s: (
            s["provisioning_state"] == "Succeeded" and s["power_state"] == "PowerState/running"
        ),
    )
    return vm_id


def test_clone_path_snapshot_disk_and_capture_vm(app_env: EmulatorEnv) -> None:
    plan = plan_for(app_env.subscription, BUILD)
    source_vm = _running_vm(plan)
    os_disk = activity(names.ACT_GET_VM_STATE)({"vm_id": source_vm})["os_disk_id"]
    snap_args = {
        "plan": plan,
        "build_id": BUILD,
        "source_disk_id": os_disk,
        "name": plan["names"]["snapshot"],
    }
    snap = activity(names.ACT_CREATE_SNAPSHOT)(snap_args)["snapshot_id"]
    assert activity(names.ACT_CREATE_SNAPSHOT)(snap_args)["snapshot_id"] == snap  # create-or-get
    _ready(snap)
    disk_args = {
        "plan": plan,
        "build_id": BUILD,
        "snapshot_id": snap,
        "name": plan["names"]["clone_disk"],
    }
    disk = activity(names.ACT_CREATE_DISK_FROM_SNAPSHOT)(disk_args)["disk_id"]
    assert activity(names.ACT_CREATE_DISK_FROM_SNAPSHOT)(disk_args)["disk_id"] == disk
    _ready(disk)
    capture_vm = _running_vm(plan, os_disk_id=disk)
    assert capture_vm != source_vm
    assert capture_vm.endswith("/virtualMachines/" + plan["names"]["clone_vm"])
    state = activity(names.ACT_GET_VM_STATE)({"vm_id": capture_vm})
    assert state["os_disk_id"].lower() == disk.lower()
    doc = app_env.emu.store.get(capture_vm)
    assert doc is not None
    assert doc["tags"]["imagefactory:role"] == "capture-vm"
    assert "osProfile" not in doc["properties"]
    # The attached disk stays when the VM goes (a failed VM is recreated on the same disk).
    assert doc["properties"]["storageProfile"]["osDisk"]["deleteOption"] == "Detach"
    snap_doc = app_env.emu.store.get(snap)
    assert snap_doc is not None
    assert snap_doc["tags"]["imagefactory:build-id"] == BUILD
    assert snap_doc["tags"]["imagefactory:role"] == "snapshot"


def _seeded_user_vm(env: EmulatorEnv, name: str) -> dict[str, Any]:
    with env.emu.lock:
        return seed_vm(
            env.emu,
            subscription=env.subscription,
            resource_group=FACTORY_RG,
            name=name,
            location="westeurope",
            image_reference={
                "publisher": WIN11[0],
                "offer": WIN11[1],
                "sku": WIN11[2],
                "version": WIN11_LATEST,
            },
        )


def test_snapshot_and_disk_under_the_builds_name_must_carry_its_tag(app_env: EmulatorEnv) -> None:
    """create-or-get returns an existing snapshot/disk only when it is this build's."""
    plan = plan_for(app_env.subscription, BUILD)
    user_disk = _seeded_user_vm(app_env, "avd-user-0")["properties"]["storageProfile"]["osDisk"][
        "managedDisk"
    ]["id"]
    settings = load_settings()
    snap_name, disk_name = plan["names"]["snapshot"], plan["names"]["clone_disk"]
    # Someone else's snapshot and disk, untagged, under exactly the names this build uses.
    snap = compute.begin_create_snapshot(
        settings, FACTORY_RG, snap_name, "westeurope", user_disk, tags={}
    )
    _ready(snap)
    disk = compute.begin_create_disk_from_snapshot(
        settings, FACTORY_RG, disk_name, "westeurope", snap, tags={"owner": "someone"}
    )
    _ready(disk)
    snap_args = {"plan": plan, "build_id": BUILD, "source_disk_id": user_disk, "name": snap_name}
    with pytest.raises(ConflictError) as untagged:
        activity(names.ACT_CREATE_SNAPSHOT)(snap_args)
    assert "without an imagefactory:build-id tag" in str(untagged.value)
    disk_args = {"plan": plan, "build_id": BUILD, "snapshot_id": snap, "name": disk_name}
    with pytest.raises(ConflictError):
        activity(names.ACT_CREATE_DISK_FROM_SNAPSHOT)(disk_args)
    # Another build's (tagged) snapshot is not this build's either.
    other = "win11-dev-12345678"
    other_plan = plan_for(app_env.subscription, other)
    theirs = activity(names.ACT_CREATE_SNAPSHOT)(
        {"plan": other_plan, "build_id": other, "source_disk_id": user_disk, "name": "snap-x"}
    )["snapshot_id"]
    with pytest.raises(ConflictError) as foreign:
        activity(names.ACT_CREATE_SNAPSHOT)({**snap_args, "name": "snap-x"})
    assert f"belongs to build {other}" in str(foreign.value)
    assert app_env.emu.store.get(theirs)["tags"]["imagefactory:build-id"] == other  # type: ignore[index]


def test_bad_snapshot_source_names_the_field(app_env: EmulatorEnv) -> None:
    plan = plan_for(app_env.subscription, BUILD)
    with pytest.raises(InputError) as caught:
        activity(names.ACT_CREATE_SNAPSHOT)(
            {"plan": plan, "build_id": BUILD, "source_disk_id": "disk-1", "name": "s"}
        )
    assert caught.value.errors[0].path == "source_disk_id"
    with pytest.raises(InputError) as missing:
        activity(names.ACT_CREATE_DISK_FROM_SNAPSHOT)(
            {"plan": plan, "build_id": BUILD, "name": "d"}
        )
    assert [e.path for e in missing.value.errors] == ["snapshot_id"]


def test_list_and_delete_everything_of_one_build(app_env: EmulatorEnv) -> None:
    plan = plan_for(app_env.subscription, BUILD)
    vm_id = _running_vm(plan)
    os_disk = activity(names.ACT_GET_VM_STATE)({"vm_id": vm_id})["os_disk_id"]
    snap = activity(names.ACT_CREATE_SNAPSHOT)(
        {
            "plan": plan,
            "build_id": BUILD,
            "source_disk_id": os_disk,
            "name": plan["names"]["snapshot"],
        }
    )["snapshot_id"]
    _ready(snap)
    # Another build's VM in the same group is not listed.
    other = plan_for(app_env.subscription, "win11-dev-12345678")
    activity(names.ACT_CREATE_BUILD_VM)({"plan": other, "build_id": "win11-dev-12345678"})

    listed = activity(names.ACT_LIST_BUILD_RESOURCES)(
        {"resource_group": FACTORY_RG, "build_id": BUILD}
    )["resources"]
    by_type = {}
    for item in listed:
        by_type.setdefault(item["type"], []).append(item["id"])
    assert by_type["Microsoft.Compute/virtualMachines"] == [vm_id]
    assert len(by_type["Microsoft.Network/networkInterfaces"]) == 1
    assert [d.lower() for d in by_type["Microsoft.Compute/disks"]] == [os_disk.lower()]
    assert by_type["Microsoft.Compute/snapshots"] == [snap]
    assert all("12345678" not in item["id"] for item in listed)
    # Without a resource group the plan's (or the factory's) group is used.
    assert (
        activity(names.ACT_LIST_BUILD_RESOURCES)({"plan": plan, "build_id": BUILD})["resources"]
        == listed
    )
    assert (
        activity(names.ACT_LIST_BUILD_RESOURCES)({"resource_group": None, "build_id": BUILD})[
            "resources"
        ]
        == listed
    )

    # The clean-up order: VM (its NIC and OS disk go with it), then the rest.
    assert activity(names.ACT_DELETE_RESOURCE)({"resource_id": vm_id}) == {"deleted": True}
    _gone(vm_id)
    for nic in by_type["Microsoft.Network/networkInterfaces"]:
        _gone(nic)
    _gone(os_disk)
    assert activity(names.ACT_DELETE_RESOURCE)({"resource_id": snap}) == {"deleted": True}
    _gone(snap)
    # Deleting what is gone says so, and is not an error.
    assert activity(names.ACT_DELETE_RESOURCE)({"resource_id": vm_id}) == {"deleted": False}
    assert activity(names.ACT_DELETE_RESOURCE)({"resource_id": snap}) == {"deleted": False}
    left = activity(names.ACT_LIST_BUILD_RESOURCES)(
        {"resource_group": FACTORY_RG, "build_id": BUILD}
    )
    assert left == {"resources": []}


def _untagged_nic(env: EmulatorEnv, name: str) -> str:
    nic_id = (
        f"/subscriptions/{env.subscription}/resourceGroups/{FACTORY_RG}"
        f"/providers/Microsoft.Network/networkInterfaces/{name}"
    )
    status, _, _ = env.http(
        "PUT",
        nic_id + "?api-version=2024-05-01",
        {
            "location": "westeurope",
            "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": {}}]},
        },
    )
    assert status in (200, 201)
    return nic_id


def test_orphaned_nic_is_listed_and_deleted(app_env: EmulatorEnv) -> None:
    nic_id = _untagged_nic(app_env, "nic-win11-dev-0badcafe")
    # Untagged: found only by the exact name this build (of this image) gave it.
    assert activity(names.ACT_LIST_BUILD_RESOURCES)({"build_id": BUILD}) == {"resources": []}
    listed = activity(names.ACT_LIST_BUILD_RESOURCES)({"build_id": BUILD, "image": "win11-dev"})[
        "resources"
    ]
    assert listed == [{"id": nic_id, "type": "Microsoft.Network/networkInterfaces"}]
    plan = plan_for(app_env.subscription, BUILD, image="win11-dev")
    assert activity(names.ACT_LIST_BUILD_RESOURCES)({"plan": plan, "build_id": BUILD}) == {
        "resources": listed
    }
    assert activity(names.ACT_GET_RESOURCE_STATE)({"resource_id": nic_id})["exists"] is True
    assert activity(names.ACT_DELETE_RESOURCE)({"resource_id": nic_id}) == {"deleted": True}
    _gone(nic_id)
    assert activity(names.ACT_DELETE_RESOURCE)({"resource_id": nic_id}) == {"deleted": False}


def test_a_users_vm_named_like_a_build_vm_is_never_the_factorys(app_env: EmulatorEnv) -> None:
    """vm-golden-win11 (untagged, with its NIC and OS disk) belongs to a user, not to a build
    "golden-win11": neither the janitor's build list nor a build's resource list may name it."""
    _seeded_user_vm(app_env, "vm-golden-win11")
    user_nic = _untagged_nic(app_env, "nic-golden-win11")
    group = f"/subscriptions/{app_env.subscription}/resourceGroups/{FACTORY_RG}"
    users = {r["id"].lower() for r in app_env.emu.store.list(group)}
    assert len(users) >= 4  # VM, its NIC and OS disk, the spare NIC
    plan = plan_for(app_env.subscription, BUILD)
    build_vm = _running_vm(plan)

    assert compute.build_ids_with_resources(load_settings(), FACTORY_RG) == {BUILD}
    for query in (
        {"build_id": BUILD},
        {"build_id": BUILD, "image": "win11-office"},
        {"build_id": "golden-win11"},
        {"build_id": "golden-win11-nic"},
    ):
        listed = activity(names.ACT_LIST_BUILD_RESOURCES)({"resource_group": FACTORY_RG, **query})
        assert not [r["id"] for r in listed["resources"] if r["id"].lower() in users], query
    listed = activity(names.ACT_LIST_BUILD_RESOURCES)({"build_id": BUILD})["resources"]
    assert build_vm in [r["id"] for r in listed]
    assert user_nic.lower() in users


def test_other_types_cannot_be_deleted_here(app_env: EmulatorEnv) -> None:
    definition = (
        f"/subscriptions/{app_env.subscription}/resourceGroups/rg/providers/"
        "Microsoft.Compute/galleries/g/images/i"
    )
    with pytest.raises(InputError) as caught:
        activity(names.ACT_DELETE_RESOURCE)({"resource_id": definition, "build_id": BUILD})
    assert caught.value.errors[0].path == "resource_id"
    with pytest.raises(InputError):
        activity(names.ACT_DELETE_RESOURCE)({"resource_id": "not-an-id"})
    # A gallery version that is not there is already deleted.
    absent = f"{definition}/versions/1.0.0"
    assert activity(names.ACT_DELETE_RESOURCE)({"resource_id": absent, "build_id": BUILD}) == {
        "deleted": False
    }


def test_throttled_delete_is_temporary(
    emulator_factory: EmulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = emulator_factory(retry_after="seconds")
    point_app_at(env, monkeypatch)
    disk = (
        f"/subscriptions/{env.subscription}/resourceGroups/{FACTORY_RG}"
        "/providers/Microsoft.Compute/disks/osdisk-x"
    )
    env.admin(
        "POST",
        "faults",
        {"type": "http", "op": "Microsoft.Compute/disks/delete", "status": 429, "retry_after": 9},
    )
    with pytest.raises(TemporaryError) as caught:
        activity(names.ACT_DELETE_RESOURCE)({"resource_id": disk})
    assert caught.value.retry_after == 9


def test_publish_event_activity(
    emulator_factory: EmulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = emulator_factory(modules=[*emulator.MODULES, "emulator.eventgrid_topic"])
    topic = f"{env.url}/_emulator/eventgrid/topics/factory/api/events"
    point_app_at(env, monkeypatch, EVENTGRID_TOPIC_ENDPOINT=topic)
    out = activity(names.ACT_PUBLISH_EVENT)(
        {
            "event_type": names.EG_IMAGE_VERSION_STAGED,
            "subject": "images/win11-office/versions/1.0.0",
            "data": {"image": "win11-office", "version": "1.0.0"},
        }
    )
    assert out == {"published": True}
    assert len(env.emu.events.events(names.EG_IMAGE_VERSION_STAGED)) == 1
    with pytest.raises(InputError) as caught:
        activity(names.ACT_PUBLISH_EVENT)({"event_type": "", "subject": "s"})
    assert caught.value.errors[0].path == "event_type"


def test_a_failed_snapshot_reports_the_operations_error_in_azures_words(
    app_env: EmulatorEnv,
) -> None:
    plan = plan_for(app_env.subscription, BUILD)
    source_vm = _running_vm(plan)
    os_disk = activity(names.ACT_GET_VM_STATE)({"vm_id": source_vm})["os_disk_id"]
    add_fault(
        app_env,
        type="lro_failure",
        op="Microsoft.Compute/snapshots/write",
        code="CopyFailed",
        message="The copy of disk 'osdisk' did not complete.",
        count=1,
    )
    created = activity(names.ACT_CREATE_SNAPSHOT)(
        {"plan": plan, "build_id": BUILD, "source_disk_id": os_disk, "name": "snap-fails"}
    )
    assert "/operations/" in str(created["operation_url"])
    poll = {"resource_id": created["snapshot_id"], "operation_url": created["operation_url"]}
    final = wait_for(
        lambda: activity(names.ACT_GET_RESOURCE_STATE)(poll),
        lambda s: s["provisioning_state"] == "Failed" or not s["exists"],
    )
    assert final["error"] == "CopyFailed: The copy of disk 'osdisk' did not complete.", final
