"""Ring-by-ring promotion end to end, in virtual time: the gate holds a broken version, and a
later version never overtakes an earlier one still soaking in a ring.

Same set-up as tests/e2e/test_validation.py (the real app); the version starts approved, and
each ring promotes it through the lifecycle's ``promote_ring`` action. Rings: ``test``
(hp-office-test, no users) then ``broad``
(hp-knowledge-workers, 30 simulated users). The connection signal comes from the emulator's
Log Analytics workspace (``LOG_ANALYTICS_WORKSPACE_ID``).
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from devhost.demo import World, local_world
from shared.names import rings_instance_id
from tests.e2e.conftest import post_json
from tests.e2e.test_validation import (
    APP,
    CATALOGUE,
    IMAGE,
    SUB,
    VERSION_ID,
    scenario_with_staged_version,
)

pytestmark = pytest.mark.slow

WORKSPACE = (
    f"/subscriptions/{SUB}/resourceGroups/rg-ops/providers/Microsoft.OperationalInsights"
    "/workspaces/law-avd"
)
BROAD = (
    f"/subscriptions/{SUB}/resourceGroups/rg-avd/providers/"
    "Microsoft.DesktopVirtualization/hostPools/hp-knowledge-workers"
)
TEST = BROAD.replace("hp-knowledge-workers", "hp-office-test")
SETTINGS = {"LOG_ANALYTICS_WORKSPACE_ID": WORKSPACE}


def ring_catalogue(tmp_path: Path, soak: int = 60, broad_soak: int = 180) -> Path:
    raw = yaml.safe_load(CATALOGUE.read_text())
    image = next(i for i in raw["images"] if i["name"] == IMAGE)
    rings = copy.deepcopy(image["rings"])
    rings[0]["soak_minutes"] = soak
    rings[1]["soak_minutes"] = broad_soak
    image["rings"] = rings
    path = tmp_path / "images.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def two_versions() -> dict[str, Any]:
    sc = scenario_with_staged_version("approved")
    versions = sc["galleries"][-1]["images"][0]["versions"]
    second = copy.deepcopy(versions[0])
    second["version"] = "1.0.1"
    versions.append(second)
    return sc


def promote(world: World, version: str, **body: Any) -> None:
    code, answer = post_json(
        f"{world.host.url}/api/images/{IMAGE}/versions/{version}/rings",
        {"reason": "e2e", "change_ticket": "CHG0002", **body},
    )
    assert code == 202, answer


def promote_later(world: World, version: str, **body: Any) -> None:
    """Promote ``version`` at virtual 06:30: time is held there while the request is made."""
    at_half_past = threading.Event()

    def hold() -> None:
        world.clock.pause()
        at_half_past.set()

    world.emulator.emu.schedule(timedelta(minutes=30), hold, "test:promote-later")
    world.clock.resume()
    assert at_half_past.wait(60), "virtual 06:30 never came"
    promote(world, version, **body)
    world.clock.resume()


def template_image(world: World, pool_id: str) -> str | None:
    doc = world.emulator.emu.store.get(pool_id)
    assert doc is not None
    raw = doc["properties"].get("vmTemplate")
    return json.loads(raw).get("customImageId") if raw else None


def when_template_is_set(world: World, pool_id: str, action: Callable[[], None]) -> None:
    """Run ``action`` in the emulator as soon as the pool's template names a custom image
    (what a scale-out after the ring's activation would do)."""
    emu = world.emulator.emu

    def check() -> None:
        from emulator.arm import ArmError

        if template_image(world, pool_id):
            try:
                action()
                return
            except ArmError:  # the version is still being updated: scale out a bit later
                pass
        emu.schedule(timedelta(minutes=5), check, "test:wait-template")

    emu.schedule(timedelta(minutes=5), check, "test:wait-template")


def test_broken_version_is_held_by_the_ring_gate(tmp_path: Path) -> None:
    sc = scenario_with_staged_version("approved")
    # The version is broken: hosts made from it fail every connection.
    sc["faults"] = [
        {"type": "flag", "kind": "session_connection_fails", "match": {"image": "*/versions/1.0.0"}}
    ]
    with local_world(sc, ring_catalogue(tmp_path), app_spec=APP, extra_settings=SETTINGS) as w:
        from emulator.autoscale import scale_out

        emu = w.emulator.emu
        # Autoscale adds a host to the broad ring's pool once its template is the new version.
        when_template_is_set(w, BROAD, lambda: scale_out(emu, BROAD, 1))
        promote(w, "1.0.0")
        w.clock.resume()
        status = w.host.engine.wait_for(rings_instance_id(IMAGE, "1.0.0"), 240)

        out = status["output"]
        assert status["runtimeStatus"] == "Completed", status
        assert out["status"] == "held", out
        assert out["ring"] == "broad"
        assert "health gate failed" in out["reason"]
        assert "connections failed" in out["reason"]
        test_ring, broad_ring = out["rings"]
        assert test_ring["passed"] is True
        assert broad_ring["passed"] is False
        assert broad_ring["failed_connections"] > 0
        assert broad_ring["connection_signal"] == "log-analytics"
        # The hold is visible where operators look: the custom status and the pool's tags.
        assert status["customStatus"]["state"] == "held"
        assert emu.store.get(BROAD)["tags"]["imagefactory:ring-state"] == "held"
        assert emu.store.get(TEST)["tags"]["imagefactory:ring-state"] == "passed"
        # The autoscaled host was made from the exact version, not from "latest".
        created = emu.report()["autoscale"]["created"]
        assert [c["template"] for c in created] == [{"id": VERSION_ID}]


def test_later_version_does_not_overtake_one_still_soaking(tmp_path: Path) -> None:
    catalogue = ring_catalogue(tmp_path, soak=60, broad_soak=60)
    with local_world(two_versions(), catalogue, app_spec=APP, extra_settings=SETTINGS) as w:
        promote(w, "1.0.0")
        # Half an hour later, while 1.0.0 soaks in the test ring, 1.0.1 is promoted too.
        promote_later(w, "1.0.1")
        first = w.host.engine.wait_for(rings_instance_id(IMAGE, "1.0.0"), 240)
        second = w.host.engine.wait_for(rings_instance_id(IMAGE, "1.0.1"), 240)

        assert first["output"]["status"] == "promoted", first["output"]
        assert second["output"]["status"] == "promoted", (second["output"], second["customStatus"])
        a = {r["ring"]: r for r in first["output"]["rings"]}
        b = {r["ring"]: r for r in second["output"]["rings"]}
        # 1.0.1 entered each ring only after 1.0.0's soak there had ended.
        assert b["test"]["started"] >= a["test"]["ended"]
        assert b["broad"]["started"] >= a["broad"]["ended"]
        # The rings end on the later version, never back on the earlier one.
        assert template_image(w, TEST) == VERSION_ID.replace("1.0.0", "1.0.1")
        assert template_image(w, BROAD) == VERSION_ID.replace("1.0.0", "1.0.1")


def test_force_lets_a_later_version_pass_a_soaking_one(tmp_path: Path) -> None:
    catalogue = ring_catalogue(tmp_path, soak=120, broad_soak=60)
    with local_world(two_versions(), catalogue, app_spec=APP, extra_settings=SETTINGS) as w:
        promote(w, "1.0.0")
        promote_later(w, "1.0.1", force=True)
        first = w.host.engine.wait_for(rings_instance_id(IMAGE, "1.0.0"), 240)
        second = w.host.engine.wait_for(rings_instance_id(IMAGE, "1.0.1"), 240)

        b = {r["ring"]: r for r in second["output"]["rings"]}
        a = {r["ring"]: r for r in (first["output"].get("rings") or [])}
        assert b["test"]["started"] < a["test"]["ended"]
        # The operator's word holds for every ring of the promotion.
        assert b["broad"]["started"] < a["broad"]["ended"]
        assert second["output"]["status"] == "promoted", second["output"]
