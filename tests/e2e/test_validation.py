"""Validation of a staged version on real session hosts, end to end, in virtual time.

The real app (function_app.py, its real lifecycle activity included)
runs on the devhost against the emulator. A staged version of ``win11-office`` is seeded in the
gallery with the guest the build would have produced; each test starts a validation over HTTP
(or by the staged event) and judges the app by what Azure (the emulator) holds afterwards: the
version's state tag, and no validation VM, NIC, disk or session host left in the test pool.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from devhost.demo import DEFAULT_SCENARIO, World, local_world
from shared.names import validation_instance_id
from tests.e2e.conftest import ROOT, post_json

pytestmark = pytest.mark.slow

APP = "function_app:app"
CATALOGUE = ROOT / "catalogue" / "images.yaml"
SUB = "00000000-0000-0000-0000-000000000001"
IMAGE = "win11-office"
VERSION = "1.0.0"
VERSION_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-avd-images/providers/Microsoft.Compute/galleries/"
    f"gal_avd_images/images/{IMAGE}/versions/{VERSION}"
)
TEST_POOL = (
    f"/subscriptions/{SUB}/resourceGroups/rg-avd/providers/"
    "Microsoft.DesktopVirtualization/hostPools/hp-office-test"
)


def scenario_with_staged_version(state: str = "staged") -> dict[str, Any]:
    """The default scenario plus the Office image's gallery holding one staged version."""
    sc: dict[str, Any] = yaml.safe_load(DEFAULT_SCENARIO.read_text())
    sc["galleries"].append(
        {
            "name": "gal_avd_images",
            "resource_group": "rg-avd-images",
            "location": "westeurope",
            "images": [
                {
                    "name": IMAGE,
                    "publisher": "Contoso",
                    "offer": "avd-win11",
                    "sku": "office",
                    "security_type": "TrustedLaunchSupported",
                    "versions": [
                        {
                            "version": VERSION,
                            "exclude_from_latest": True,
                            "tags": {"imagefactory:state": state, "imagefactory:image": IMAGE},
                        }
                    ],
                }
            ],
        }
    )
    return sc


def built_guest(world: World, *, seven_zip: str = "24.08") -> None:
    """Give the seeded version the guest a build of win11-office leaves behind."""
    from emulator.guest import GuestState

    guest = world.emulator.emu.store.meta(VERSION_ID)["guest"]
    assert isinstance(guest, GuestState)
    guest.apps["7zip.7zip"] = seven_zip
    guest.set_registry(r"HKLM\SOFTWARE\FSLogix\Profiles", "Enabled", "REG_DWORD", "1")
    guest.set_registry(
        r"HKLM\SYSTEM\CurrentControlSet\Control\BitLocker",
        "PreventDeviceEncryption",
        "REG_DWORD",
        "1",
    )
    guest.bitlocker = "FullyDecrypted"


def catalogue_with(tmp_path: Path, **validation: Any) -> Path:
    raw = yaml.safe_load(CATALOGUE.read_text())
    image = next(i for i in raw["images"] if i["name"] == IMAGE)
    image["validation"] = {**copy.deepcopy(image["validation"]), **validation}
    path = tmp_path / "images.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def world() -> Iterator[World]:
    with local_world(scenario_with_staged_version(), CATALOGUE, app_spec=APP) as w:
        built_guest(w)
        yield w


def start(world: World) -> dict[str, Any]:
    code, body = post_json(
        f"{world.host.url}/api/images/{IMAGE}/versions/{VERSION}/validation",
        {"reason": "e2e", "change_ticket": "CHG0001"},
    )
    assert code == 202, body
    world.clock.resume()
    result: dict[str, Any] = world.host.engine.wait_for(validation_instance_id(IMAGE, VERSION), 240)
    return result


def version_state(world: World) -> str:
    doc = world.emulator.emu.store.get(VERSION_ID)
    assert doc is not None
    return str(doc["tags"]["imagefactory:state"])


def leftovers(world: World) -> list[str]:
    """Anything of a validation still in Azure: VMs, NICs, disks, session hosts."""
    store = world.emulator.emu.store
    found = [
        str(r["id"])
        for kind in (
            "Microsoft.Compute/virtualMachines",
            "Microsoft.Network/networkInterfaces",
            "Microsoft.Compute/disks",
        )
        for r in store.list("/subscriptions", kind)
        if "vm-val-" in str(r["id"])
    ]
    found += [
        str(h["id"])
        for h in store.list(
            TEST_POOL + "/sessionHosts", "Microsoft.DesktopVirtualization/hostpools/sessionhosts"
        )
    ]
    return found


def test_validation_passes_and_removes_every_validation_resource(world: World) -> None:
    status = start(world)

    assert status["runtimeStatus"] == "Completed", status
    out = status["output"]
    assert out["outcome"] == "validated", out
    assert version_state(world) == "validated"
    assert [c["passed"] for c in out["checks"]] == [True, True, True, True]
    assert "7zip.7zip=24.08" in out["checks"][0]["detail"]
    assert out["cleanup"] == {"left": []}
    assert leftovers(world) == []
    # Registered, then drained at once, never opened (no soak, no test group); the VM came
    # from the exact version id, never "latest".
    from emulator.avd import avd_state

    log = avd_state(world.emulator.emu).log
    registered = [e for e in log if e["kind"] == "registered" and "vm-val-" in e["vm"]]
    updates = [e for e in log if e["kind"] == "sessionHostUpdate" and "vm-val-" in e["host"]]
    assert len(registered) == 1
    assert [e["allowNewSession"] for e in updates] == [False]
    assert updates[0]["time"] == registered[0]["time"] or updates[0]["time"] > registered[0]["time"]
    tags = world.emulator.emu.store.get(VERSION_ID)["tags"]
    assert tags["imagefactory:state-previous"] == "validating"  # staged -> validating -> validated


def version_writes(world: World) -> int:
    """Writes (PUT/PATCH) the emulator served on gallery versions: one per state change here."""
    return world.emulator.emu.metrics.requests.get(
        "Microsoft.Compute/galleries/images/versions/write", 0
    )


def test_failing_smoke_check_fails_with_its_output_and_cleans_up(tmp_path: Path) -> None:
    catalogue = catalogue_with(
        tmp_path,
        checks=[
            {"kind": "bitlocker", "expected": "off"},
            {"kind": "app_present", "name": "7zip.7zip", "min_version": "25.1"},
        ],
    )
    with local_world(scenario_with_staged_version(), catalogue, app_spec=APP) as world:
        built_guest(world)
        status = start(world)

        out = status["output"]
        assert out["outcome"] == "failed", out
        assert "7zip.7zip 24.08 is installed, at least 25.1 expected" in out["reason"]
        assert "checks[1] app_present 7zip.7zip" in out["reason"]
        assert version_state(world) == "failed"
        assert (
            "24.08" in world.emulator.emu.store.get(VERSION_ID)["tags"]["imagefactory:state-reason"]
        )
        assert leftovers(world) == []


def test_host_that_never_registers_fails_by_the_deadline_and_cleans_up(world: World) -> None:
    # The agent of every validation host never reaches AVD: no session host ever appears.
    world.emulator.emu.faults.add(
        {"type": "flag", "kind": "host_never_registers", "match": {"vm": "vm-val-*"}}
    )
    status = start(world)

    out = status["output"]
    assert out["outcome"] == "failed", out
    assert "registering in the test host pool" in out["reason"]
    assert "deadline" in out["reason"]
    assert version_state(world) == "failed"
    assert leftovers(world) == []


def test_second_request_is_refused_while_one_exists(world: World) -> None:
    url = f"{world.host.url}/api/images/{IMAGE}/versions/{VERSION}/validation"
    assert post_json(url, {})[0] == 202
    code, body = post_json(url, {})
    assert code == 409, body
    assert body["error"]["code"] == "ValidationExists"
    code, body = post_json(f"{world.host.url}/api/images/{IMAGE}/versions/1.x/validation", {})
    assert code == 400
    assert body["error"]["field"] == "version"
    code, body = post_json(url.replace(IMAGE, "no-such-image"), {})
    assert code == 404


def test_staged_event_starts_the_validation_once(world: World) -> None:
    """The build's ImageVersionStaged event (delivered twice: Event Grid is at-least-once)
    starts exactly one validation of that version."""
    events = world.emulator.emu.events
    events.subscribe(
        {
            "name": "version-staged",
            "endpoint": world.webhook("on_image_version_staged"),
            "includedEventTypes": ["ImageFactory.ImageVersionStaged"],
        }
    )
    topic = (
        f"/subscriptions/{SUB}/resourceGroups/eventgrid/providers/"
        "Microsoft.EventGrid/topics/imagefactory"
    )
    data = {"image": IMAGE, "version": VERSION, "version_id": VERSION_ID, "build_id": "b-1"}
    for _ in range(2):
        events.publish(
            "ImageFactory.ImageVersionStaged",
            f"images/{IMAGE}/versions/{VERSION}",
            data,
            topic=topic,
        )
    world.clock.resume()
    status = world.host.engine.wait_for(validation_instance_id(IMAGE, VERSION), 240)

    assert status["output"]["outcome"] == "validated", status["output"]
    assert status["input"]["reason"] == "staged by build b-1"
    # the second delivery found the instance and did nothing: two state changes, not four
    assert version_writes(world) == 2
    assert version_state(world) == "validated"
    assert leftovers(world) == []


def test_host_turning_unhealthy_in_the_soak_fails_and_cleans_up(tmp_path: Path) -> None:
    """Opened to the test group for the soak, the host later needs assistance: failed."""
    catalogue = catalogue_with(tmp_path, soak_minutes=120, test_group="AVD-Pilot")
    with local_world(scenario_with_staged_version(), catalogue, app_spec=APP) as world:
        built_guest(world)
        emu = world.emulator.emu
        opened: list[str] = []

        def sicken_once_open() -> None:
            from emulator.avd import _host_rt, session_hosts_of

            for host in session_hosts_of(emu, TEST_POOL):
                if "vm-val-" in host["name"] and host["properties"].get("allowNewSession"):
                    opened.append(emu.now_iso())
                    rt = _host_rt(emu, str(host["id"]))
                    assert rt is not None
                    rt.needs_assistance = True  # e.g. FSLogix profiles stop attaching
                    return
            emu.schedule(timedelta(minutes=10), sicken_once_open, "test:sicken")

        emu.schedule(timedelta(minutes=10), sicken_once_open, "test:sicken")
        status = start(world)

        out = status["output"]
        assert out["outcome"] == "failed", out
        assert "turned unhealthy during the soak" in out["reason"]
        assert "NeedsAssistance" in out["reason"]
        assert opened, "the host was never opened to the test group"
        assert [c["passed"] for c in out["checks"]] == [True, True, True, True]
        assert version_state(world) == "failed"
        assert leftovers(world) == []
