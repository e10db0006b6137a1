"""A build survives its Functions host dying: a new host on the same store finishes it.

The devhost is stopped abruptly in the middle of a build (in process: its engine stops
without waiting for running activities and its in-memory state is dropped; the real-process
SIGKILL is covered by tests/devhost/test_restart.py). A new DevHost on the same SQLite store,
the same emulator and the same virtual clock resumes every in-flight orchestration from the
store. Judged by what Azure holds: the version is staged, the build VM was created exactly
once (create-or-get across the restart), and nothing is left behind.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from devhost.demo import ROOT, local_world
from devhost.host import DevHost
from shared.names import build_instance_id
from tests.e2e.test_build_scenarios import (
    OFFICE,
    TWO_REGIONS,
    assert_nothing_left,
    await_build_id,
    await_end,
    request_build,
    staged_version,
    vm_puts,
    vm_write_count,
)

pytestmark = pytest.mark.slow


def _crash(host: DevHost) -> None:
    """Stop a host the hard way: no draining, nothing in memory kept, the port freed."""
    host.timers.stop()
    host.server.stop()
    host.engine.stop(wait=False)
    host.invoker.stop()


@pytest.mark.parametrize(
    ("phase", "same_port"),
    [
        ("customise", False),
        ("sysprep", False),
        pytest.param("customise", True),
    ],
    ids=["customise-new-port", "sysprep-new-port", "customise-same-port"],
)
def test_devhost_killed_mid_build_is_resumed_by_a_new_host(
    tmp_path: Path, phase: str, same_port: bool
) -> None:
    store = tmp_path / "devhost.sqlite"
    with local_world(catalogue=TWO_REGIONS, store=str(store)) as world:
        if not same_port:
            # The build plan carries the sysprep signal URL, i.e. this host's address: a host
            # on another port would never hear it, so these builds notice sysprep by polling.
            os.environ["SYSPREP_SIGNAL_URL"] = ""
        key = f"restart-{phase}-{same_port}"
        request_build(world, OFFICE, key)
        world.clock.resume()
        build_id = await_build_id(world, OFFICE, key)
        instance = build_instance_id(build_id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            custom = (world.status(instance) or {}).get("customStatus") or {}
            if custom.get("phase") == phase:
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"the build never reached phase {phase}")

        world.clock.pause()
        old = world.host
        _crash(old)
        new = DevHost(
            app_dir=ROOT,
            store=str(store),
            clock=world.clock,
            settings=world.settings,
            port=old.port if same_port else 0,
        ).start()
        world.host = new
        try:
            # Event Grid follows the app to its new address.
            for sub in world.emulator.emu.events.subscriptions():
                if "/runtime/webhooks/eventgrid" in str(sub.get("endpoint", "")):
                    world.emulator.emu.events.subscribe(
                        {
                            "name": sub["name"],
                            "endpoint": str(sub["endpoint"]).replace(old.url, new.url),
                            "includedEventTypes": sub.get("includedEventTypes"),
                        }
                    )
            world.clock.resume()
            status = await_end(world, build_id)
            new.engine.wait_idle(real_timeout=30)

            assert status["runtimeStatus"] == "Completed", status.get("output")
            out = status["output"]
            staged_version(world, out)
            assert out["cleanup"]["left"] == []
            assert vm_write_count(world, f"vm-{build_id}") == 1
            assert vm_puts(world) == 1  # no other VM in this world is ever created
            builds, _ = new.engine.query(instance_id_prefix=f"build:{OFFICE}-")
            assert [b["instanceId"] for b in builds if b["instanceId"].count(":") == 1] == [
                instance
            ]
            assert_nothing_left(world, build_id)
        finally:
            new.stop()
