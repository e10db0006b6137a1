"""Event-first waits end to end: Azure's resource events end a build's waits, polls back them up.

The real app on the devhost against the emulator, in virtual time. The emulator publishes
``Microsoft.Resources.Resource*`` events when an operation completes and delivers them as Event
Grid does (seconds later, unordered, now and then twice); the local world subscribes
``on_resource_event`` to them. Judged by what Azure (the emulator) saw: how many ARM requests
the build needed, which events were lost or repeated, and what is left at the end.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from devhost.demo import World, local_world
from orchestrators.wait import POLLS_PER_EXECUTION
from tests.e2e.conftest import post_json
from tests.e2e.test_build_scenarios import (
    BUILD_RG,
    OFFICE,
    SUBSCRIPTION,
    TWO_REGIONS,
    assert_nothing_left,
    run_build,
    staged_version,
)

pytestmark = pytest.mark.slow

# A build with every wait polling every 10 s made about 725 ARM requests (docs/performance.md).
MAX_REQUESTS_PER_BUILD = 250
RUN_COMMAND_WRITE = "Microsoft.Compute/virtualMachines/runCommands/write"
VERSION_WRITE = "Microsoft.Compute/galleries/images/versions/write"


def _arm_requests(world: World) -> int:
    requests = world.emulator.emu.metrics.requests
    return sum(n for op, n in requests.items() if not op.startswith("admin:"))


def _delivered(world: World, subscription: str) -> list[Any]:
    return [
        d
        for d in world.emulator.emu.events.deliveries
        if d.subscription == subscription and d.status is not None and 200 <= d.status < 300
    ]


def _operations(world: World, op: str) -> list[Any]:
    emu = world.emulator.emu
    with emu.lock:
        return sorted(
            (o for o in emu.lro.operations.values() if o.op.lower() == op.lower()),
            key=lambda o: o.start,
        )


def _vm_creates(world: World) -> int:
    return world.emulator.emu.metrics.requests.get("Microsoft.Compute/virtualMachines/write", 0)


def test_a_build_completes_by_resource_events_with_few_arm_requests() -> None:
    with local_world(catalogue=TWO_REGIONS) as world:
        status = run_build(world, OFFICE, "by-events")

        assert status["runtimeStatus"] == "Completed", status.get("output")
        staged_version(world, status["output"])
        assert_nothing_left(world, status["build_id"])
        # The whole world's requests (the build, its queue and the marketplace watch).
        assert _arm_requests(world) <= MAX_REQUESTS_PER_BUILD, world.emulator.emu.metrics.requests
        # The waits learnt of the ends by events: delivered, and taken by the waits' instances.
        assert len(_delivered(world, "resource-events")) >= 10
        waits, _ = world.host.engine.query(instance_id_prefix="rwait:")
        kinds = {w["instanceId"].split(":")[1] for w in waits}
        assert {"write", "deallocate", "delete"} <= kinds


def test_a_lost_resource_event_is_caught_by_the_safety_poll() -> None:
    safety = 60
    with local_world(
        catalogue=TWO_REGIONS, extra_settings={"SAFETY_POLL_SECONDS": str(safety)}
    ) as world:
        emu = world.emulator.emu
        # Every event about the guardrail run command is lost on its way to the app.
        emu.faults.add(
            {
                "type": "flag",
                "kind": "eventgrid_event_lost",
                "match": {"operation": RUN_COMMAND_WRITE, "subject": "*/runCommands/guard-*"},
            }
        )
        status = run_build(world, OFFICE, "lost-event")

        assert status["runtimeStatus"] == "Completed", status.get("output")
        lost = [r for r in emu.events.lost if r.subscription == "resource-events"]
        assert lost, "the fault never fired"
        # The next operation began within one safety poll of the unannounced end (plus the
        # time to start it), not at the wait's deadline.
        runs = _operations(world, RUN_COMMAND_WRITE)
        guard = next(o for o in runs if "/runcommands/guard-bitlocker" in o.resource_id.lower())
        later = [o.start for o in runs if o.start >= guard.end]
        assert later, "nothing ran after the guardrail"
        assert later[0] - guard.end <= timedelta(seconds=safety + 10)
        assert_nothing_left(world, status["build_id"])


def test_duplicate_events_are_harmless() -> None:
    with local_world(catalogue=TWO_REGIONS) as world:
        emu = world.emulator.emu
        emu.faults.add({"type": "flag", "kind": "eventgrid_event_duplicated"})
        status = run_build(world, OFFICE, "twice")

        assert status["runtimeStatus"] == "Completed", status.get("output")
        assert emu.events.stats.duplicated >= 10
        delivered = _delivered(world, "resource-events")
        ids = [d.event_id for d in delivered]
        assert len(ids) > len(set(ids))  # the same events arrived twice
        assert _vm_creates(world) == 1
        staged_version(world, status["output"])
        assert_nothing_left(world, status["build_id"])


def _resource_event(resource: str, subscription: str) -> dict[str, Any]:
    return {
        "id": f"ev-{resource.rsplit('/', 1)[-1]}",
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "subject": resource,
        "eventTime": "2026-01-05T07:00:00Z",
        "dataVersion": "2",
        "metadataVersion": "1",
        "topic": f"/subscriptions/{subscription}",
        "data": {
            "resourceUri": resource,
            "operationName": "Microsoft.Compute/virtualMachines/write",
            "status": "Succeeded",
            "subscriptionId": subscription,
        },
    }


def test_events_about_no_build_or_a_foreign_subscription_are_acknowledged_and_ignored() -> None:
    with local_world(catalogue=TWO_REGIONS) as world:
        ours = (
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{BUILD_RG}/providers/"
            "Microsoft.Compute/virtualMachines/vm-of-no-build"
        )
        other = "99999999-9999-9999-9999-999999999999"
        foreign = ours.replace(SUBSCRIPTION, other)
        for event in (_resource_event(ours, SUBSCRIPTION), _resource_event(foreign, other)):
            code, body = post_json(
                world.webhook("on_resource_event"), [event], {"aeg-event-type": "Notification"}
            )
            assert code in (200, 202), body
        world.host.engine.wait_idle(real_timeout=30)
        waits, _ = world.host.engine.query(instance_id_prefix="rwait:")
        assert waits == []


def test_a_wait_needs_no_event_to_survive_its_continue_as_new() -> None:
    # Every event about the gallery version is lost, as an event raised while the wait
    # continues as new is dropped: the version's waits poll through replication, continuing
    # as new every POLLS_PER_EXECUTION polls, and still see the end.
    safety = 60
    with local_world(
        catalogue=TWO_REGIONS, extra_settings={"SAFETY_POLL_SECONDS": str(safety)}
    ) as world:
        emu = world.emulator.emu
        emu.faults.add(
            {"type": "flag", "kind": "eventgrid_event_lost", "match": {"operation": VERSION_WRITE}}
        )
        status = run_build(world, OFFICE, "no-version-events")

        assert status["runtimeStatus"] == "Completed", status.get("output")
        (create,) = _operations(world, VERSION_WRITE)
        # Long enough for the wait to have continued as new at least once.
        assert create.end - create.start > timedelta(seconds=safety * POLLS_PER_EXECUTION)
        assert [r for r in emu.events.lost if r.subscription == "resource-events"]
        staged_version(world, status["output"])
        assert_nothing_left(world, status["build_id"])


def test_without_resource_events_every_wait_polls_as_before() -> None:
    with local_world(catalogue=TWO_REGIONS, resource_events=False) as world:
        status = run_build(world, OFFICE, "polling")

        assert status["runtimeStatus"] == "Completed", status.get("output")
        assert _delivered(world, "resource-events") == []
        waits, _ = world.host.engine.query(instance_id_prefix="rwait:")
        assert waits == []
        assert _arm_requests(world) > MAX_REQUESTS_PER_BUILD  # what events save
        assert_nothing_left(world, status["build_id"])
