"""The bundled catalogue and the bundled scenario agree: every image plans, win11-dev builds.

Each catalogue image is planned through the app's own ``resolve_build_plan`` activity against a
running emulator loaded with ``scenarios/default.yaml`` (the same SDK path a build takes), and
``win11-dev`` (captured from the session host ``rg-avd-dev/avd-dev-0`` of ``hp-dev-weu``) is
built end to end through the app's HTTP API. ``win11-analyst`` is layered on the newest
*active* ``win11-office`` version, which no bundled state holds (builds end *staged*): its plan
must refuse naming that, and plans once such a version exists.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from activities.build import resolve_build_plan
from devhost.demo import DEFAULT_CATALOGUE, DEFAULT_SCENARIO, local_world
from shared.domain.catalogue import load_catalogue
from shared.errors import FactoryError
from tests.e2e.test_build_scenarios import build_resources, run_build, staged_version

pytestmark = pytest.mark.slow

SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
DEV_HOST = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-avd-dev"
    "/providers/Microsoft.Compute/virtualMachines/avd-dev-0"
)
DEV_POOL = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-avd-dev"
    "/providers/Microsoft.DesktopVirtualization/hostPools/hp-dev-weu"
)
LAYERED = "win11-analyst"  # built on the newest active win11-office version


def _plan(image: str) -> dict[str, Any]:
    return resolve_build_plan({"image": image, "build_id": f"{image}-plan"})


def _catalogue_images() -> list[str]:
    return [image.name for image in load_catalogue(DEFAULT_CATALOGUE).images]


def _with_active_office_version() -> dict[str, Any]:
    """The bundled scenario plus an active win11-office version in the catalogue's gallery."""
    scenario: dict[str, Any] = yaml.safe_load(DEFAULT_SCENARIO.read_text(encoding="utf-8"))
    office = load_catalogue(DEFAULT_CATALOGUE).get("win11-office").gallery
    scenario["galleries"].append(
        {
            "name": office.gallery_name,
            "resource_group": office.resource_group,
            "location": "westeurope",
            "images": [
                {
                    "name": office.image_definition,
                    "os_type": "Windows",
                    "os_state": "Generalized",
                    "hyper_v_generation": "V2",
                    "security_type": "TrustedLaunchSupported",
                    "publisher": office.publisher,
                    "offer": office.offer,
                    "sku": office.sku,
                }
            ],
        }
    )
    scenario.setdefault("extensions", {})["gallery_versions"] = [
        {
            "gallery": office.gallery_name,
            "image": office.image_definition,
            "version": "1.0.0",
            "resource_group": office.resource_group,
            "regions": ["westeurope"],
            "apps": ["microsoft-365-apps"],
            "base": "MicrosoftWindowsDesktop:windows-11:win11-25h2-avd:26200.7462.251205",
        }
    ]
    return scenario


def test_the_bundled_scenario_holds_what_the_catalogue_names() -> None:
    with local_world() as world:
        store = world.emulator.emu.store
        host = store.get(DEV_HOST)
        assert host is not None, "the scenario has no rg-avd-dev/avd-dev-0"
        assert host["location"] == "westeurope"
        assert store.get(DEV_POOL) is not None, "the scenario has no hp-dev-weu"
        for image in load_catalogue(DEFAULT_CATALOGUE).images:
            for pool in image.host_pools:
                if pool.startswith("/"):
                    assert store.get(pool) is not None, f"{image.name}: {pool} is missing"


def test_every_catalogue_image_plans_against_the_bundled_scenario() -> None:
    images = _catalogue_images()
    assert {"win11-office", "win11-dev", LAYERED} <= set(images)
    with local_world():
        for image in images:
            if image == LAYERED:
                with pytest.raises(FactoryError, match="latest version"):
                    _plan(image)
                continue
            plan = _plan(image)
            assert plan["image"] == image
            assert plan["location"] == "westeurope"
        dev = _plan("win11-dev")
        assert dev["source"]["kind"] == "snapshot"
        assert (
            dev["source"]["snapshot_source_id"]
            .lower()
            .startswith(
                f"/subscriptions/{SUBSCRIPTION}/resourcegroups/rg-avd-dev/providers/microsoft.compute/disks/"
            )
        )
    with local_world(_with_active_office_version()):
        plan = _plan(LAYERED)
        assert plan["source"]["kind"] == "gallery_version"
        assert plan["source"]["image_version_id"].endswith("/win11-office/versions/1.0.0")


def test_win11_dev_builds_end_to_end_from_the_bundled_scenario() -> None:
    with local_world() as world:
        emu = world.emulator.emu
        host_before = copy.deepcopy(emu.store.get(DEV_HOST))
        assert host_before is not None
        status = run_build(world, "win11-dev", "catalogue-agrees")
        assert status["runtimeStatus"] == "Completed", status.get("output")
        out = status["output"]
        version = staged_version(world, out)
        assert "/images/win11-dev/versions/" in version["id"]
        # The session host is only read: its document is what it was.
        host_after = emu.store.get(DEV_HOST)
        assert host_after is not None
        assert (
            host_after["properties"]["storageProfile"]
            == host_before["properties"]["storageProfile"]
        )
        # The bundled marketplace also has a newer win11-office base, so the hourly watch may
        # start that build meanwhile: judge what this build left, not the other's work.
        assert build_resources(world, status["build_id"]) == []
        orphans = emu.report()["orphans"]
        assert [o for o in orphans if status["build_id"] in str(o)] == []
