"""The sysprep "finished" signal end to end: a hint by managed identity, never a key.

The real app on the devhost against the emulator, in virtual time:

- with function keys on, the VM's post to a keyless signal URL is refused (401), and the build
  still completes: the post was only a hint and the build noticed the shutdown by polling;
- with ``BUILD_VM_IDENTITY_ID`` the build VM holds that identity, its sysprep script takes a
  token from IMDS and publishes ``ImageFactory.SysprepFinished`` to the app's topic, which
  delivers it to the app: the build notices the end by event;
- a VM whose identity is gone gets no token, publishes nothing, and the build completes by
  polling.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from devhost.demo import World, local_world
from emulator.compute import VM_TYPE
from shared import names
from tests.e2e.conftest import post_json, queue_state
from tests.e2e.test_build_scenarios import (
    OFFICE,
    TWO_REGIONS,
    assert_nothing_left,
    await_end,
    run_build,
    staged_version,
)

pytestmark = pytest.mark.slow

KEY = "e2e-function-key-not-a-secret"
IDENTITY = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-image-factory"
    "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-imagefactory-build-vm"
)


class VmWatch:
    """Records, when each VM boots, the identities it holds; may strip them (as an operator's
    ``az vm identity remove`` would)."""

    def __init__(self, world: World, strip: bool = False) -> None:
        self.world = world
        self.strip = strip
        self.identities: dict[str, list[str]] = {}
        world.emulator.emu.add_listener("vm.power", self._on_power)

    def _on_power(self, vm_id: str, state: str) -> None:
        doc = self.world.emulator.emu.store.get(vm_id)
        if state != "running" or doc is None or str(doc.get("type")) != VM_TYPE:
            return
        held = (doc.get("identity") or {}).get("userAssignedIdentities") or {}
        self.identities[vm_id] = list(held)
        if self.strip:
            doc.pop("identity", None)


def _sysprep_signals(world: World) -> list[dict[str, Any]]:
    return [e.data for e in world.emulator.emu.events.events(names.EG_SYSPREP_FINISHED)]


def _script_output(world: World) -> str:
    """What the scripts run on the VMs printed so far (the guests' executions)."""
    from emulator.compute import vm_runtime

    texts = []
    for doc in world.emulator.emu.store.all():
        if str(doc.get("type")) == VM_TYPE:
            runtime = vm_runtime(world.emulator.emu, str(doc["id"]))
            for execution in runtime.executions if runtime else []:
                texts.append(execution.output())
    return "\n".join(texts)


def test_a_refused_signal_post_never_fails_the_build() -> None:
    # Function keys on: the VM's keyless post to the Event Grid webhook gets 401.
    with local_world(catalogue=TWO_REGIONS, extra_settings={"DEVHOST_FUNCTION_KEY": KEY}) as world:
        outputs: list[str] = []

        # Read the guests' output after every script step, at that virtual instant: a real-time
        # look can miss a whole script now that virtual time runs ahead between events.
        def keep_sysprep_output(vm_id: str, _kind: str) -> None:
            text = _script_output(world)
            if text:
                outputs.append(text)

        world.emulator.emu.add_listener("vm.guest", keep_sysprep_output)

        code, body = post_json(
            f"{world.host.url}/api/images/{OFFICE}/builds",
            {"key": "keys-on", "reason": "e2e"},
            headers={"x-functions-key": KEY},
        )
        assert code == 202, body
        world.clock.resume()
        build_id = _await_build_id(world, "keys-on")
        status = await_end(world, build_id)
        world.host.engine.wait_idle(real_timeout=30)

        assert status["runtimeStatus"] == "Completed", status.get("output")
        out = status["output"]
        assert out["sysprep_signal"] == "poll"
        # The post was made and refused: the script said so, and went on to shut down.
        assert any("the sysprep signal was not sent" in t for t in outputs), outputs
        staged_version(world, out)
        assert_nothing_left(world, out["build_id"])


def _await_build_id(world: World, key: str, real_timeout: float = 30.0) -> str:
    deadline = time.monotonic() + real_timeout
    while time.monotonic() < deadline:
        running = queue_state(world, OFFICE).get("running") or {}
        if running.get("key") == f"manual:{key}" and running.get("build_id"):
            return str(running["build_id"])
        time.sleep(0.02)
    raise TimeoutError(f"no build started for key {key}")


def test_the_sysprep_event_comes_through_the_topic_with_the_vms_token() -> None:
    with local_world(
        catalogue=TWO_REGIONS, extra_settings={"BUILD_VM_IDENTITY_ID": IDENTITY}
    ) as world:
        watch = VmWatch(world)
        status = run_build(world, OFFICE, "identity")

        assert status["runtimeStatus"] == "Completed", status.get("output")
        out = status["output"]
        assert out["sysprep_signal"] == "event"
        # The build VM held the identity, and the topic accepted its token-bearing publish.
        assert list(watch.identities.values()) == [[IDENTITY]], watch.identities
        (vm_id,) = watch.identities
        assert [s["vm_id"] for s in _sysprep_signals(world)] == [vm_id]
        assert _sysprep_signals(world)[0]["build_id"] == out["build_id"]
        staged_version(world, out)
        assert_nothing_left(world, out["build_id"])


def test_a_vm_without_its_identity_gets_no_token_and_the_build_polls() -> None:
    with local_world(
        catalogue=TWO_REGIONS, extra_settings={"BUILD_VM_IDENTITY_ID": IDENTITY}
    ) as world:
        watch = VmWatch(world, strip=True)
        status = run_build(world, OFFICE, "identity-gone")

        assert status["runtimeStatus"] == "Completed", status.get("output")
        assert watch.identities, "no build VM booted"
        out = status["output"]
        assert out["sysprep_signal"] == "poll"
        assert _sysprep_signals(world) == []  # no token: nothing was published
        staged_version(world, out)
        assert_nothing_left(world, out["build_id"])
