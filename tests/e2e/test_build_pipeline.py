"""The image build pipeline end to end: real app, devhost, emulator, virtual time.

Each test drives the app only from its edges (the emulator's marketplace, Event Grid, HTTP)
and judges it by what Azure (the emulator) ends up holding: a staged, replicated gallery
version with a manifest, and no temporary resource left behind.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from devhost.demo import (
    World,
    first_marketplace_image,
    follow_build,
    local_world,
    publish_newer_marketplace_version,
)
from tests.e2e.conftest import ROOT, emulator_get, post_json, queue_state

CATALOGUE = ROOT / "catalogue" / "images.yaml"

pytestmark = pytest.mark.slow


def _is_build(instance: dict[str, Any]) -> bool:
    """A build instance (``build:<id>``), not one of its waits or its clean-up."""
    return str(instance["instanceId"]).count(":") == 1


def _image() -> dict[str, Any]:
    return first_marketplace_image(CATALOGUE)


def _leftovers(world: World) -> Any:
    report = world.emulator.emu.report()
    return report.get("orphans")


def _gallery_version(world: World, version_id: str) -> dict[str, Any]:
    doc = world.emulator.emu.store.get(version_id)
    assert doc is not None, f"no gallery version {version_id}"
    return doc


def _vm_creates(world: World) -> int:
    metrics = world.emulator.emu.metrics.as_dict()
    ops = metrics.get("operations") or metrics
    return sum(
        v.get("total", 0) if isinstance(v, dict) else 0
        for k, v in ops.items()
        if "virtualmachines/write" in k.lower()
    )


def test_marketplace_image_to_staged_replicated_version_with_nothing_left(world: World) -> None:
    image = _image()
    publish_newer_marketplace_version(world, image)
    world.clock.resume()

    status = follow_build(world, image["name"], echo=False)

    assert status["runtimeStatus"] == "Completed", status.get("output")
    out = status["output"]
    assert out["status"] == "staged"
    version = _gallery_version(world, out["version_id"])
    profile = version["properties"]["publishingProfile"]
    assert profile["excludeFromLatest"] is True  # staged: nothing picks it up as latest
    assert all(r.get("excludeFromLatest", True) for r in profile["targetRegions"])
    tags = version["tags"]
    assert tags["imagefactory:state"] == "staged"
    assert tags["imagefactory:build-id"] == out["build_id"]
    assert tags["imagefactory:base-image-version"].endswith(out["manifest"]["base"]["version"])
    regions = out["regions"]
    assert regions
    assert all(r["state"] == "Completed" for r in regions.values())
    # Windows 11 25H2 comes with BitLocker on: the guardrails turned it off before sysprep.
    assert "BitLockerProtectionStatus=Off" in out["health"]
    assert [s["state"] for s in out["manifest"]["steps"]] == ["Succeeded"] * len(
        out["manifest"]["steps"]
    )
    assert out["cleanup"]["left"] == []
    assert not _leftovers(world)
    staged = [
        e
        for e in world.emulator.emu.events.events("ImageFactory.ImageVersionStaged")
        if e.data.get("build_id") == out["build_id"]
    ]
    assert len(staged) == 1


def test_failing_customisation_step_fails_the_build_and_cleans_up(tmp_path: Any) -> None:
    text = CATALOGUE.read_text()
    broken = text.replace(
        "          - Write-Output 'time zone redirection on'",
        "          - Write-Output 'time zone redirection on'\n"
        '          - throw "licence server unreachable"',
        1,
    )
    assert broken != text, "the test expects the bundled catalogue's script step"
    catalogue = tmp_path / "images.yaml"
    catalogue.write_text(broken)
    with local_world(catalogue=catalogue) as world:
        image = first_marketplace_image(catalogue)
        publish_newer_marketplace_version(world, image)
        world.clock.resume()
        status = follow_build(world, image["name"], echo=False)
        assert status["runtimeStatus"] == "Failed"
        assert "licence server unreachable" in str(status["output"])
        assert "timezone-redirection" in str(status["output"])
        assert not _leftovers(world)


def test_vm_provisioning_failure_is_retried() -> None:
    with local_world() as world:
        world.emulator.emu.faults.add(
            {"type": "flag", "kind": "vm_provisioning_failure", "count": 1}
        )
        image = _image()
        publish_newer_marketplace_version(world, image)
        world.clock.resume()
        status = follow_build(world, image["name"], echo=False)
        assert status["runtimeStatus"] == "Completed", status.get("output")
        assert not _leftovers(world)


def test_same_marketplace_event_twice_builds_once(world: World) -> None:
    image = _image()
    event = {
        "id": "evt-1",
        "eventType": "ImageFactory.MarketplaceImagePublished",
        "subject": f"marketplace/{image['publisher']}/{image['offer']}/{image['sku']}/1.2.3",
        "eventTime": world.clock.now().isoformat(),
        "dataVersion": "1",
        "topic": f"/subscriptions/{world.settings['AZURE_SUBSCRIPTION_ID']}/resourceGroups/eg"
        "/providers/Microsoft.EventGrid/topics/imagefactory",
        "data": {
            "publisher": image["publisher"],
            "offer": image["offer"],
            "sku": image["sku"],
            "version": publish_newer_marketplace_version(world, image).rsplit(" ", 1)[1],
            "location": image["location"],
        },
    }
    hook = world.webhook("on_marketplace_image_published")
    headers = {"aeg-event-type": "Notification"}
    for _ in range(2):
        code, _body = post_json(hook, [event], headers)
        assert code in (200, 202)
    world.clock.resume()
    first = follow_build(world, image["name"], echo=False)
    assert first["runtimeStatus"] == "Completed", first.get("output")
    world.host.engine.wait_idle(real_timeout=30)
    builds, _ = world.host.engine.query(instance_id_prefix="build:")
    assert len([b for b in builds if _is_build(b)]) == 1
    recent = queue_state(world, image["name"]).get("recent") or []
    assert any(r.get("dropped") == "duplicate request" for r in recent)


def test_two_builds_requested_at_once_run_one_after_the_other(world: World) -> None:
    image = _image()
    url = f"{world.host.url}/api/images/{image['name']}/builds"
    codes = [post_json(url, {"key": f"chg-{n}", "reason": "change"})[0] for n in (1, 2)]
    assert codes == [202, 202]
    world.clock.resume()
    deadline = time.monotonic() + 240
    done: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        builds, _ = world.host.engine.query(instance_id_prefix="build:")
        done = [b for b in builds if _is_build(b) and b["runtimeStatus"] == "Completed"]
        if len(done) == 2:
            break
        time.sleep(0.05)
    assert len(done) == 2
    a, b = sorted(done, key=lambda s: s["createdTime"])
    # Never in parallel on the same image definition: the second starts after the first ends.
    assert b["createdTime"] >= a["lastUpdatedTime"]
    versions = sorted(world.status(x["instanceId"])["output"]["version"] for x in (a, b))
    assert versions[0] != versions[1]


def test_unknown_image_over_http_is_a_404_with_a_json_error(world: World) -> None:
    code, body = post_json(f"{world.host.url}/api/images/no-such-image/builds", {})
    assert code == 404
    assert body["error"]["code"] == "ImageNotFound"


def test_bad_build_request_names_the_field(world: World) -> None:
    image = _image()
    code, body = post_json(
        f"{world.host.url}/api/images/{image['name']}/builds", {"base_version": "latest!"}
    )
    assert code == 400
    assert any(d["field"] == "base_version" for d in body["error"]["details"])


def test_foreign_or_malformed_events_never_start_a_build(world: World) -> None:
    image = _image()
    hook = world.webhook("on_marketplace_image_published")
    base = {
        "id": "e",
        "eventType": "ImageFactory.MarketplaceImagePublished",
        "subject": "marketplace/x",
        "eventTime": world.clock.now().isoformat(),
        "dataVersion": "1",
    }
    foreign_topic = (
        "/subscriptions/99999999-9999-9999-9999-999999999999/resourceGroups/eg"
        "/providers/Microsoft.EventGrid/topics/imagefactory"
    )
    data = {
        "publisher": image["publisher"],
        "offer": image["offer"],
        "sku": image["sku"],
        "version": "1.2.3",
    }
    bad = [
        {**base, "topic": foreign_topic, "data": data},
        {**base, "eventType": "Something.Else", "data": data},
        {**base, "data": {"publisher": image["publisher"]}},
    ]
    code, _ = post_json(hook, bad, {"aeg-event-type": "Notification"})
    assert code in (200, 202)
    world.host.engine.wait_idle(real_timeout=30)
    instances, _ = world.host.engine.query(instance_id_prefix="build-request:")
    assert instances == []
    assert emulator_get(world, "/_emulator/health")["status"] == "ok"
