"""The version lifecycle end to end: real app on the devhost, emulator, virtual time.

Judged by what Azure (the emulator) holds after each step: each version's state tags and
``excludeFromLatest`` flags, which version ``latest`` resolves to in every region (what a VM
created from the definition without a version gets), and the host pool's ``vmTemplate``.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from devhost.demo import ROOT, local_world
from devhost.host import DevHost
from shared.names import activation_instance_id, approval_timer_instance_id
from tests.e2e.lifecycle_kit import (
    ALICE,
    BOB,
    CATALOGUE,
    HOST_POOL_ID,
    IMAGE,
    OPS,
    READER,
    activate,
    approve,
    azure_snapshot,
    call,
    host_pool_image,
    latest,
    lifecycle_events,
    rollback,
    scenario,
    set_state,
    state_of,
    version_doc,
    version_id,
    versions_view,
    wait_instance,
)
from tests.e2e.test_build_scenarios import await_build_id, await_end

pytestmark = pytest.mark.slow

BOTH = ("westeurope", "northeurope")


def _everywhere(version: str | None) -> dict[str, str | None]:
    return dict.fromkeys(BOTH, version)


def test_build_approve_activate_roll_back_with_latest_checked_at_every_step() -> None:
    with local_world(scenario({"1.0.0": "active"}, "1.0.0"), CATALOGUE) as world:
        world.clock.resume()
        assert latest(world) == _everywhere("1.0.0")

        # Alice asks for a build: it is staged, tagged with her name, excluded from latest.
        code, body = call(
            world,
            "POST",
            f"images/{IMAGE}/builds",
            {"key": "lc-1", "reason": "e2e", "requested_by": "alice@contoso.com"},
            ALICE,
        )
        assert code == 202, body
        build = await_end(world, await_build_id(world, IMAGE, "lc-1"))
        assert build["runtimeStatus"] == "Completed", build.get("output")
        new = build["output"]["version"]
        assert new == "1.0.1"
        assert state_of(world, new) == "staged"
        assert version_doc(world, new)["tags"]["imagefactory:requested-by"] == "alice@contoso.com"
        assert latest(world) == _everywhere("1.0.0")

        # Validation (its own capability) moves it through validating to validated.
        set_state(world, new, "start_validation")
        set_state(world, new, "pass_validation")
        assert state_of(world, new) == "validated"
        assert latest(world) == _everywhere("1.0.0")

        # Four eyes: Alice may not approve her own build; Bob may.
        code, body = approve(world, new, ALICE)
        assert code == 403, body
        assert body["error"]["code"] == "SelfApprovalRefused"
        assert state_of(world, new) == "validated"
        code, first = approve(world, new, BOB)
        assert code == 200, first
        assert first["state"] == "approved"
        assert first["actor"] == "bob@contoso.com"
        tags = version_doc(world, new)["tags"]
        assert tags["imagefactory:state"] == "approved"
        assert tags["imagefactory:state-by"] == "bob@contoso.com"
        assert tags["imagefactory:change-ticket"] == "CHG-100"
        assert latest(world) == _everywhere("1.0.0")
        # The same decision again answers the first result; another decision is a conflict.
        assert approve(world, new, BOB) == (200, first)
        code, body = approve(world, new, BOB, decision="reject")
        assert code == 409, body
        assert body["error"]["state"] == "approved"
        assert "activate" in body["error"]["allowed_actions"]

        # Activation: the new version is latest everywhere, the old one is its backup, the
        # host pool deploys exactly the new version.
        code, body = activate(world, new)
        assert code == 202, body
        done = wait_instance(world, activation_instance_id(IMAGE))
        assert done["runtimeStatus"] == "Completed", done.get("output")
        assert done["output"]["status"] == "active"
        assert done["output"]["latest"] == _everywhere(new)
        assert latest(world) == _everywhere(new)
        assert state_of(world, new) == "active"
        assert state_of(world, "1.0.0") == "backup"
        old = version_doc(world, "1.0.0")["tags"]
        backup_at = datetime.fromisoformat(old["imagefactory:state-at"])
        until = datetime.fromisoformat(old["imagefactory:backup-until"])
        assert until - backup_at == timedelta(days=30)
        assert host_pool_image(world) == version_id(new)
        view = versions_view(world)
        assert view["latest"] == _everywhere(new)
        assert {v["version"]: v["state"] for v in view["versions"]} == {
            "1.0.0": "backup",
            new: "active",
        }

        # Rollback: back to the backup, the new one marked rolled-back, host pool follows.
        code, body = rollback(world)
        assert code == 202, body
        assert body["version"] == "1.0.0"
        done = wait_instance(world, activation_instance_id(IMAGE))
        assert done["runtimeStatus"] == "Completed", done.get("output")
        assert latest(world) == _everywhere("1.0.0")
        assert state_of(world, "1.0.0") == "active"
        assert state_of(world, new) == "rolled-back"
        assert host_pool_image(world) == version_id("1.0.0")

        events = lifecycle_events(world)
        assert ("Staged", new) in events
        for expected in (
            ("Validating", new),
            ("Validated", new),
            ("Approved", new),
            ("Active", new),
            ("Backup", "1.0.0"),
            ("RolledBack", new),
            ("Active", "1.0.0"),
        ):
            assert expected in events, (expected, events)
        assert events.index(("Active", new)) < events.index(("RolledBack", new))


def test_refusals_answer_4xx_and_change_nothing_in_azure() -> None:
    states = {"1.0.0": "active", "1.1.0": "validated", "1.2.0": "approved"}
    with local_world(scenario(states, "1.0.0"), CATALOGUE) as world:
        world.clock.resume()
        before = azure_snapshot(world)

        # Who: no principal, a principal without the role.
        assert approve(world, "1.1.0", "")[0] == 401
        code, body = approve(world, "1.1.0", READER)
        assert code == 403
        assert body["error"]["missing_role"] == "Approver"
        assert activate(world, "1.2.0", BOB)[0] == 403
        # What: bad input names the field; unknown things are 404.
        code, body = call(
            world,
            "POST",
            f"images/{IMAGE}/versions/1.1.0/approval",
            {"decision": "maybe"},
            BOB,
        )
        assert code == 400
        fields = {d["field"] for d in body["error"]["details"]}
        assert fields == {"decision", "change_ticket"}
        code, body = call(world, "POST", f"images/{IMAGE}/activation", {"version": "1.x"}, OPS)
        assert code == 400
        assert "version" in {d["field"] for d in body["error"]["details"]}
        assert approve(world, "9.9.9", BOB)[0] == 404
        assert call(world, "POST", "images/nope/activation", {"version": "1.0.0"}, OPS)[0] == 404
        # When: self-approval, deciding a decided version, activating a validated one,
        # rolling back with no backup.
        code, body = approve(world, "1.1.0", ALICE)
        assert code == 403
        assert body["error"]["code"] == "SelfApprovalRefused"
        code, body = approve(world, "1.2.0", BOB)
        assert code == 409
        assert body["error"]["state"] == "approved"
        code, body = activate(world, "1.1.0")
        assert code == 409
        assert body["error"]["code"] == "VersionNotApproved"
        assert body["error"]["state"] == "validated"
        assert set(body["error"]["allowed_actions"]) >= {"approve", "reject"}
        code, body = rollback(world)
        assert code == 409
        assert body["error"]["code"] == "NoBackup"
        assert body["error"]["state"] == "active"
        code, body = rollback(world, to_version="1.1.0")
        assert code == 409
        assert body["error"]["code"] == "NotARollbackTarget"
        code, body = rollback(world, change_ticket="")
        assert code == 400
        assert {d["field"] for d in body["error"]["details"]} == {"change_ticket"}

        assert azure_snapshot(world) == before
        assert world.status(activation_instance_id(IMAGE)) is None
        assert lifecycle_events(world) == []


def test_an_approval_that_times_out_is_rejected_by_the_app() -> None:
    with local_world(scenario({"1.0.0": "active", "1.1.0": "validating"}), CATALOGUE) as world:
        world.emulator.emu.events.subscribe(
            {
                "name": "validated",
                "endpoint": world.webhook("on_image_version_validated"),
                "includedEventTypes": ["ImageFactory.ImageVersionValidated"],
            }
        )
        world.clock.resume()
        started = world.clock.now()
        set_state(world, "1.1.0", "pass_validation")
        done = wait_instance(world, approval_timer_instance_id(IMAGE, "1.1.0"))
        assert done["runtimeStatus"] == "Completed", done.get("output")
        assert done["output"]["status"] == "expired"
        tags = version_doc(world, "1.1.0")["tags"]
        assert tags["imagefactory:state"] == "rejected"
        assert tags["imagefactory:state-by"] == "imagefactory"
        assert "3 days" in tags["imagefactory:state-reason"]
        decided = datetime.fromisoformat(tags["imagefactory:state-at"])
        assert decided - started >= timedelta(days=3)
        assert latest(world) == _everywhere("1.0.0")
        assert ("Rejected", "1.1.0") in lifecycle_events(world)
        # Too late now: a decision on an expired version is a conflict.
        code, body = approve(world, "1.1.0", BOB)
        assert code == 409
        assert body["error"]["state"] == "rejected"


def test_two_activations_at_once_one_runs_the_other_is_409() -> None:
    states = {"1.0.0": "active", "1.1.0": "approved", "1.2.0": "approved"}
    with local_world(scenario(states, "1.0.0"), CATALOGUE) as world:
        # Clock held: the first activation cannot finish before the second arrives.
        answers: dict[str, tuple[int, object]] = {}

        def go(version: str) -> None:
            answers[version] = activate(world, version)

        threads = [threading.Thread(target=go, args=(v,)) for v in ("1.1.0", "1.2.0")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(code for code, _ in answers.values())
        assert codes == [202, 409], answers
        loser = next(body for code, body in answers.values() if code == 409)
        assert loser["error"]["code"] == "ActivationInProgress"  # type: ignore[index]
        winner = next(v for v, (code, _) in answers.items() if code == 202)
        world.clock.resume()
        done = wait_instance(world, activation_instance_id(IMAGE))
        assert done["runtimeStatus"] == "Completed", done.get("output")
        assert [v for v in ("1.0.0", "1.1.0", "1.2.0") if state_of(world, v) == "active"] == [
            winner
        ]
        assert latest(world) == _everywhere(winner)
        assert host_pool_image(world) == version_id(winner)


def test_rollback_from_a_broken_active_version() -> None:
    with local_world(scenario({"1.0.0": "backup", "1.1.0": "active"}, "1.1.0"), CATALOGUE) as world:
        broken = world.emulator.emu.store.get(version_id("1.1.0"))
        assert broken is not None
        broken["properties"]["provisioningState"] = "Failed"  # its replicas are gone
        world.clock.resume()
        code, body = rollback(world)
        assert code == 202, body
        done = wait_instance(world, activation_instance_id(IMAGE))
        assert done["runtimeStatus"] == "Completed", done.get("output")
        assert state_of(world, "1.0.0") == "active"
        assert state_of(world, "1.1.0") == "rolled-back"
        assert latest(world) == _everywhere("1.0.0")
        assert host_pool_image(world) == version_id("1.0.0")
        assert version_doc(world, "1.0.0")["tags"]["imagefactory:change-ticket"] == "CHG-300"


def _crash(host: DevHost) -> None:
    host.timers.stop()
    host.server.stop()
    host.engine.stop(wait=False)
    host.invoker.stop()


def test_host_killed_between_gallery_and_host_pool_update_finishes_consistent(
    tmp_path: Path,
) -> None:
    store = tmp_path / "devhost.sqlite"
    states = {"1.0.0": "active", "1.1.0": "approved"}
    with local_world(scenario(states, "1.0.0"), CATALOGUE, store=str(store)) as world:
        emu = world.emulator.emu
        # The host pool update fails once the gallery is done; its retry waits on a durable
        # timer that the held clock never fires: the host dies right there.
        emu.faults.add({"type": "http", "op": "Microsoft.DesktopVirtualization/hostPools/write"})
        code, body = activate(world, "1.1.0")
        assert code == 202, body
        instance = activation_instance_id(IMAGE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            fired = sum(r.get("fired", 0) for r in emu.faults.rules())
            if fired:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the host pool update was never attempted")
        assert state_of(world, "1.1.0") == "active"
        assert state_of(world, "1.0.0") == "backup"
        assert host_pool_image(world) == version_id("1.0.0")  # not yet

        old = world.host
        _crash(old)
        emu.faults.clear()
        new = DevHost(
            app_dir=ROOT, store=str(store), clock=world.clock, settings=world.settings
        ).start()
        world.host = new
        try:
            world.clock.resume()
            done = wait_instance(world, instance)
            assert done["runtimeStatus"] == "Completed", done.get("output")
            assert state_of(world, "1.1.0") == "active"
            assert state_of(world, "1.0.0") == "backup"
            assert host_pool_image(world) == version_id("1.1.0")
            assert latest(world) == _everywhere("1.1.0")
            assert emu.store.get(HOST_POOL_ID) is not None
        finally:
            new.stop()


def test_auto_approval_after_the_catalogue_days(tmp_path: Path) -> None:
    catalogue = tmp_path / "lifecycle.yaml"
    catalogue.write_text(
        CATALOGUE.read_text().replace(
            "approval_timeout_days: 3", "approval_timeout_days: 3\n      auto_approve_after_days: 1"
        )
    )
    with local_world(scenario({"1.0.0": "active", "1.1.0": "validating"}), catalogue) as world:
        world.emulator.emu.events.subscribe(
            {
                "name": "validated",
                "endpoint": world.webhook("on_image_version_validated"),
                "includedEventTypes": ["ImageFactory.ImageVersionValidated"],
            }
        )
        world.clock.resume()
        started = world.clock.now()
        set_state(world, "1.1.0", "pass_validation")
        done = wait_instance(world, approval_timer_instance_id(IMAGE, "1.1.0"))
        assert done["runtimeStatus"] == "Completed", done.get("output")
        assert done["output"]["status"] == "auto-approved"
        tags = version_doc(world, "1.1.0")["tags"]
        assert tags["imagefactory:state"] == "approved"
        assert tags["imagefactory:state-by"] == "imagefactory"
        decided = datetime.fromisoformat(tags["imagefactory:state-at"])
        assert timedelta(days=1) <= decided - started < timedelta(days=3)
        assert latest(world) == _everywhere("1.0.0")  # approved is not active


def test_a_missing_host_pool_stops_the_activation_before_the_gallery_changes() -> None:
    states = {"1.0.0": "active", "1.1.0": "approved"}
    with local_world(scenario(states, host_pool=False), CATALOGUE) as world:
        world.clock.resume()
        before = azure_snapshot(world)
        code, body = activate(world, "1.1.0")
        assert code == 202, body
        done = wait_instance(world, activation_instance_id(IMAGE))
        assert done["runtimeStatus"] == "Completed", done.get("output")
        assert done["output"]["status"] == "refused"
        assert "hp-lc" in done["output"]["reason"]
        assert azure_snapshot(world) == before
        assert latest(world) == _everywhere("1.0.0")


def test_rollback_to_a_deprecated_version_while_the_active_one_is_gone() -> None:
    states = {"0.9.0": "deprecated", "1.0.0": "backup", "1.1.0": "active"}
    with local_world(scenario(states, "1.1.0"), CATALOGUE) as world:
        emu = world.emulator.emu
        emu.store.delete(version_id("1.1.0"))  # deleted behind the factory's back
        world.clock.resume()
        code, body = rollback(world, to_version="0.9.0")
        assert code == 202, body
        done = wait_instance(world, activation_instance_id(IMAGE))
        assert done["runtimeStatus"] == "Completed", done.get("output")
        assert state_of(world, "0.9.0") == "active"
        assert state_of(world, "1.0.0") == "backup"  # a named target leaves the backup alone
        assert latest(world) == _everywhere("0.9.0")
        assert host_pool_image(world) == version_id("0.9.0")


def test_the_lifecycle_demo_runs_to_the_rollback(capsys: pytest.CaptureFixture[str]) -> None:
    from devhost.demo_lifecycle import run

    assert run(as_json=True) == 0
    result = json.loads(capsys.readouterr().out)
    timeline = [(e["version"], e["state"]) for e in result["timeline"]]
    version = result["version"]
    assert timeline == [
        (version, "staged"),
        (version, "validating"),
        (version, "validated"),
        (version, "approved"),
        (version, "active"),
        ("1.0.0", "backup"),
        (version, "rolled-back"),
        ("1.0.0", "active"),
    ]
    assert [s["latest"]["westeurope"] for s in result["steps"]] == [
        "1.0.0",
        "1.0.0",
        "1.0.0",
        "1.0.0",
        "1.0.0",
        version,
        "1.0.0",
    ]
