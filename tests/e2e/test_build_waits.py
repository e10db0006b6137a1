"""A status poll is not the build: waits ride out transient errors; failures keep Azure's words.

End to end in virtual time (the real app on the devhost against the emulator, faults armed in
the emulator as Azure would answer): a burst of 503 and 429 answers on the gallery version's
GET while it replicates costs only time, and a failed Azure operation's error (code and
message) reaches the build's output, its custom status and its ``ImageFactory.BuildFailed``
event word for word.
"""

from __future__ import annotations

from typing import Any

import pytest

from devhost.demo import World, local_world
from shared import names
from shared.domain.naming import RUN_SYSPREP
from tests.e2e.test_build_scenarios import (
    OFFICE,
    TWO_REGIONS,
    assert_nothing_left,
    run_build,
    staged_version,
)

pytestmark = pytest.mark.slow

VERSION_OP = "Microsoft.Compute/galleries/images/versions"
ONE_VERSION = "*/images/*/versions/*"  # a single version's URL (not the list)


def _failure_event(world: World, build_id: str) -> dict[str, Any]:
    found = [
        e.data
        for e in world.emulator.emu.events.events(names.EG_BUILD_FAILED)
        if e.data.get("build_id") == build_id
    ]
    assert len(found) == 1, found
    return found[0]


def test_twenty_failed_polls_of_the_version_during_replication_cost_only_time() -> None:
    with local_world(catalogue=TWO_REGIONS) as world:
        faults = world.emulator.emu.faults
        # The first single-version GET is the create activity's "does it exist" check; the
        # next twenty are the build's polls while the version is created and replicated.
        unavailable = faults.add(
            {
                "type": "http",
                "op": f"{VERSION_OP}/read",
                "resource": ONE_VERSION,
                "status": 503,
                "after": 1,
                "count": 10,
            }
        )
        throttled = faults.add(
            {
                "type": "http",
                "op": f"{VERSION_OP}/read",
                "resource": ONE_VERSION,
                "status": 429,
                "retry_after": 120,
                "after": 1,
                "count": 10,
            }
        )
        status = run_build(world, OFFICE, "flaky-polls")

        assert status["runtimeStatus"] == "Completed", status.get("output")
        fired = {r["id"]: r["fired"] for r in faults.rules()}
        assert fired == {unavailable: 10, throttled: 10}
        out = status["output"]
        assert {r: s["state"] for r, s in out["regions"].items()} == {
            "westeurope": "Completed",
            "northeurope": "Completed",
        }
        staged_version(world, out)
        assert_nothing_left(world, out["build_id"])


def test_a_failed_version_create_reports_azures_code_and_message_everywhere() -> None:
    expected = f"OperationFailed: The operation '{VERSION_OP}/write' failed (injected fault)."
    with local_world(catalogue=TWO_REGIONS) as world:
        world.emulator.emu.faults.add(
            {"type": "lro_failure", "op": f"{VERSION_OP}/write", "count": 1}
        )
        status = run_build(world, OFFICE, "failed-lro")

        assert status["runtimeStatus"] == "Failed"
        assert expected in str(status.get("output")), status.get("output")
        custom = status.get("customStatus") or {}
        assert expected in str(custom.get("error")), custom
        event = _failure_event(world, status["build_id"])
        assert expected in event["error"], event
        assert event["image"] == OFFICE
        assert "no detail" not in str(status.get("output"))
        assert_nothing_left(world, status["build_id"])


def test_a_failed_replication_reports_azures_code_and_message_everywhere() -> None:
    expected = (
        "ReplicationJobsNotCompleted: Replication job not completed at region: 'North Europe'. "
        "Replication to region 'North Europe' failed: the copy of the image to the region's "
        "storage did not complete (injected fault)."
    )
    with local_world(catalogue=TWO_REGIONS) as world:
        world.emulator.emu.faults.add(
            {"type": "flag", "kind": "replication_fails", "match": {"region": "northeurope"}}
        )
        status = run_build(world, OFFICE, "failed-region")

        assert status["runtimeStatus"] == "Failed"
        assert expected in str(status.get("output")), status.get("output")
        assert expected in str((status.get("customStatus") or {}).get("error"))
        assert expected in _failure_event(world, status["build_id"])["error"]
        assert_nothing_left(world, status["build_id"])


def test_failed_polls_of_the_sysprep_run_command_do_not_fail_the_build() -> None:
    # The sysprep wait polls the run command and the VM itself (beside the event race): a
    # dozen 503 answers on the run command's GET in a row are polls without news.
    with local_world(catalogue=TWO_REGIONS, extra_settings={"SYSPREP_SIGNAL_URL": ""}) as world:
        rule = world.emulator.emu.faults.add(
            {
                "type": "http",
                "op": "Microsoft.Compute/virtualMachines/runCommands/read",
                "resource": f"*/runCommands/{RUN_SYSPREP}",
                "status": 503,
                "after": 1,  # the start activity's own "does it exist" GET
                "count": 12,
            }
        )
        status = run_build(world, OFFICE, "flaky-sysprep-polls")

        assert status["runtimeStatus"] == "Completed", status.get("output")
        assert {r["id"]: r["fired"] for r in world.emulator.emu.faults.rules()} == {rule: 12}
        assert status["output"]["sysprep_signal"] == "poll"
        assert_nothing_left(world, status["build_id"])
