"""The two-process local world survives restarts of either process (real subprocesses).

The devhost (clock owner, ``--virtual-time``) and the emulator (``--clock-url``, ``--state-dir``)
run as ``python3 dev.py up`` starts them. The hourly marketplace watch notices the bundled
scenario's newer Windows 11 base and builds ``win11-office``. The devhost is killed with SIGKILL
in one phase of that build (customisation steps, the sysprep wait, replication: the ``version``
phase, whose gallery version operation ends only once every region is replicated, as on Azure)
and restarted on the same state dir: the build still completes, with exactly one build VM ever
created and nothing left behind, and virtual time never goes backwards, as both processes see it.
The figures (real seconds, virtual hours) are printed and recorded as test properties.

To kill inside a phase on a clock that jumps hours in milliseconds, the test joins the clock as
a remote participant with work due one virtual minute ahead: time never passes a participant's
due work, so it stops there until the test looks at the build and moves its due time on. Once
the build is in the phase, the test reports itself busy (time holds as for any busy
participant) and kills the devhost; after the restart it reports idle again.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.local_world.two_process import TwoProcessWorld

pytestmark = pytest.mark.slow

IMAGE = "win11-office"
HOLD = "test-phase-hold"
STEP = timedelta(minutes=1)
TERMINAL = {"Completed", "Failed", "Terminated"}


def _wait(what: str, world: TwoProcessWorld, probe: Any, real_timeout: float) -> Any:
    deadline = time.monotonic() + real_timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"{what} not within {real_timeout} s of real time\n{world.logs()}")


def _hold_in_phase(world: TwoProcessWorld, build_id: str, phase: str) -> str:
    """Walk virtual time a minute at a time until the build has been in ``phase`` for a
    minute, then hold it there; the phase it is held in."""

    def current() -> str:
        custom = world.build_status(build_id).get("customStatus") or {}
        return str(custom.get("phase") or "")

    deadline = time.monotonic() + 180
    looks_in_phase = 0
    while looks_in_phase < 2 and time.monotonic() < deadline:
        status = world.build_status(build_id)
        if status.get("runtimeStatus") in TERMINAL:
            break
        looks_in_phase = looks_in_phase + 1 if current() == phase else 0
        if looks_in_phase == 2:
            break
        stop_at = world.clock() + STEP
        world.hold_clock(HOLD, busy=False, next_due=stop_at)
        _wait("the next minute", world, lambda at=stop_at: world.clock() >= at, 60)
    world.hold_clock(HOLD, busy=True)
    return current()


def _replicating(world: TwoProcessWorld, build_id: str) -> list[str]:
    """The build's gallery versions whose creation (replication) is still under way."""
    versions = world.emulator_get(
        "/_emulator/state?type=Microsoft.Compute/galleries/images/versions"
    )["value"]
    return [
        str(v["id"])
        for v in versions
        if (v.get("tags") or {}).get("imagefactory:build-id") == build_id
        and v["properties"].get("provisioningState") != "Succeeded"
    ]


def _record(record_property: Any, figures: dict[str, Any]) -> None:
    for key, value in figures.items():
        record_property(key, value)
    print(json.dumps(figures))


@pytest.mark.parametrize("phase", ["customise", "sysprep", "version"])
def test_devhost_killed_mid_build_in_virtual_time_finishes_the_build(
    tmp_path: Path, phase: str, record_property: Any
) -> None:
    world = TwoProcessWorld(tmp_path / "world")
    started = time.monotonic()
    try:
        world.start()
        first = world.clock()
        build_id = _wait("a build", world, lambda: world.current_build(IMAGE), 120)
        world.hold_clock(HOLD, busy=False, next_due=world.clock())  # time stops here
        held_in = _hold_in_phase(world, build_id, phase)
        assert held_in == phase, f"time held in {held_in!r}, not {phase!r}"
        if phase == "version":
            assert _replicating(world, build_id), "no replication under way at the kill"
        before = world.clock()
        emulator_before = datetime.fromisoformat(world.emulator_get("/_emulator/health")["now"])

        world.kill_devhost()
        # The emulator lives on without its clock owner and its time stands still.
        alone = datetime.fromisoformat(world.emulator_get("/_emulator/health")["now"])
        assert alone >= emulator_before
        assert world.emulator is not None
        assert world.emulator.poll() is None

        world.start_devhost()
        world.wait_ready()
        resumed = world.clock()
        assert resumed >= before, (resumed, before)  # durable: resumed, never earlier
        world.release_clock(HOLD)
        status = _wait(
            "the build's end",
            world,
            lambda: (s := world.build_status(build_id)).get("runtimeStatus") in TERMINAL and s,
            240,
        )
        assert status["runtimeStatus"] == "Completed", (status.get("output"), world.logs())
        out = status["output"]
        assert out["status"] == "staged"
        assert out["cleanup"]["left"] == []
        # Exactly one build VM ever created, and created once (create-or-get across the kill).
        assert world.vm_writes() == {f"vm-{build_id}": 1}
        assert world.vm_puts() == 1
        report = world.emulator_get("/_emulator/report")
        assert report["orphans"] == [], report["orphans"]
        assert report["ownership"]["taggedUnknownBuild"] == []
        assert report["scheduleErrors"] == []
        end = world.clock()
        emulator_end = datetime.fromisoformat(world.emulator_get("/_emulator/health")["now"])
        assert emulator_end >= resumed  # the emulator's scheduler and clock moved on
        assert end >= resumed
        _record(
            record_property,
            {
                "phase": phase,
                "real_seconds": round(time.monotonic() - started, 1),
                "virtual_hours": round((end - first).total_seconds() / 3600, 2),
                "build_virtual_hours": round(
                    (
                        datetime.fromisoformat(status["lastUpdatedTime"])
                        - datetime.fromisoformat(status["createdTime"])
                    ).total_seconds()
                    / 3600,
                    2,
                ),
                "vm_puts": world.vm_puts(),
            },
        )
    finally:
        world.stop()
