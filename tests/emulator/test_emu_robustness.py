"""Bad input never crashes a handler: every malformed body gets a 4xx, never a 500."""

from __future__ import annotations

from typing import Any

import pytest

SUB = "00000000-0000-0000-0000-000000000001"
RG = f"/subscriptions/{SUB}/resourceGroups/rg/providers"

GARBAGE: list[Any] = [
    {},
    [],
    "text",
    5,
    {"location": 5},
    {"location": "westeurope", "properties": 5},
    {"location": "westeurope", "properties": {"storageProfile": "x"}},
    {"location": "westeurope", "properties": {"storageProfile": {"imageReference": 7}}},
    {"location": "westeurope", "properties": {"storageProfile": {"osDisk": 3}}},
    {"location": "westeurope", "properties": {"networkProfile": {"networkInterfaces": [5]}}},
    {
        "location": "westeurope",
        "properties": {
            "networkProfile": {
                "networkApiVersion": "2020-11-01",
                "networkInterfaceConfigurations": ["x"],
            }
        },
    },
    {"location": "westeurope", "properties": {"creationData": "x"}},
    {"location": "westeurope", "properties": {"creationData": {"createOption": "Copy"}}},
    {
        "location": "westeurope",
        "properties": {"creationData": {"createOption": "Empty", "diskSizeGB": "big"}},
    },
    {"location": "westeurope", "properties": {"source": {"script": 5}}},
    {
        "location": "westeurope",
        "properties": {"source": {"script": "x"}, "timeoutInSeconds": "soon"},
    },
    {"location": "westeurope", "properties": {"ipConfigurations": "x"}},
    {"location": "westeurope", "tags": "x", "properties": {}},
    {"commandId": "RunPowerShellScript", "script": "not a list"},
    {"commandId": 5},
]

PATHS = [
    ("PUT", f"{RG}/Microsoft.Compute/virtualMachines/vmx"),
    ("PATCH", f"{RG}/Microsoft.Compute/virtualMachines/base"),
    ("PUT", f"{RG}/Microsoft.Compute/disks/dx"),
    ("PUT", f"{RG}/Microsoft.Compute/snapshots/sx"),
    ("PUT", f"{RG}/Microsoft.Network/networkInterfaces/nx"),
    ("PUT", f"{RG}/Microsoft.Compute/virtualMachines/base/runCommands/rx"),
    ("POST", f"{RG}/Microsoft.Compute/virtualMachines/base/runCommand"),
    ("POST", "/_emulator/faults"),
    ("POST", "/_emulator/eventSubscriptions"),
    ("PUT", "/_emulator/throttling"),
    ("POST", "/_emulator/marketplace/versions"),
    ("POST", "/_emulator/scenario"),
    ("POST", "/_emulator/clock/advance"),
    ("PUT", "/_emulator/builds/b1"),
]


@pytest.mark.parametrize(
    ("method", "path"), PATHS, ids=[f"{m} {p.rsplit('/', 2)[-2]}" for m, p in PATHS]
)
def test_garbage_bodies_get_4xx(emulator_env: Any, method: str, path: str) -> None:
    emulator_env.emu.throttle.configure(
        emulator_env.emu.throttle.settings.model_copy(update={"enabled": False})
    )
    if "/base" in path:
        emulator_env.create_vm("base")
    statuses = []
    for body in GARBAGE:
        admin = path.startswith("/_emulator")
        url = path if admin else f"{path}?api-version=2026-04-01"
        status, _, answer = emulator_env.http(method, url, body, auth=not admin)
        statuses.append(status)
        assert status < 500, (body, answer)
    assert any(400 <= s < 500 for s in statuses)
    assert emulator_env.emu.metrics.unexpected_errors == 0
