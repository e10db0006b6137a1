"""Build VM activities against the emulator: create-or-get, state, deallocate, generalize."""

from __future__ import annotations

from typing import Any

import pytest

from shared import names
from shared.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    PermanentError,
    TemporaryError,
)
from tests.activities.conftest import FACTORY_RG, activity, plan_for, point_app_at, wait_for
from tests.emulator.conftest import EmulatorEnv, EmulatorFactory

BUILD = "b-0001"


def _create(env: EmulatorEnv, **extra: Any) -> str:
    payload = {"plan": plan_for(env.subscription, BUILD), "build_id": BUILD}
    payload.update(extra)
    return str(activity(names.ACT_CREATE_BUILD_VM)(payload)["vm_id"])


def _state(vm_id: str) -> dict[str, Any]:
    return activity(names.ACT_GET_VM_STATE)({"vm_id": vm_id})


def _running(state: dict[str, Any]) -> bool:
    return (
        state["provisioning_state"] == "Succeeded" and state["power_state"] == "PowerState/running"
    )


def test_create_build_vm_then_it_runs_with_standard_security(app_env: EmulatorEnv) -> None:
    vm_id = _create(app_env)
    assert vm_id.endswith(
        f"/resourceGroups/{FACTORY_RG}/providers/Microsoft.Compute/virtualMachines/vm-b-0001"
    )
    state = wait_for(lambda: _state(vm_id), _running)
    assert state["exists"] is True
    assert state["security_type"] == "Standard"
    assert state["os_disk_id"].endswith("/disks/osdisk-b-0001")
    assert state["error"] is None
    doc = app_env.emu.store.get(vm_id)
    assert doc is not None
    assert doc["tags"]["imagefactory:build-id"] == BUILD
    assert doc["tags"]["imagefactory:image"] == "win11-office"
    assert doc["tags"]["imagefactory:role"] == "build-vm"
    props = doc["properties"]
    assert props["storageProfile"]["imageReference"]["version"] == "26200.7462.251205"
    assert props["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    nic = props["networkProfile"]["networkInterfaces"][0]
    assert nic["properties"]["deleteOption"] == "Delete"
    assert len(props["osProfile"]["computerName"]) <= 15
    # The generated admin password is neither stored by the emulator nor returned.
    assert "adminPassword" not in props["osProfile"]


def test_create_twice_makes_one_vm(app_env: EmulatorEnv) -> None:
    first = _create(app_env)
    second = _create(app_env)
    assert first == second
    vms = app_env.emu.store.list(
        f"/subscriptions/{app_env.subscription}/resourceGroups/{FACTORY_RG}",
        "Microsoft.Compute/virtualMachines",
    )
    assert len(vms) == 1
    # A third call after it finished is still the same VM, and only one PUT was sent.
    wait_for(lambda: _state(first), _running)
    assert _create(app_env) == first
    puts = [
        e
        for e in app_env.emu.events.events("Microsoft.Resources.ResourceWriteSuccess")
        if e.subject.lower() == first.lower()
    ]
    assert len(puts) <= 1


def test_vm_of_another_build_with_the_same_name_is_a_conflict(app_env: EmulatorEnv) -> None:
    _create(app_env)
    plan = plan_for(app_env.subscription, "b-9999")
    plan["names"] = plan_for(app_env.subscription, BUILD)["names"]
    with pytest.raises(PermanentError) as caught:
        activity(names.ACT_CREATE_BUILD_VM)({"plan": plan, "build_id": "b-9999"})
    assert "belongs to build b-0001" in str(caught.value)


def test_untagged_vm_with_the_builds_name_is_not_taken_over(app_env: EmulatorEnv) -> None:
    from emulator.compute import seed_vm

    plan = plan_for(app_env.subscription, BUILD)
    with app_env.emu.lock:
        seed_vm(
            app_env.emu,
            subscription=app_env.subscription,
            resource_group=FACTORY_RG,
            name=plan["names"]["vm"],
            location="westeurope",
            image_reference={
                k: plan["source"][k] for k in ("publisher", "offer", "sku", "version")
            },
        )
    with pytest.raises(ConflictError) as caught:
        activity(names.ACT_CREATE_BUILD_VM)({"plan": plan, "build_id": BUILD})
    assert "without an imagefactory:build-id tag" in str(caught.value)


def test_get_vm_state_of_a_missing_vm(app_env: EmulatorEnv) -> None:
    vm_id = (
        f"/subscriptions/{app_env.subscription}/resourceGroups/{FACTORY_RG}"
        "/providers/Microsoft.Compute/virtualMachines/nope"
    )
    state = _state(vm_id)
    assert state["exists"] is False
    assert state["power_state"] is None


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"build_id": BUILD}, "plan"),
        ({"plan": {"image": "x"}, "build_id": BUILD}, "plan.names"),
        ({"build_id": BUILD, "os_disk_id": "disk-1"}, "os_disk_id"),
        ({"build_id": ""}, "build_id"),
    ],
)
def test_create_build_vm_bad_input_names_the_field(
    app_env: EmulatorEnv, payload: dict[str, Any], field: str
) -> None:
    if "plan" not in payload and field != "plan":
        payload["plan"] = plan_for(app_env.subscription, BUILD)
    with pytest.raises(InputError) as caught:
        activity(names.ACT_CREATE_BUILD_VM)(payload)
    assert field in [e.path for e in caught.value.errors]


def test_marketplace_source_must_be_an_exact_version(app_env: EmulatorEnv) -> None:
    plan = plan_for(app_env.subscription, BUILD)
    plan["source"]["version"] = "latest"
    with pytest.raises(InputError) as caught:
        activity(names.ACT_CREATE_BUILD_VM)({"plan": plan, "build_id": BUILD})
    assert caught.value.errors[0].path == "plan.source.version"


def test_snapshot_source_needs_an_os_disk(app_env: EmulatorEnv) -> None:
    plan = plan_for(app_env.subscription, BUILD)
    plan["source"] = {"kind": "snapshot", "snapshot_source_id": "/x"}
    with pytest.raises(InputError) as caught:
        activity(names.ACT_CREATE_BUILD_VM)({"plan": plan, "build_id": BUILD})
    assert caught.value.errors[0].path == "os_disk_id"


def test_vm_id_must_be_a_vm(app_env: EmulatorEnv) -> None:
    with pytest.raises(InputError) as caught:
        _state(
            f"/subscriptions/{app_env.subscription}/resourceGroups/rg/providers/Microsoft.Compute/disks/d1"
        )
    assert caught.value.errors[0].path == "vm_id"
    with pytest.raises(InputError) as caught2:
        activity(names.ACT_GET_VM_STATE)({})
    assert caught2.value.errors[0].path == "vm_id"


def test_throttled_create_is_temporary(
    emulator_factory: EmulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = emulator_factory(retry_after="seconds")
    point_app_at(env, monkeypatch)
    env.admin(
        "POST",
        "faults",
        {
            "type": "http",
            "op": "Microsoft.Compute/virtualMachines/write",
            "status": 429,
            "retry_after": 30,
            "count": 1,
        },
    )
    with pytest.raises(TemporaryError) as caught:
        _create(env)
    assert caught.value.retry_after == 30
    # The retry (what the orchestrator does after its timer) creates the VM.
    vm_id = _create(env)
    assert env.emu.store.get(vm_id) is not None


def test_deallocate_then_generalize_requires_sysprep(app_env: EmulatorEnv) -> None:
    vm_id = _create(app_env)
    wait_for(lambda: _state(vm_id), _running)
    assert activity(names.ACT_DEALLOCATE_VM)({"vm_id": vm_id}) == {"started": True}
    wait_for(lambda: _state(vm_id), lambda s: s["power_state"] == "PowerState/deallocated")
    # Repeating the deallocate is harmless.
    assert activity(names.ACT_DEALLOCATE_VM)({"vm_id": vm_id}) == {"started": True}
    # The guest was never sysprepped: Azure refuses to generalize it (permanent, with reason).
    with pytest.raises(PermanentError) as caught:
        activity(names.ACT_GENERALIZE_VM)({"vm_id": vm_id})
    assert "OperationNotAllowed" in str(caught.value)


def test_generalize_a_missing_vm_is_not_found(app_env: EmulatorEnv) -> None:
    vm_id = (
        f"/subscriptions/{app_env.subscription}/resourceGroups/{FACTORY_RG}"
        "/providers/Microsoft.Compute/virtualMachines/gone"
    )
    with pytest.raises(NotFoundError):
        activity(names.ACT_GENERALIZE_VM)({"vm_id": vm_id})
