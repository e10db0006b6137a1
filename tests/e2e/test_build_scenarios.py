"""Image build scenarios end to end: faults, capture modes, base sources, sysprep, janitor.

The real app runs on the devhost against the emulator in virtual time (``local_world``). Each
test starts builds only from the app's edges (its HTTP API, its timers) and judges the outcome
by what Azure (the emulator) ends up holding: the staged version, the VMs that must stay, and
no temporary resource left behind (no orphan, nothing tagged for a build nobody knows).
The catalogues are in ``tests/e2e/catalogues/``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from devhost.demo import DEFAULT_SCENARIO, World, local_world
from emulator.compute import guest_of, vm_runtime
from emulator.gallery import guest_state_for_version
from shared import names
from shared.domain.manifest import diff_manifests, manifest_from_tags
from tests.e2e.conftest import post_json, queue_state

pytestmark = pytest.mark.slow

CATALOGUES = Path(__file__).resolve().parent / "catalogues"
TWO_REGIONS = CATALOGUES / "two_regions.yaml"
OFFICE = "e2e-office"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
BUILD_RG = "rg-image-factory"
TERMINAL = {"Completed", "Failed", "Terminated"}
REAL_TIMEOUT = 150.0

Observer = Callable[[World, str], None]


# -- helpers --------------------------------------------------------------------------------------
def request_build(world: World, image: str, key: str) -> None:
    """Queue a build through the app's HTTP API (what an ITSM tool or operator does)."""
    code, body = post_json(
        f"{world.host.url}/api/images/{image}/builds", {"key": key, "reason": "e2e"}
    )
    assert code == 202, body


def await_build_id(world: World, image: str, key: str, real_timeout: float = 30.0) -> str:
    """The build id the image's queue gave the request with ``key``."""
    deadline = time.monotonic() + real_timeout
    while time.monotonic() < deadline:
        state = queue_state(world, image)
        for item in [state.get("running") or {}, *(state.get("recent") or [])]:
            if item.get("key") == f"manual:{key}" and item.get("build_id"):
                return str(item["build_id"])
        time.sleep(0.02)
    raise TimeoutError(f"the queue of {image} never started the build with key {key}")


def await_end(
    world: World,
    build_id: str,
    observe: Observer | None = None,
    real_timeout: float = REAL_TIMEOUT,
) -> dict[str, Any]:
    """Wait (real seconds) until the build ends; ``observe`` runs on every look."""
    deadline = time.monotonic() + real_timeout
    while time.monotonic() < deadline:
        if observe is not None:
            observe(world, build_id)
        status = world.status(names.build_instance_id(build_id)) or {}
        if status.get("runtimeStatus") in TERMINAL:
            return status
        time.sleep(0.02)
    raise TimeoutError(f"build {build_id} did not end within {real_timeout} s of real time")


def run_build(
    world: World, image: str, key: str, observe: Observer | None = None
) -> dict[str, Any]:
    """Request a build, let virtual time run, and return the build's final status (with the
    build id added as ``build_id``)."""
    request_build(world, image, key)
    world.clock.resume()
    build_id = await_build_id(world, image, key)
    status = await_end(world, build_id, observe)
    # Let the queue and any straggling sub-orchestration settle before judging the world.
    world.host.engine.wait_idle(real_timeout=30)
    return {**status, "build_id": build_id}


def makespan_seconds(status: dict[str, Any]) -> float:
    """Virtual seconds from the build's creation to its end."""
    created = datetime.fromisoformat(status["createdTime"])
    ended = datetime.fromisoformat(status["lastUpdatedTime"])
    return (ended - created).total_seconds()


TEMPORARY_TYPES = {
    "microsoft.compute/virtualmachines",
    "microsoft.compute/disks",
    "microsoft.compute/snapshots",
    "microsoft.network/networkinterfaces",
}


def build_resources(world: World, build_id: str) -> list[str]:
    """Temporary resources (VMs, disks, snapshots, NICs) tagged with or named after a build."""
    found = []
    for doc in world.emulator.emu.store.all():
        if str(doc.get("type", "")).lower() not in TEMPORARY_TYPES:
            continue
        rid = str(doc.get("id", ""))
        tags = doc.get("tags") or {}
        if tags.get("imagefactory:build-id") == build_id or build_id in rid.rsplit("/", 1)[-1]:
            found.append(rid)
    return found


def assert_nothing_left(world: World, build_id: str) -> None:
    report = world.emulator.emu.report()
    assert report["orphans"] == [], report["orphans"]
    assert (report.get("ownership") or {}).get("taggedUnknownBuild", []) == [], report["ownership"]
    assert build_resources(world, build_id) == []


def staged_version(world: World, output: dict[str, Any]) -> dict[str, Any]:
    doc = world.emulator.emu.store.get(output["version_id"])
    assert doc is not None, f"no gallery version {output['version_id']}"
    assert doc["tags"]["imagefactory:state"] == "staged"
    assert doc["tags"]["imagefactory:build-id"] == output["build_id"]
    assert doc["properties"]["publishingProfile"]["excludeFromLatest"] is True
    return dict(doc)


def vm_write_count(world: World, vm_name: str) -> int:
    """Successful VM PUTs on ``vm_name`` (Event Grid resource-write events of the emulator)."""
    return len(
        [
            e
            for e in world.emulator.emu.events.events("Microsoft.Resources.ResourceWriteSuccess")
            if e.data.get("operationName", "").lower() == "microsoft.compute/virtualmachines/write"
            and e.subject.lower().endswith(f"/virtualmachines/{vm_name.lower()}")
        ]
    )


def vm_puts(world: World) -> int:
    """Every VM PUT the emulator served, answered or refused."""
    ops = world.emulator.emu.metrics.as_dict()["operations"]
    return int((ops.get("Microsoft.Compute/virtualMachines/write") or {}).get("total", 0))


def vm_id(resource_group: str, name: str) -> str:
    return (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.Compute/virtualMachines/{name}"
    )


class RegionWatch:
    """Records the per-region replication states that the build's waits reported."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self._next = 0.0

    def __call__(self, world: World, build_id: str) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + 0.1
        # Polling waits are children named after the build; event-first ones are named after
        # their resource (``rwait:...``, shared.names.resource_wait_instance_id).
        waits = []
        for prefix in (f"build:{build_id}:wait:", "rwait:"):
            found, _ = world.host.engine.query(
                runtime_status=["Running"], instance_id_prefix=prefix
            )
            waits += found
        for wait in waits:
            state = (wait.get("customStatus") or {}).get("state") or {}
            regions = state.get("regions") or {}
            if regions:
                snapshot = {r: str((s or {}).get("state")) for r, s in regions.items()}
                if not self.seen or self.seen[-1] != snapshot:
                    self.seen.append(snapshot)


# -- a baseline build (shared: a plain two-region build, sysprep signalled by event) -------------
@pytest.fixture(scope="module")
def baseline() -> dict[str, Any]:
    # The world is closed before any test runs: local_world sets process-wide settings and
    # its timers keep running, so two worlds must never be open at once.
    with local_world(catalogue=TWO_REGIONS) as world:
        status = run_build(world, OFFICE, "baseline")
        return {
            "status": status,
            "makespan": makespan_seconds(status),
            "report": world.emulator.emu.report(),
            "left": build_resources(world, status["output"]["build_id"]),
        }


# -- 1. replication slow in one region ------------------------------------------------------------
def test_slow_replication_in_one_region_waits_longer_and_completes(
    baseline: dict[str, Any],
) -> None:
    assert baseline["status"]["runtimeStatus"] == "Completed", baseline["status"].get("output")
    with local_world(catalogue=TWO_REGIONS) as world:
        world.emulator.emu.faults.add(
            {
                "type": "multiplier",
                "kind": "replication_slow",
                "match": {"region": "northeurope"},
                "factor": 4,
            }
        )
        watch = RegionWatch()
        status = run_build(world, OFFICE, "slow-region", observe=watch)

        assert status["runtimeStatus"] == "Completed", status.get("output")
        out = status["output"]
        assert {r: s["state"] for r, s in out["regions"].items()} == {
            "westeurope": "Completed",
            "northeurope": "Completed",
        }
        staged_version(world, out)
        # Seen while waiting: the gallery's region done, the slow one still replicating.
        assert any(
            s.get("westeurope") == "Completed" and s.get("northeurope") not in (None, "Completed")
            for s in watch.seen
        ), watch.seen
        assert makespan_seconds(status) > baseline["makespan"] + 1800, (
            makespan_seconds(status),
            baseline["makespan"],
        )
        assert_nothing_left(world, out["build_id"])


def test_replication_of_six_hours_is_waited_for() -> None:
    with local_world(catalogue=TWO_REGIONS) as world:
        world.emulator.emu.faults.add(
            {
                "type": "multiplier",
                "kind": "replication_slow",
                "match": {"region": "northeurope"},
                "factor": 8,  # 45 min x 8: about six hours
            }
        )
        status = run_build(world, OFFICE, "very-slow-region")
        assert status["runtimeStatus"] == "Completed", status.get("output")


# -- 2. replication failing in one region ---------------------------------------------------------
@pytest.fixture(scope="module")
def failed_replication() -> dict[str, Any]:
    with local_world(catalogue=TWO_REGIONS) as world:
        world.emulator.emu.faults.add(
            {"type": "flag", "kind": "replication_fails", "match": {"region": "northeurope"}}
        )
        status = run_build(world, OFFICE, "failing-region")
        return {
            "status": status,
            "report": world.emulator.emu.report(),
            "left": build_resources(world, status["build_id"]),
        }


def test_failed_replication_in_one_region_fails_the_build_and_cleans_up(
    failed_replication: dict[str, Any],
) -> None:
    status = failed_replication["status"]
    assert status["runtimeStatus"] == "Failed"
    assert "gallery version" in str(status.get("output"))
    report = failed_replication["report"]
    assert report["orphans"] == []
    assert report["ownership"].get("taggedUnknownBuild", []) == []
    assert failed_replication["left"] == []


def test_failed_replication_names_the_region(failed_replication: dict[str, Any]) -> None:
    text = str(failed_replication["status"].get("output"))
    assert "northeurope" in text, text


# -- 4. capture from a clone of an authoritative source VM ----------------------------------------
SOURCE_RG = "rg-authoritative"
SOURCE_VM = "vm-office-src"


def _create_source_vm(world: World) -> str:
    """The authoritative source VM, created through the real SDK before the factory runs."""
    from shared.azure.clients import compute_client
    from shared.settings import load_settings

    client = compute_client(load_settings())
    body: Any = {
        "location": "westeurope",
        "tags": {"owner": "avd-platform"},
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_D4s_v5"},
            "storageProfile": {
                "imageReference": {
                    "publisher": "MicrosoftWindowsDesktop",
                    "offer": "windows-11",
                    "sku": "win11-25h2-avd",
                    "version": "latest",
                },
                "osDisk": {"createOption": "FromImage", "deleteOption": "Delete"},
            },
            "osProfile": {
                "computerName": "office-src",
                "adminUsername": "operator",
                "adminPassword": "Not-a-real-secret-1",
            },
            "securityProfile": {"securityType": "Standard"},
            "networkProfile": {
                "networkApiVersion": "2020-11-01",
                "networkInterfaceConfigurations": [
                    {
                        "name": "nic",
                        "properties": {
                            "primary": True,
                            "deleteOption": "Delete",
                            "ipConfigurations": [{"name": "ipconfig1", "properties": {}}],
                        },
                    }
                ],
            },
        },
    }
    world.clock.resume()
    vm = client.virtual_machines.begin_create_or_update(SOURCE_RG, SOURCE_VM, body).result()
    world.clock.pause()
    emu = world.emulator.emu
    source_id = str(vm.id)
    runtime = vm_runtime(emu, source_id)
    assert runtime is not None
    assert runtime.power == "running"
    # It exists before the factory and belongs to its owner, not to any build: its VM, NIC
    # and OS disk are the customer's, as if the scenario had seeded them.
    group = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{SOURCE_RG}/".lower()
    owned = [
        str(d["id"]) for d in emu.store.all() if str(d.get("id", "")).lower().startswith(group)
    ]
    assert len(owned) >= 3, owned
    for rid in owned:
        emu.mark_seeded(rid)
    return source_id


def test_source_vm_clone_customises_the_source_and_captures_a_clone() -> None:
    with local_world(catalogue=CATALOGUES / "source_vm_clone.yaml") as world:
        source_id = _create_source_vm(world)
        emu = world.emulator.emu
        source_disk = vm_runtime(emu, source_id).os_disk_id  # type: ignore[union-attr]

        status = run_build(world, "e2e-clone", "clone-1")

        assert status["runtimeStatus"] == "Completed", status.get("output")
        out = status["output"]
        # The source VM stays: same OS disk, running, customised, never sysprepped.
        runtime = vm_runtime(emu, source_id)
        assert runtime is not None, "the authoritative source VM was deleted"
        assert runtime.power == "running"
        assert runtime.os_disk_id == source_disk
        guest = guest_of(emu, source_id)
        assert guest is not None
        assert guest.apps.get("7zip.7zip") == "24.08"
        assert guest.apps.get("git") == "2.45.1"
        assert not guest.sysprepped
        # The capture came from the clone, which carried the customisation.
        version = staged_version(world, out)
        captured = guest_state_for_version(emu, version["id"])
        assert captured is not None
        assert captured.apps.get("7zip.7zip") == "24.08"
        assert captured.sysprepped
        source = version["properties"]["storageProfile"]["source"]
        source_ref = source.get("virtualMachineId") or source.get("id") or ""
        assert source_ref.rsplit("/", 1)[-1].startswith("vmclone-"), source
        # Clone VM, its NIC and disk, the snapshot: all gone.
        assert_nothing_left(world, out["build_id"])
        assert emu.store.exists(source_id)


# -- 5. base sources: a session-host snapshot, an existing gallery version -----------------------
def test_build_from_a_session_host_snapshot_leaves_the_host_untouched() -> None:
    host_id = vm_id("rg-avd", "avd-kw-0")
    with local_world(catalogue=CATALOGUES / "session_host_snapshot.yaml") as world:
        emu = world.emulator.emu
        before = guest_of(emu, host_id)
        assert before is not None
        apps_before = dict(before.apps)
        disk_before = vm_runtime(emu, host_id).os_disk_id  # type: ignore[union-attr]

        status = run_build(world, "e2e-from-host", "from-host")

        assert status["runtimeStatus"] == "Completed", status.get("output")
        out = status["output"]
        assert out["manifest"]["base"]["kind"] == "snapshot"
        version = staged_version(world, out)
        captured = guest_state_for_version(emu, version["id"])
        assert captured is not None
        assert captured.apps.get("git") == "2.45.1"
        # The session host itself is never touched.
        host = vm_runtime(emu, host_id)
        assert host is not None
        assert host.power == "running"
        assert host.os_disk_id == disk_before
        after = guest_of(emu, host_id)
        assert after is not None
        assert dict(after.apps) == apps_before
        assert not after.sysprepped
        run_commands = [
            str(d.get("id"))
            for d in emu.store.all()
            if str(d.get("id", "")).lower().startswith(host_id.lower() + "/runcommands/")
        ]
        assert run_commands == []
        assert_nothing_left(world, out["build_id"])


def _scenario_with_base_version() -> dict[str, Any]:
    scenario: dict[str, Any] = yaml.safe_load(DEFAULT_SCENARIO.read_text())
    scenario["galleries"].append(
        {
            "name": "gal_e2e_base",
            "resource_group": BUILD_RG,
            "location": "westeurope",
            "images": [
                {
                    "name": "base-win11",
                    "os_type": "Windows",
                    "os_state": "Generalized",
                    "hyper_v_generation": "V2",
                    "security_type": "TrustedLaunchSupported",
                    "publisher": "Contoso",
                    "offer": "avd-e2e-base",
                    "sku": "base",
                }
            ],
        }
    )
    scenario.setdefault("extensions", {})["gallery_versions"] = [
        {
            "gallery": "gal_e2e_base",
            "image": "base-win11",
            "version": "1.0.0",
            "resource_group": BUILD_RG,
            "regions": ["westeurope", "northeurope"],
            "apps": ["7zip"],
            "base": "MicrosoftWindowsDesktop:windows-11:win11-25h2-avd:26200.7462.251205",
        }
    ]
    return scenario


def test_build_from_an_existing_gallery_version() -> None:
    with local_world(
        _scenario_with_base_version(), catalogue=CATALOGUES / "gallery_version.yaml"
    ) as world:
        emu = world.emulator.emu
        status = run_build(world, "e2e-layered", "layered")

        assert status["runtimeStatus"] == "Completed", status.get("output")
        out = status["output"]
        base = out["manifest"]["base"]
        assert base["kind"] == "gallery_version"
        assert base["image_version_id"].endswith(
            "/galleries/gal_e2e_base/images/base-win11/versions/1.0.0"
        )
        version = staged_version(world, out)
        assert version["tags"]["imagefactory:base-image-version"] == "1.0.0"
        captured = guest_state_for_version(emu, version["id"])
        assert captured is not None
        assert "7zip" in captured.apps  # from the base version
        assert "Microsoft.PowerBI" in captured.apps  # this build's step
        assert_nothing_left(world, out["build_id"])


# -- 6. how the end of sysprep is noticed ---------------------------------------------------------
def test_sysprep_end_is_signalled_by_event_when_a_signal_url_is_configured(
    baseline: dict[str, Any],
) -> None:
    status = baseline["status"]
    assert status["runtimeStatus"] == "Completed", status.get("output")
    assert status["output"]["sysprep_signal"] == "event"
    assert baseline["report"]["orphans"] == []
    assert baseline["report"]["ownership"].get("taggedUnknownBuild", []) == []
    assert baseline["left"] == []


def test_sysprep_end_is_noticed_by_polling_without_a_signal_url() -> None:
    with local_world(catalogue=TWO_REGIONS) as world:
        # local_world points SYSPREP_SIGNAL_URL at the devhost once it runs; the app reads its
        # settings at call time, so clearing it here means "no signal URL configured".
        os.environ["SYSPREP_SIGNAL_URL"] = ""
        status = run_build(world, OFFICE, "poll")

        assert status["runtimeStatus"] == "Completed", status.get("output")
        out = status["output"]
        assert out["sysprep_signal"] == "poll"
        sysprep_events = world.emulator.emu.events.events(names.EG_SYSPREP_FINISHED)
        assert sysprep_events == []
        staged_version(world, out)
        assert_nothing_left(world, out["build_id"])


# -- 7. the janitor cleans up after a terminated build --------------------------------------------
def test_terminated_build_is_cleaned_up_by_the_janitor() -> None:
    with local_world(catalogue=TWO_REGIONS) as world:
        request_build(world, OFFICE, "to-terminate")
        world.clock.resume()
        build_id = await_build_id(world, OFFICE, "to-terminate")
        instance = names.build_instance_id(build_id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            custom = (world.status(instance) or {}).get("customStatus") or {}
            if custom.get("phase") == "customise":
                break
            time.sleep(0.02)
        else:
            pytest.fail("the build never reached its customisation steps")
        world.clock.pause()
        left = build_resources(world, build_id)
        assert any("/virtualMachines/" in r for r in left), left

        world.host.engine.terminate(instance, "operator stopped the build")
        assert world.host.engine.wait_for(instance, 30)["runtimeStatus"] == "Terminated"
        world.clock.resume()
        world.host.engine.wait_idle(real_timeout=60)
        assert build_resources(world, build_id), "nothing left for the janitor to clean"

        code, body = post_json(f"{world.host.url}/admin/functions/build_janitor", {})
        assert code == 202, body
        janitor = world.host.engine.wait_for(f"janitor:{build_id}", 120)
        assert janitor["runtimeStatus"] == "Completed", janitor
        assert janitor["output"]["left"] == []
        world.host.engine.wait_idle(real_timeout=60)
        assert_nothing_left(world, build_id)


# -- 8. the manifest tells what changed between two builds ----------------------------------------
@pytest.fixture(scope="module")
def app_update(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two builds of one image; between them the 7-Zip step moves from 24.08 to 24.09."""
    catalogue = tmp_path_factory.mktemp("app-update") / "images.yaml"
    text = TWO_REGIONS.read_text()
    changed = text.replace('version: "24.08"', 'version: "24.09"', 1)
    assert changed != text
    catalogue.write_text(text)
    with local_world(catalogue=catalogue) as world:
        first = run_build(world, OFFICE, "v-24-08")
        catalogue.write_text(changed)
        stat = catalogue.stat()  # the app re-reads the catalogue when its mtime changes
        os.utime(catalogue, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        second = run_build(world, OFFICE, "v-24-09")
        builds = [first, second]
        return {
            "builds": builds,
            "tags": [
                staged_version(world, b["output"])["tags"]
                for b in builds
                if b["runtimeStatus"] == "Completed"
            ],
            "report": world.emulator.emu.report(),
            "left": [r for b in builds for r in build_resources(world, b["build_id"])],
        }


def test_two_builds_record_their_manifests_and_the_changed_step(app_update: dict[str, Any]) -> None:
    first, second = app_update["builds"]
    assert first["runtimeStatus"] == "Completed", first.get("output")
    assert second["runtimeStatus"] == "Completed", second.get("output")
    # The guest really changed: the second build's health check lists the new version.
    assert "App.7zip.7zip=24.08" in first["output"]["health"]
    assert "App.7zip.7zip=24.09" in second["output"]["health"]

    old, new = (manifest_from_tags(tags) for tags in app_update["tags"])
    assert (old.build_id, new.build_id) == (first["build_id"], second["build_id"])
    diff = diff_manifests(old, new)
    assert (diff.old_version, diff.new_version) == (old.version, new.version)
    assert old.version != new.version
    assert diff.base is None
    assert diff.catalogue_hashes is not None
    assert diff.steps_added == ()
    assert diff.steps_removed == ()
    assert not diff.steps_reordered
    # Exactly one step changed, the first (7-Zip); the registry step is the same.
    assert len(diff.steps_changed) == 1, diff.render()
    assert diff.steps_changed[0] == old.steps[0].name == new.steps[0].name
    assert old.steps[1].content_hash == new.steps[1].content_hash
    assert app_update["report"]["orphans"] == []
    assert app_update["report"]["ownership"].get("taggedUnknownBuild", []) == []
    assert app_update["left"] == []


def test_manifest_diff_names_the_catalogue_step_and_the_app_version(
    app_update: dict[str, Any],
) -> None:
    old, new = (manifest_from_tags(tags) for tags in app_update["tags"])
    diff = diff_manifests(old, new)
    assert diff.steps_changed == ("install-7zip.7zip",), diff.render()
    assert diff.apps_added == {}
    assert diff.apps_removed == {}
    assert diff.apps_changed == {"7zip.7zip": ("24.08", "24.09")}, diff.render()


# -- 9. Trusted Launch is refused by catalogue validation -----------------------------------------
def test_trusted_launch_image_is_refused_before_any_vm_exists() -> None:
    with local_world(catalogue=CATALOGUES / "trusted_launch.yaml") as world:
        world.clock.resume()
        code, body = post_json(f"{world.host.url}/api/images/e2e-trusted/builds", {"key": "tl"})
        # The caller did nothing wrong: the app's own catalogue is broken (a 503 naming why).
        assert code == 503, body
        assert body["error"]["code"] == "CatalogueUnavailable"
        message = body["error"]["message"]
        assert "images[0].gallery.security_type" in message, body
        assert "BitLocker" in message, body
        assert "TrustedLaunchSupported" in message, body

        # A build started past the edge (say, from an older queue) fails at its plan.
        instance = world.host.engine.start_new(
            names.ORCH_BUILD_IMAGE,
            "build:e2e-trusted-00000001",
            {"image": "e2e-trusted", "build_id": "e2e-trusted-00000001", "request": {}},
        )
        status = world.host.engine.wait_for(instance, 60)
        assert status["runtimeStatus"] == "Failed"
        assert "images[0].gallery.security_type" in str(status["output"]), status["output"]
        world.host.engine.wait_idle(real_timeout=30)
        assert vm_puts(world) == 0
        assert world.host.engine.query(instance_id_prefix="build-request:")[0] == []
        report = world.emulator.emu.report()
        assert report["orphans"] == []
