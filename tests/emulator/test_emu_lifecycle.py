"""VM lifecycle hooks (``emu.add_listener``), ``compute.start_vm`` and "latest" gallery images
resolved per region by the compute module, with the REAL azure-mgmt-compute client."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from test_gallery_support import make_vm, wait_for

from emulator.arm import ArmError
from emulator.compute import start_vm, vm_runtime
from tests.emulator.conftest import SMALL_SCENARIO

SUB = "00000000-0000-0000-0000-000000000001"
IMAGE = (
    f"/subscriptions/{SUB}/resourceGroups/rg-img/providers/Microsoft.Compute/galleries/gal"
    "/images/win11"
)


def _listen(env: Any, topic: str) -> list[tuple[str, str, datetime]]:
    heard: list[tuple[str, str, datetime]] = []

    def on(resource_id: str, state: str) -> None:
        heard.append((resource_id.rsplit("/", 1)[-1], state, env.clock.now()))

    env.emu.add_listener(topic, on)
    return heard


def _ended(env: Any, op_suffix: str) -> list[datetime]:
    """End times of the finished operations whose name ends with ``op_suffix``."""
    with env.emu.lock:
        return [
            o.end
            for o in env.emu.lro.operations.values()
            if o.op.lower().endswith(op_suffix) and o.end is not None
        ]


def test_vm_power_listeners_hear_every_change_at_its_instant(emulator_env: Any) -> None:
    env = emulator_env
    heard = _listen(env, "vm.power")
    c = env.compute_client()
    env.create_vm("vm1", client=c)
    c.virtual_machines.begin_power_off("rg", "vm1").result()
    c.virtual_machines.begin_start("rg", "vm1").result()
    c.virtual_machines.begin_deallocate("rg", "vm1").result()
    c.virtual_machines.begin_start("rg", "vm1").result()
    c.virtual_machines.begin_restart("rg", "vm1").result()
    env.run_script("vm1", ["Stop-Computer -Force"], client=c)  # a guest shutdown
    c.virtual_machines.begin_delete("rg", "vm1").result()
    assert {name for name, _, _ in heard} == {"vm1"}
    assert [state for _, state, _ in heard] == [
        "starting",
        "running",  # booted
        "stopping",
        "stopped",
        "starting",
        "running",
        "deallocating",
        "deallocated",
        "starting",
        "running",
        "starting",  # restart
        "running",
        "stopped",  # Stop-Computer
        "deleted",
    ]
    # Each final state is heard at the virtual instant its operation completed.
    at = {state: [t for _, s, t in heard if s == state] for _, state, _ in heard}
    assert at["deallocated"] == _ended(env, "/deallocate/action")
    assert at["deleted"] == _ended(env, "virtualmachines/delete")
    assert at["running"][0] == _ended(env, "virtualmachines/write")[0]


def test_listener_topics_are_checked_and_a_failing_listener_is_reported(
    emulator_env: Any,
) -> None:
    env = emulator_env
    with pytest.raises(ValueError, match="unknown listener topic"):
        env.emu.add_listener("vm.powr", lambda vm_id, state: None)

    def broken(vm_id: str, state: str) -> None:
        raise RuntimeError("listener bug")

    env.emu.add_listener("vm.power", broken)
    heard = _listen(env, "vm.power")  # registered after the broken one: still called
    vm = env.create_vm("vm2")
    assert vm.properties.provisioning_state == "Succeeded"
    assert [s for _, s, _ in heard] == ["starting", "running"]
    errors = env.emu.report()["scheduleErrors"]
    assert len(errors) == 2
    assert all("listener vm.power" in e and "listener bug" in e for e in errors)


def test_guest_listeners_hear_each_step_without_its_text(emulator_env: Any) -> None:
    env = emulator_env
    heard = _listen(env, "vm.guest")
    env.create_vm("vm3")
    env.run_script("vm3", ["Write-Output hello", "reg add HKLM\\SOFTWARE\\X /v Y /d secret /f"])
    assert [(n, s) for n, s, _ in heard] == [
        ("vm3", "guest.write_output"),
        ("vm3", "guest.registry"),
    ]


def test_start_vm_for_other_modules(emulator_env: Any) -> None:
    env = emulator_env
    c = env.compute_client()
    heard = _listen(env, "vm.power")
    vm_id = make_vm(env, "vm4", rg="rg")
    with env.emu.lock:
        assert start_vm(env.emu, vm_id) is False  # already running
    c.virtual_machines.begin_deallocate("rg", "vm4").result()
    env.clock.pause()
    started_at = env.clock.now()
    with env.emu.lock:
        assert start_vm(env.emu, vm_id) is True
        assert start_vm(env.emu, vm_id) is False  # already starting
        assert vm_runtime(env.emu, vm_id).power == "starting"  # type: ignore[union-attr]
    env.clock.resume()
    wait_for(env, lambda: vm_runtime(env.emu, vm_id).power == "running", what="the start")  # type: ignore[union-attr]
    running_at = heard[-1][2]
    assert heard[-2:] == [("vm4", "starting", started_at), ("vm4", "running", running_at)]
    mean = env.emu.latency.mean("vm.start")
    assert mean * 0.7 <= running_at - started_at <= mean * 1.3
    events = [
        e
        for e in env.emu.events.events("Microsoft.Resources.ResourceActionSuccess")
        if e.data["operationName"] == "Microsoft.Compute/virtualMachines/start/action"
    ]
    assert [e.event_time for e in events][-1] == running_at
    # Like the action: a generalized VM does not start, a missing one is not found.
    generalized = make_vm(env, "vm5", rg="rg", generalized=True)
    with env.emu.lock, pytest.raises(ArmError) as err:
        start_vm(env.emu, generalized)
    assert err.value.status == 409
    assert "generalized" in err.value.message
    with env.emu.lock, pytest.raises(ArmError) as err:
        start_vm(env.emu, vm_id.replace("vm4", "nope"))
    assert err.value.status == 404


def _gallery_scenario() -> dict[str, Any]:
    sc = copy.deepcopy(SMALL_SCENARIO)
    sc["galleries"] = [
        {
            "name": "gal",
            "resource_group": "rg-img",
            "location": "westeurope",
            "images": [
                {
                    "name": "win11",
                    "publisher": "Contoso",
                    "offer": "avd",
                    "sku": "win11",
                    "versions": [
                        {"version": "1.0.0", "regions": ["westeurope", "northeurope"]},
                        # staged: built and replicated, but nothing picks it up as latest
                        {
                            "version": "1.1.0",
                            "regions": ["westeurope", "northeurope"],
                            "exclude_from_latest": True,
                            "apps": ["7zip"],
                        },
                    ],
                }
            ],
        }
    ]
    return sc


def _exact(env: Any, c: Any, name: str, location: str) -> str:
    vm = env.create_vm(name, location=location, image={"id": IMAGE}, client=c)
    return str(vm.properties.storage_profile.image_reference.exact_version)


def test_latest_honours_the_target_regions_own_exclude_from_latest(emulator_factory: Any) -> None:
    env = emulator_factory(_gallery_scenario())
    c = env.compute_client()
    assert _exact(env, c, "a-we", "westeurope") == "1.0.0"
    assert _exact(env, c, "a-ne", "northeurope") == "1.0.0"
    # Promote in West Europe only: the region's flag wins over the version's.
    c.gallery_image_versions.begin_update(
        "rg-img",
        "gal",
        "win11",
        "1.1.0",
        {
            "properties": {
                "publishingProfile": {
                    "targetRegions": [
                        {"name": "westeurope", "excludeFromLatest": False},
                        {"name": "northeurope"},
                    ]
                }
            }
        },
    ).result()
    profile = c.gallery_image_versions.get("rg-img", "gal", "win11", "1.1.0").properties
    assert profile.publishing_profile.exclude_from_latest is True
    assert _exact(env, c, "b-we", "westeurope") == "1.1.0"
    assert _exact(env, c, "b-ne", "northeurope") == "1.0.0"
    with env.emu.lock:
        from emulator.compute import guest_of

        vm_id = (
            f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines"
        )
        assert "7zip" in guest_of(env.emu, f"{vm_id}/b-we").apps  # type: ignore[union-attr]
        assert "7zip" not in guest_of(env.emu, f"{vm_id}/b-ne").apps  # type: ignore[union-attr]


def test_latest_with_a_region_flag_excluding_what_is_globally_included(
    emulator_factory: Any,
) -> None:
    sc = _gallery_scenario()
    sc["galleries"][0]["images"][0]["versions"].append(
        {
            "version": "1.2.0",
            "regions": ["westeurope", {"name": "northeurope", "exclude_from_latest": True}],
        }
    )
    env = emulator_factory(sc)
    c = env.compute_client()
    assert _exact(env, c, "c-we", "westeurope") == "1.2.0"
    assert _exact(env, c, "c-ne", "northeurope") == "1.0.0"
    # Not replicated to a region at all: not available there.
    with pytest.raises(HttpResponseError) as err:
        env.create_vm("c-us", location="eastus", image={"id": IMAGE}, client=c)
    assert "GalleryImageNotFound" in str(err.value)
