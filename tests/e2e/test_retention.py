"""Retention against the emulator, in virtual time: what is in use stays, the rest goes.

The scenario seeds one image's versions with lifecycle tags (state, state-at) and two host pools
in two resource groups: pool A's session hosts run the active version and its vmTemplate names
a rejected one; pool B's hosts run a deprecated one. Judged by what the emulator holds after
the run, and by the run's own result.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devhost.demo import ROOT, World, local_world
from devhost.host import DevHost
from shared.domain.resources import (
    TAG_RETAIN_UNTIL,
    TAG_STATE,
    TAG_STATE_AT,
    TAG_VALIDATION_ID,
)
from shared.names import retention_instance_id
from tests.e2e.conftest import get_json, post_json

pytestmark = pytest.mark.slow

SUB = "00000000-0000-0000-0000-000000000001"
START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
CATALOGUE = ROOT / "tests" / "e2e" / "catalogues" / "retention.yaml"
DEFINITION = (
    f"/subscriptions/{SUB}/resourceGroups/rg-avd-images/providers/Microsoft.Compute"
    "/galleries/gal_retention/images/e2e-retained"
)
BASE = "MicrosoftWindowsDesktop:windows-11:win11-25h2-avd:26200.7171.251105"
TERMINAL = {"Completed", "Failed", "Terminated"}


def _vid(version: str) -> str:
    return f"{DEFINITION}/versions/{version}"


def _tags(state: str, days_ago: float) -> dict[str, str]:
    at = START - timedelta(days=days_ago)
    return {TAG_STATE: state, TAG_STATE_AT: at.isoformat().replace("+00:00", "Z")}


def _version(name: str, state: str, days_ago: float, **extra: Any) -> dict[str, Any]:
    return {
        "version": name,
        "regions": ["westeurope", "northeurope"],
        "exclude_from_latest": state != "active",
        "base": BASE,
        "tags": _tags(state, days_ago),
        **extra,
    }


# What the planner must decide, and why (keep_versions 1, backup 7 days, staged 14 days).
EXPECTED = {
    "1.0.7": ("keep", "awaiting-validation"),  # staged yesterday
    "1.0.6": ("keep", "active"),
    "1.0.5": ("keep", "backup"),  # backup since 2 days
    "1.0.4": ("keep", "in-use"),  # deprecated, but pool B's hosts run it
    "1.0.3": ("keep", "in-use"),  # rejected, but pool A's vmTemplate names it
    "1.0.2": ("deprecate-now-delete-later", "not-needed"),  # rolled back, deletion blocked
    "1.0.1": ("delete", "failed"),
    "1.0.0": ("delete", "not-needed"),  # validated, older than the active one
    "0.9.0": ("delete", "not-needed"),  # backup for 30 days
}


def scenario() -> dict[str, Any]:
    return {
        "name": "retention",
        "start_time": START.isoformat(),
        "subscriptions": [{"id": SUB}],
        "regions": ["westeurope", "northeurope"],
        "marketplace": [
            {
                "publisher": "MicrosoftWindowsDesktop",
                "offer": "windows-11",
                "sku": "win11-25h2-avd",
                "versions": ["26200.7171.251105"],
                "guest": {"free_disk_gb": 95, "disk_size_gb": 127},
            }
        ],
        "galleries": [
            {
                "name": "gal_retention",
                "resource_group": "rg-avd-images",
                "location": "westeurope",
                "images": [
                    {
                        "name": "e2e-retained",
                        "security_type": "TrustedLaunchSupported",
                        "publisher": "Contoso",
                        "offer": "avd-e2e",
                        "sku": "retained",
                        "versions": [
                            _version("1.0.7", "staged", 1),
                            _version("1.0.6", "active", 2),
                            _version("1.0.5", "backup", 2),
                            _version(
                                "1.0.4", "deprecated", 10, end_of_life=START - timedelta(days=1)
                            ),
                            _version("1.0.3", "rejected", 20),
                            _version(
                                "1.0.2",
                                "rolled-back",
                                25,
                                end_of_life=START + timedelta(days=30),
                                block_deletion_before_end_of_life=True,
                            ),
                            _version("1.0.1", "failed", 3),
                            _version("1.0.0", "validated", 40),
                            _version("0.9.0", "backup", 30),
                        ],
                    }
                ],
            }
        ],
        "host_pools": [
            {
                "name": "hp-retention-a",
                "resource_group": "rg-avd",
                "location": "westeurope",
                "vm_template": {"imageType": "CustomImage", "customImageId": _vid("1.0.3")},
                "hosts": [{"name_prefix": "hra", "count": 2, "image_reference": _vid("1.0.6")}],
            },
            {
                "name": "hp-retention-b",
                "resource_group": "rg-avd-b",
                "location": "westeurope",
                "hosts": [{"name_prefix": "hrb", "count": 1, "image_reference": _vid("1.0.4")}],
            },
        ],
        "latency": {"gallery.version.delete": {"mean": "3m", "jitter": 0.0}},
    }


@pytest.fixture
def world() -> Iterator[World]:
    with local_world(scenario(), CATALOGUE) as w:
        yield w


def versions(world: World) -> dict[str, dict[str, Any]]:
    store = world.emulator.emu.store
    docs = store.list(DEFINITION + "/versions", "Microsoft.Compute/galleries/images/versions")
    return {str(d["name"]): copy.deepcopy(d) for d in docs}


def start_run(world: World, body: dict[str, Any]) -> str:
    status, answer = post_json(f"{world.host.url}/api/retention/runs", body)
    assert status == 202, answer
    assert answer["status_url"].endswith(f"/api/retention/runs/{answer['run_id']}")
    return str(answer["run_id"])


def await_run(world: World, run_id: str, real_timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + real_timeout
    while time.monotonic() < deadline:
        status = world.status(retention_instance_id(run_id)) or {}
        if status.get("runtimeStatus") in TERMINAL:
            return status
        time.sleep(0.02)
    raise TimeoutError(f"retention run {run_id} did not end in {real_timeout} s")


def plan_of(result: dict[str, Any], name: str = "e2e-retained") -> dict[str, Any]:
    (image,) = [i for i in result["images"] if i["image"] == name]
    return dict(image)


def decisions(result: dict[str, Any]) -> dict[str, tuple[str, str]]:
    image = plan_of(result)
    return {d["version"]: (d["action"], d["code"]) for d in image["decisions"]}


def hold_before_deleting(world: World, version: str) -> None:
    """The version's first read by the delete step fails with 503 once: the run waits on a
    durable timer, which does not fire while the virtual clock is paused."""
    world.emulator.emu.faults.add(
        {
            "type": "http",
            "op": "Microsoft.Compute/galleries/images/versions/read",
            "resource": f"*/versions/{version}",
            "status": 503,
            "count": 1,
        }
    )


def wait_for_hold(world: World, run_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        custom = (world.status(retention_instance_id(run_id)) or {}).get("customStatus") or {}
        if custom.get("phase") == "apply":
            break
        time.sleep(0.02)
    world.host.engine.wait_idle(real_timeout=60)


def assert_applied(world: World, result: dict[str, Any]) -> None:
    assert decisions(result) == {v: EXPECTED[v] for v in EXPECTED}
    left = versions(world)
    assert sorted(left) == ["1.0.2", "1.0.3", "1.0.4", "1.0.5", "1.0.6", "1.0.7"]
    blocked = left["1.0.2"]
    assert blocked["tags"][TAG_STATE] == "deprecated"
    profile = blocked["properties"]["publishingProfile"]
    assert profile["excludeFromLatest"] is True
    assert profile["endOfLifeDate"].startswith((START + timedelta(days=30)).date().isoformat())
    assert blocked["properties"]["safetyProfile"]["blockDeletionBeforeEndOfLife"] is True
    for kept in ("1.0.3", "1.0.4", "1.0.5", "1.0.6", "1.0.7"):
        assert left[kept]["tags"][TAG_STATE] == EXPECTED_STATE[kept]


EXPECTED_STATE = {
    "1.0.3": "rejected",
    "1.0.4": "deprecated",
    "1.0.5": "backup",
    "1.0.6": "active",
    "1.0.7": "staged",
}


def test_versions_in_use_by_hosts_in_several_pools_stay_and_the_rest_goes(world: World) -> None:
    run_id = start_run(world, {})
    world.clock.resume()
    status = await_run(world, run_id)
    assert status["runtimeStatus"] == "Completed", status.get("output")
    result = status["output"]
    assert result["usage_complete"] is True
    assert result["errors"] == []
    assert_applied(world, result)
    missing = plan_of(result, "e2e-missing")
    assert (
        missing["refused"]
        == f"image definition {DEFINITION[:-12]}e2e-missing is not in the gallery"
    )
    assert missing["decisions"] == []
    # 0.9.0, 1.0.0 and 1.0.1 freed: 127 GB each in each of the two regions.
    assert result["freed_gb_by_region"] == {"northeurope": 381.0, "westeurope": 381.0}
    assert result["counts"]["deleted"] == 3
    assert result["counts"]["deprecated"] == 1
    (report,) = world.emulator.emu.events.events("ImageFactory.RetentionCompleted")
    assert report.subject == f"retention/{run_id}"
    assert report.data["counts"]["deleted"] == 3
    assert report.data["freed_gb"] == 762.0
    # A second run finds nothing more to do.
    again = await_run(world, start_run(world, {}))["output"]
    assert again["counts"]["deleted"] == 0
    assert again["counts"]["deprecated"] == 0
    assert len(world.emulator.emu.events.events("ImageFactory.RetentionCompleted")) == 2
    assert sorted(versions(world)) == ["1.0.2", "1.0.3", "1.0.4", "1.0.5", "1.0.6", "1.0.7"]


def test_a_version_deleted_meanwhile_counts_as_deleted(world: World) -> None:
    hold_before_deleting(world, "1.0.0")
    run_id = start_run(world, {})
    wait_for_hold(world, run_id)
    assert "1.0.0" in versions(world)
    world.emulator.emu.store.delete(_vid("1.0.0"))  # someone else deleted it
    world.clock.resume()
    status = await_run(world, run_id)
    assert status["runtimeStatus"] == "Completed", status.get("output")
    result = status["output"]
    image = plan_of(result)
    outcome = next(d["outcome"] for d in image["decisions"] if d["version"] == "1.0.0")
    assert outcome == {"deleted": True, "already_gone": True}
    assert result["counts"]["already_gone"] == 1
    assert result["counts"]["deleted"] == 2
    assert_applied(world, result)


def test_a_run_interrupted_mid_way_is_resumed_by_a_new_host(tmp_path: Any) -> None:
    store = tmp_path / "devhost.sqlite"
    with local_world(scenario(), CATALOGUE, store=str(store)) as world:
        hold_before_deleting(world, "1.0.0")
        run_id = start_run(world, {})
        wait_for_hold(world, run_id)
        assert (world.status(retention_instance_id(run_id)) or {})["runtimeStatus"] == "Running"
        assert "1.0.0" in versions(world)  # held before its deletion
        old = world.host
        old.timers.stop()
        old.server.stop()
        old.engine.stop(wait=False)
        old.invoker.stop()
        new = DevHost(
            app_dir=ROOT, store=str(store), clock=world.clock, settings=world.settings
        ).start()
        world.host = new
        try:
            world.clock.resume()
            status = await_run(world, run_id)
            assert status["runtimeStatus"] == "Completed", status.get("output")
            assert status["output"]["errors"] == []
            assert_applied(world, status["output"])
            deletes = world.emulator.emu.metrics.requests.get(
                "Microsoft.Compute/galleries/images/versions/delete", 0
            )
            assert deletes == 3  # each planned version deleted once, none twice
        finally:
            new.stop()


def test_a_dry_run_changes_nothing_and_returns_the_plan(world: World) -> None:
    before = versions(world)
    pools_before = copy.deepcopy(
        world.emulator.emu.store.list("/subscriptions", "Microsoft.DesktopVirtualization/hostPools")
    )
    world.clock.resume()
    status, plan = get_json(f"{world.host.url}/api/retention/plan")
    assert status == 200, plan
    assert plan["dry_run"] is True
    assert decisions(plan) == EXPECTED
    assert plan["freed_gb_by_region"] == {"northeurope": 381.0, "westeurope": 381.0}
    reasons = {d["version"]: d["reason"] for d in plan_of(plan)["decisions"]}
    assert "session-host" in reasons["1.0.4"]
    assert "host-pool-template" in reasons["1.0.3"]
    assert "blockDeletionBeforeEndOfLife" in reasons["1.0.2"]
    status, answer = post_json(f"{world.host.url}/api/retention/runs", {"dry_run": True})
    assert status == 202
    assert await_run(world, answer["run_id"])["output"]["counts"]["deleted"] == 3
    world.host.engine.wait_idle(real_timeout=30)
    assert versions(world) == before
    assert (
        world.emulator.emu.store.list("/subscriptions", "Microsoft.DesktopVirtualization/hostPools")
        == pools_before
    )
    writes = [
        op
        for op, n in world.emulator.emu.metrics.requests.items()
        if n and op.endswith(("/write", "/delete")) and "galleries" in op
    ]
    assert writes == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"dry_run": "yes"}, "dry_run"),
        ({"images": ["no-such-image"]}, "images[0]"),
        ({"images": []}, "images"),
        ({"dryrun": True}, "dryrun"),
    ],
)
def test_bad_run_requests_are_refused_naming_the_field(
    world: World, body: dict[str, Any], field: str
) -> None:
    status, answer = post_json(f"{world.host.url}/api/retention/runs", body)
    assert status == 400, answer
    assert field in [d["field"] for d in answer["error"]["details"]]
    status, answer = get_json(f"{world.host.url}/api/retention/plan?image=nope")
    assert status == 400
    assert answer["error"]["details"][0]["field"] == "image"


def _disk(world: World, name: str, tags: dict[str, str]) -> str:
    """A small empty managed disk carrying ``tags`` (created through the SDK, as Azure would)."""
    from azure.mgmt.compute import models

    from shared.azure.clients import compute_client
    from shared.settings import load_settings

    client = compute_client(load_settings())
    body = {
        "location": "westeurope",
        "tags": tags,
        "sku": {"name": "Standard_LRS"},
        "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 8},
    }
    client.disks.begin_create_or_update("rg-avd", name, models.Disk(body)).result()
    return f"/subscriptions/{SUB}/resourceGroups/rg-avd/providers/Microsoft.Compute/disks/{name}"


def test_leftovers_of_interrupted_validations_and_expired_retention_are_removed(
    world: World,
) -> None:
    past = (START - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    future = (START + timedelta(days=5)).isoformat().replace("+00:00", "Z")
    world.clock.resume()
    expired = _disk(world, "retained-expired", {TAG_RETAIN_UNTIL: past})
    kept = _disk(world, "retained-later", {TAG_RETAIN_UNTIL: future})
    stale = _disk(world, "validation-stale", {TAG_VALIDATION_ID: "val-gone"})
    mine = _disk(world, "not-ours", {"owner": "someone"})
    # Let more than the catalogue's orphan_min_age_hours (1) pass in virtual time.
    deadline = time.monotonic() + 60
    while world.clock.now() < START + timedelta(hours=2) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert world.clock.now() >= START + timedelta(hours=2)
    result = await_run(world, start_run(world, {}))["output"]
    rows = {r["id"]: r for r in result["leftovers"]}
    assert rows[expired]["delete"] is True
    assert rows[kept]["delete"] is False
    assert rows[stale]["delete"] is True
    assert mine not in rows  # never looked at: not tagged by this app
    store = world.emulator.emu.store
    assert store.get(expired) is None
    assert store.get(stale) is None
    assert store.get(kept) is not None
    assert store.get(mine) is not None
    assert result["counts"]["leftovers_removed"] == 2


def test_unreadable_usage_deletes_no_version(world: World) -> None:
    """Pool B cannot be read (500 on every attempt): its hosts might use any version, so no
    version is deprecated or deleted; the reason is in each image's plan."""
    world.emulator.emu.faults.add(
        {
            "type": "http",
            "op": "Microsoft.DesktopVirtualization/hostPools/read",
            "resource": "*/hostPools/hp-retention-b",
            "status": 500,
        }
    )
    before = versions(world)
    run_id = start_run(world, {"images": ["e2e-retained"]})
    world.clock.resume()
    status = await_run(world, run_id)
    assert status["runtimeStatus"] == "Completed", status.get("output")
    result = status["output"]
    assert result["usage_complete"] is False
    assert "could not be read" in plan_of(result)["refused"]
    assert result["counts"]["deleted"] == 0
    assert result["counts"]["deprecated"] == 0
    assert any("hp-retention-b" in e for e in result["errors"])
    assert [i["image"] for i in result["images"]] == ["e2e-retained"]
    world.host.engine.wait_idle(real_timeout=30)
    assert versions(world).keys() == before.keys()
    assert all(v["tags"] == before[name]["tags"] for name, v in versions(world).items())


def test_a_version_a_running_orchestration_works_on_is_kept(world: World) -> None:
    """A wait that polls 1.0.0 (as a build or validation would) holds on to it."""
    waiter = "validation:e2e-retained:val-1:wait"
    world.host.engine.start_new(
        "wait_for_operation",
        waiter,
        {
            "activity": "get_resource_state",
            "payload": {"resource_id": _vid("1.0.0")},
            "verdict": "gone",
            "args": {},
            "interval_seconds": 600,
            "deadline": (START + timedelta(days=2)).isoformat(),
            "what": "a validation waiting on 1.0.0",
        },
    )
    world.clock.resume()
    result = await_run(world, start_run(world, {"images": ["e2e-retained"]}))["output"]
    got = decisions(result)
    assert got["1.0.0"] == ("keep", "in-use")
    reason = next(d["reason"] for d in plan_of(result)["decisions"] if d["version"] == "1.0.0")
    assert f"orchestration {waiter}" in reason
    assert "1.0.0" in versions(world)
    assert result["counts"]["deleted"] == 2
    world.host.engine.terminate(waiter, "test over")


def test_a_second_applying_run_is_refused_while_one_runs(world: World) -> None:
    hold_before_deleting(world, "1.0.0")
    run_id = start_run(world, {})
    wait_for_hold(world, run_id)
    status, answer = post_json(f"{world.host.url}/api/retention/runs", {})
    assert status == 409, answer
    assert answer["error"]["instance_id"] == retention_instance_id(run_id)
    status, _ = post_json(f"{world.host.url}/api/retention/runs", {"dry_run": True})
    assert status == 202  # a dry run changes nothing: it may run beside it
    world.clock.resume()
    assert await_run(world, run_id)["runtimeStatus"] == "Completed"
    status, answer = get_json(f"{world.host.url}/api/retention/runs/{run_id}")
    assert status == 200
    assert answer["output"]["counts"]["deleted"] == 3
    assert get_json(f"{world.host.url}/api/retention/runs/run-000000000000")[0] == 404
    assert get_json(f"{world.host.url}/api/retention/runs/nope")[0] == 400
