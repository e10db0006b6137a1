"""Managed run commands: start once per name, check, and the capture path up to generalize."""

from __future__ import annotations

from typing import Any

import pytest

from shared import names
from shared.errors import InputError, NotFoundError, PermanentError
from tests.activities.conftest import activity, plan_for, wait_for
from tests.emulator.conftest import EmulatorEnv

BUILD = "b-0002"
TERMINAL = {"Succeeded", "Failed", "TimedOut", "Canceled"}
SYSPREP = r"C:\Windows\System32\Sysprep\sysprep.exe /generalize /oobe /shutdown /quiet"


def _running_vm(env: EmulatorEnv) -> str:
    plan = plan_for(env.subscription, BUILD)
    vm_id = str(activity(names.ACT_CREATE_BUILD_VM)({"plan": plan, "build_id": BUILD})["vm_id"])
    wait_for(
        lambda: activity(names.ACT_GET_VM_STATE)({"vm_id": vm_id}),
        lambda s: (
            s["power_state"] == "PowerState/running" and s["provisioning_state"] == "Succeeded"
        ),
    )
    return vm_id


def _run(vm_id: str, name: str, script: list[str], **extra: Any) -> dict[str, Any]:
    started = activity(names.ACT_START_RUN_COMMAND)(
        {"vm_id": vm_id, "name": name, "script": script, **extra}
    )
    assert started["run_command_id"].endswith(f"/runCommands/{name}")
    return wait_for(
        lambda: activity(names.ACT_GET_RUN_COMMAND)({"vm_id": vm_id, "name": name}),
        lambda s: s["state"] in TERMINAL,
    )


def test_run_command_succeeds_with_output(app_env: EmulatorEnv) -> None:
    vm_id = _running_vm(app_env)
    done = _run(vm_id, "step-01", ["Write-Output 'hello from the guest'"], timeout_seconds=600)
    assert done["state"] == "Succeeded"
    assert done["exit_code"] == 0
    assert "hello from the guest" in done["output"]
    assert done["start_time"] is not None
    assert done["end_time"] is not None


def test_failed_script_reports_error_and_exit_code(app_env: EmulatorEnv) -> None:
    vm_id = _running_vm(app_env)
    done = _run(vm_id, "step-02", ["Write-Output before", "exit 3"])
    assert done["exit_code"] == 3
    unknown = _run(vm_id, "step-03", ["Install-Everything -Now"])
    assert unknown["state"] == "Failed"
    assert "not recognized" in unknown["error"]


def test_same_name_same_script_is_not_run_twice(app_env: EmulatorEnv) -> None:
    vm_id = _running_vm(app_env)
    first = _run(vm_id, "step-01", ["Write-Output once"])
    again = activity(names.ACT_START_RUN_COMMAND)(
        {"vm_id": vm_id, "name": "step-01", "script": ["Write-Output once"]}
    )
    assert again["run_command_id"].endswith("/runCommands/step-01")
    after = activity(names.ACT_GET_RUN_COMMAND)({"vm_id": vm_id, "name": "step-01"})
    # Not restarted: still finished, with the first run's times.
    assert after["state"] == "Succeeded"
    assert after["start_time"] == first["start_time"]
    assert after["end_time"] == first["end_time"]
    writes = [
        e
        for e in app_env.emu.events.events("Microsoft.Resources.ResourceWriteSuccess")
        if e.subject.lower().endswith("/runcommands/step-01")
    ]
    assert len(writes) == 1


def test_get_of_a_missing_run_command_is_not_found(app_env: EmulatorEnv) -> None:
    vm_id = _running_vm(app_env)
    with pytest.raises(NotFoundError):
        activity(names.ACT_GET_RUN_COMMAND)({"vm_id": vm_id, "name": "never-started"})


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "x", "script": ["a"]}, "vm_id"),
        ({"vm_id": "/x", "name": "x", "script": ["a"]}, "vm_id"),
        ({"vm_id": "VM", "name": "bad name!", "script": ["a"]}, "name"),
        ({"vm_id": "VM", "name": "x", "script": []}, "script"),
        ({"vm_id": "VM", "name": "x", "script": ["a"], "timeout_seconds": 0}, "timeout_seconds"),
    ],
)
def test_start_run_command_bad_input(
    app_env: EmulatorEnv, payload: dict[str, Any], field: str
) -> None:
    if payload.get("vm_id") == "VM":
        payload["vm_id"] = (
            f"/subscriptions/{app_env.subscription}/resourceGroups/rg/providers/"
            "Microsoft.Compute/virtualMachines/vm1"
        )
    with pytest.raises(InputError) as caught:
        activity(names.ACT_START_RUN_COMMAND)(payload)
    assert field in [e.path for e in caught.value.errors]


def test_run_command_on_a_stopped_vm_is_refused(app_env: EmulatorEnv) -> None:
    vm_id = _running_vm(app_env)
    activity(names.ACT_DEALLOCATE_VM)({"vm_id": vm_id})
    wait_for(
        lambda: activity(names.ACT_GET_VM_STATE)({"vm_id": vm_id}),
        lambda s: s["power_state"] == "PowerState/deallocated",
    )
    with pytest.raises(PermanentError) as caught:
        activity(names.ACT_START_RUN_COMMAND)(
            {"vm_id": vm_id, "name": "late", "script": ["Write-Output x"]}
        )
    assert "OperationNotAllowed" in str(caught.value)


def test_sysprep_fails_with_bitlocker_on_and_succeeds_after_the_guardrail(
    app_env: EmulatorEnv,
) -> None:
    # Windows 11 25H2 from the marketplace comes up with BitLocker on (seed 001).
    vm_id = _running_vm(app_env)
    blocked = _run(vm_id, "sysprep-early", [SYSPREP])
    assert blocked["state"] == "Failed"
    assert "BitLocker" in blocked["error"]
    guard = _run(
        vm_id,
        "guard-bitlocker",
        [
            "Disable-BitLocker -MountPoint C:",
            r"reg add HKLM\SYSTEM\CurrentControlSet\Control\BitLocker /v PreventDeviceEncryption"
            " /t REG_DWORD /d 1 /f",
        ],
    )
    assert guard["state"] == "Succeeded", guard
    sysprep = activity(names.ACT_START_RUN_COMMAND)(
        {"vm_id": vm_id, "name": "sysprep", "script": [SYSPREP]}
    )
    assert sysprep["run_command_id"]
    wait_for(
        lambda: activity(names.ACT_GET_VM_STATE)({"vm_id": vm_id}),
        lambda s: s["power_state"] in ("PowerState/stopped", "PowerState/deallocated"),
    )
    activity(names.ACT_DEALLOCATE_VM)({"vm_id": vm_id})
    wait_for(
        lambda: activity(names.ACT_GET_VM_STATE)({"vm_id": vm_id}),
        lambda s: s["power_state"] == "PowerState/deallocated",
    )
    assert activity(names.ACT_GENERALIZE_VM)({"vm_id": vm_id}) == {"generalized": True}
    assert activity(names.ACT_GET_VM_STATE)({"vm_id": vm_id})["generalized"] is True
    # Generalizing again (a retried activity) is a no-op, not an error.
    assert activity(names.ACT_GENERALIZE_VM)({"vm_id": vm_id}) == {"generalized": True}
