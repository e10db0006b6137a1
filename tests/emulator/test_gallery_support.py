"""Helpers shared by the gallery, AVD and user-simulation tests (no tests of its own).

- :func:`missing_keys`: the key names of an Azure REST example that a response lacks
  (recursively); list elements are compared with the example's first element.
- :func:`wait_for`: wait (real time) while virtual time runs until a condition holds.
- :func:`make_vm`: a running VM from the small scenario's marketplace, optionally sysprepped,
  deallocated and generalized (set up in-process, so tests do not depend on run commands).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# Keys of the examples the emulator deliberately does not produce, with the reason.
IGNORED_KEYS = {
    # Only present when the client asks for disk encryption sets per region.
    "encryption": "request-driven",
    # Preview api-versions only (2025-03-01-preview session host fields).
    "lastSessionHostUpdateTime": "preview-only",
    "sessionHostConfiguration": "preview-only",
}

# Objects whose keys are data (user-chosen), not schema.
DATA_MAPS = {"tags"}

SUB = "00000000-0000-0000-0000-000000000001"
RG = "rg-img"
GALLERY_API = "2026-03-03"
AVD_API = "2024-04-03"
WIN11 = {
    "publisher": "MicrosoftWindowsDesktop",
    "offer": "windows-11",
    "sku": "win11-25h2-avd",
    "version": "latest",
}
SERVER = {
    "publisher": "MicrosoftWindowsServer",
    "offer": "WindowsServer",
    "sku": "2022-datacenter-g2",
    "version": "latest",
}


def missing_keys(example: Any, actual: Any, path: str = "") -> list[str]:
    """Dotted paths of keys in ``example`` that ``actual`` lacks (values are not compared)."""
    if isinstance(example, dict):
        if not isinstance(actual, dict):
            return [path or "(root)"]
        out: list[str] = []
        for key, value in example.items():
            if key in IGNORED_KEYS:
                continue
            sub = f"{path}.{key}" if path else key
            if key not in actual:
                out.append(sub)
                continue
            if key in DATA_MAPS:
                continue  # its keys are the caller's data, not the schema
            out += missing_keys(value, actual[key], sub)
        return out
    if isinstance(example, list):
        if not isinstance(actual, list):
            return [path]
        if not example or not actual:
            return []
        out = []
        for i, item in enumerate(actual):
            out += missing_keys(example[0], item, f"{path}[{i}]")
        return out
    return []


def wait_for(
    env: Any, condition: Callable[[], Any], timeout: float = 15.0, what: str = "condition"
) -> Any:
    """Poll ``condition`` (under the emulator's lock) until truthy; virtual time runs meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        with env.emu.lock:
            value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (virtual now {env.clock.now()})")
        time.sleep(0.01)


def make_vm(
    env: Any,
    name: str,
    *,
    rg: str = RG,
    location: str = "westeurope",
    image: dict[str, Any] | None = None,
    generalized: bool = False,
    apps: dict[str, str] | None = None,
    security_type: str | None = None,
) -> str:
    """A VM created in-process (compute's ``seed_vm``); returns its id."""
    from emulator.compute import guest_of, seed_vm, vm_runtime

    emu = env.emu
    with emu.lock:
        vm = seed_vm(
            emu,
            subscription=env.subscription,
            resource_group=rg,
            name=name,
            location=location,
            image_reference=dict(image or SERVER),
            security_type=security_type,
        )
        vm_id = str(vm["id"])
        guest = guest_of(emu, vm_id)
        assert guest is not None
        guest.apps.update(apps or {})
        if generalized:
            guest.bitlocker = "FullyDecrypted"
            guest.sysprepped = True
            rt = vm_runtime(emu, vm_id)
            assert rt is not None
            rt.power = "deallocated"
            rt.generalized = True
    return vm_id


def gallery_path(gallery: str = "gal", rg: str = RG, sub: str = SUB) -> str:
    return (
        f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/{gallery}"
    )


def image_body(
    location: str = "westeurope",
    *,
    hyper_v: str = "V2",
    security: str | None = "TrustedLaunchSupported",
    os_state: str = "Generalized",
    sku: str = "win11",
) -> dict[str, Any]:
    props: dict[str, Any] = {
        "osType": "Windows",
        "osState": os_state,
        "hyperVGeneration": hyper_v,
        "identifier": {"publisher": "Contoso", "offer": "avd", "sku": sku},
    }
    if security:
        props["features"] = [{"name": "SecurityType", "value": security}]
    return {"location": location, "properties": props}


def version_body(
    source: dict[str, Any],
    *,
    location: str = "westeurope",
    regions: list[dict[str, Any]] | None = None,
    exclude_from_latest: bool | None = None,
    safety: dict[str, Any] | None = None,
    end_of_life: str | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    profile: dict[str, Any] = {"targetRegions": regions or [{"name": location}]}
    if exclude_from_latest is not None:
        profile["excludeFromLatest"] = exclude_from_latest
    if end_of_life is not None:
        profile["endOfLifeDate"] = end_of_life
    props: dict[str, Any] = {"publishingProfile": profile, "storageProfile": source}
    if safety is not None:
        props["safetyProfile"] = safety
    body: dict[str, Any] = {"location": location, "properties": props}
    if tags is not None:
        body["tags"] = tags
    return body


def step(env: Any, delta: Any, timeout: float = 10.0) -> None:
    """With the clock paused: move virtual time by ``delta`` and wait until the emulator has
    run everything that became due."""
    env.clock.advance(delta)
    settle(env, timeout)


def settle(env: Any, timeout: float = 10.0) -> None:
    """Wait (real time) until the emulator has no work due now and nothing in flight."""
    emu = env.emu
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        due = emu.next_due()
        if emu.participant.busy_count == 0 and (due is None or due > env.clock.now()):
            return
        time.sleep(0.005)
    raise AssertionError("the emulator did not settle")


def run_to(env: Any, target: Any, timeout: float = 20.0) -> None:
    """With the clock paused: move virtual time event by event up to ``target`` (what the
    virtual clock does by itself, but stopping exactly at ``target``)."""
    emu = env.emu
    clock = env.clock
    deadline = time.monotonic() + timeout
    settle(env)
    while clock.now() < target:
        if time.monotonic() > deadline:
            raise AssertionError(f"run_to({target}) took too long (now {clock.now()})")
        due = emu.next_due()
        nxt = target if due is None or due > target else due
        if nxt > clock.now():
            clock.set_time(nxt)
        settle(env)
