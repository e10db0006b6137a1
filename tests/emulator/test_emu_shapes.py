"""Response shapes: every response has at least the keys of Azure's own example for it.

Compared recursively on key names (lists: first element). A few keys are excluded per example,
each because the emulator does not model that feature (listed with the reason); user data
(tag names) is never compared.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

SUB = "00000000-0000-0000-0000-000000000001"
BASE = f"/subscriptions/{SUB}/resourceGroups/rg/providers"
MKT = (
    f"/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westeurope/publishers/"
    "MicrosoftWindowsDesktop/artifacttypes/vmimage/offers/windows-11/skus/win11-25h2-avd/versions"
)

NOT_MODELLED = {
    ".properties.availabilitySet": "availability sets",
    ".properties.proximityPlacementGroup": "proximity placement groups",
    ".properties.applicationProfile": "VM applications",
    ".properties.userData": "user data",
    ".properties.diagnosticsProfile.bootDiagnostics.storageUri": "boot diagnostics storage",
    ".properties.extensionsTimeBudget": "VM extensions",
    ".resources": "VM extensions",
    ".managedBy": "VM scale sets (for VMs)",
    ".bootDiagnostics": "boot diagnostics",
    ".patchStatus": "patch assessment",
    ".plan": "marketplace purchase plans",
    ".properties.plan": "marketplace purchase plans",
    ".properties.purchasePlan": "marketplace purchase plans",
    ".properties.encryptionSettingsCollection": "Azure Disk Encryption",
    ".properties.dscpConfiguration": "DSCP configurations",
    ".properties.networkSecurityGroup": "network security groups",
    ".properties.ipConfigurations[0].properties.publicIPAddress": "public IPs",
    ".properties.source.scriptUri": "script URIs (inline scripts only)",
    ".properties.runAsUser": "run-as users",
    ".properties.outputBlobUri": "output blobs",
    ".properties.errorBlobUri": "output blobs",
    ".properties.imageDeprecationStatus.scheduledDeprecationTime": "image deprecation",
    ".properties.imageDeprecationStatus.alternativeOption": "image deprecation",
    ".tags": "tags on marketplace images",
    ".extendedLocation": "edge zones",
    "[0].tags": "tags on marketplace images",
    "[0].extendedLocation": "edge zones",
}


def missing_keys(example: Any, actual: Any, path: str = "") -> list[str]:
    out: list[str] = []
    if isinstance(example, dict):
        if not isinstance(actual, dict):
            return [f"{path} (not an object)"]
        for key, value in example.items():
            p = f"{path}.{key}"
            if p in NOT_MODELLED:
                continue
            if key not in actual:
                out.append(p)
            elif key != "tags":
                out += missing_keys(value, actual[key], p)
    elif isinstance(example, list) and example:
        if not isinstance(actual, list):
            return [f"{path} (not a list)"]
        if actual:
            out += missing_keys(example[0], actual[0], f"{path}[0]")
    return out


def example(examples_dir: Path, name: str, code: str = "200") -> Any:
    data = json.loads((examples_dir / name).read_text())
    return data["responses"][code]["body"]


def test_missing_keys_detects_absent_fields() -> None:
    assert missing_keys({"a": {"b": 1, "c": [{"d": 1}]}}, {"a": {"c": [{}]}}) == [
        ".a.b",
        ".a.c[0].d",
    ]


@pytest.fixture
def world(emulator_env: Any) -> Any:
    c = emulator_env.compute_client()
    vm = emulator_env.create_vm("vm1", client=c)
    emulator_env.vm = vm
    return emulator_env


def _get(env: Any, path: str) -> Any:
    status, _, body = env.http("GET", path)
    assert status == 200, body
    return body


def _settle(env: Any) -> None:
    env.clock.wait_until(None, real_timeout=0.2)


def test_vm_shapes(world: Any, examples_dir: Path, make_vm_body: Any) -> None:
    vm_path = f"{BASE}/Microsoft.Compute/virtualMachines/vm1?api-version=2026-04-01"
    ex = example(examples_dir, "compute-vm/2025-11-01/VirtualMachine_Get.json")
    assert missing_keys(ex, _get(world, vm_path)) == []
    ex = example(examples_dir, "compute-vm/2025-04-01/VirtualMachine_Get_InstanceView.json")
    view = _get(world, vm_path.replace("/vm1?", "/vm1/instanceView?"))
    assert missing_keys(ex, view) == []
    ex = example(
        examples_dir,
        "compute-vm/2025-11-01/VirtualMachine_Create_WithAMarketplaceImagePlan.json",
        "201",
    )
    status, _, body = world.http("PUT", vm_path.replace("vm1", "vm2"), make_vm_body())
    assert status == 201
    assert missing_keys(ex, body) == []
    ex = example(examples_dir, "compute-vm/2025-04-01/VirtualMachine_List_MinimumSet_Gen.json")
    listing = _get(world, f"{BASE}/Microsoft.Compute/virtualMachines?api-version=2026-04-01")
    assert missing_keys(ex, listing) == []


def test_run_command_shapes(world: Any, examples_dir: Path) -> None:
    rc = f"{BASE}/Microsoft.Compute/virtualMachines/vm1/runCommands/rc?api-version=2026-04-01"
    ex = example(
        examples_dir,
        "compute-runcommand/2025-04-01/VirtualMachineRunCommand_CreateOrUpdate.json",
        "201",
    )
    status, _, body = world.http(
        "PUT", rc, {"location": "westeurope", "properties": {"source": {"script": "echo hi"}}}
    )
    assert status == 201
    assert missing_keys(ex, body) == []
    _settle(world)
    ex = example(examples_dir, "compute-runcommand/2025-04-01/VirtualMachineRunCommand_Get.json")
    assert missing_keys(ex, _get(world, rc)) == []
    # the action: poll its Location until the result is there
    action = f"{BASE}/Microsoft.Compute/virtualMachines/vm1/runCommand?api-version=2026-04-01"
    status, headers, _ = world.http(
        "POST", action, {"commandId": "RunPowerShellScript", "script": ["Write-Output x"]}
    )
    assert status == 202
    location = headers["location"].replace(world.url, "")
    for _ in range(300):
        status, _, result = world.http("GET", location)
        if status == 200:
            break
        time.sleep(0.01)
    assert status == 200
    ex = example(examples_dir, "compute-runcommand/2025-04-01/VirtualMachineRunCommand.json")
    assert missing_keys(ex, result) == []
    assert result["value"][0]["message"] == "x"


def test_disk_snapshot_nic_shapes(world: Any, examples_dir: Path) -> None:
    os_disk = world.vm.properties.storage_profile.os_disk
    disk = _get(world, f"{os_disk.managed_disk.id}?api-version=2026-03-02")
    assert missing_keys(example(examples_dir, "compute-disk/2025-01-02/Disk_Get.json"), disk) == []
    snap_path = f"{BASE}/Microsoft.Compute/snapshots/s1?api-version=2026-03-02"
    status, _, body = world.http(
        "PUT",
        snap_path,
        {
            "location": "westeurope",
            "properties": {
                "creationData": {
                    "createOption": "Copy",
                    "sourceResourceId": os_disk.managed_disk.id,
                }
            },
        },
    )
    assert status == 202
    ex = example(
        examples_dir, "compute-disk/2025-01-02/Snapshot_Create_FromAnExistingSnapshot.json", "202"
    )
    assert missing_keys(ex, body) == []
    _settle(world)
    ex = example(examples_dir, "compute-disk/2025-01-02/Snapshot_Get.json")
    assert missing_keys(ex, _get(world, snap_path)) == []
    disk_path = f"{BASE}/Microsoft.Compute/disks/d1?api-version=2026-03-02"
    status, _, body = world.http(
        "PUT",
        disk_path,
        {
            "location": "westeurope",
            "properties": {
                "creationData": {
                    "createOption": "Copy",
                    "sourceResourceId": snap_path.split("?")[0],
                }
            },
        },
    )
    assert status == 202
    ex = example(examples_dir, "compute-disk/2025-01-02/Disk_Create_ByCopyingASnapshot.json", "202")
    assert missing_keys(ex, body) == []
    nic = _get(world, f"{BASE}/Microsoft.Network/networkInterfaces/vm1-nic?api-version=2025-03-01")
    ex = example(examples_dir, "network/2025-03-01/NetworkInterfaceGet.json")
    assert missing_keys(ex, nic) == []


def test_marketplace_shapes(world: Any, examples_dir: Path) -> None:
    listing = _get(world, f"{MKT}?api-version=2026-04-01")
    ex = example(
        examples_dir, "compute-marketplace/2025-04-01/VirtualMachineImage_List_MinimumSet_Gen.json"
    )
    assert missing_keys(ex, listing) == []
    image = _get(world, f"{MKT}/26200.7462.251205?api-version=2026-04-01")
    ex = example(
        examples_dir, "compute-marketplace/2025-11-01/VirtualMachineImage_Get_MaximumSet_Gen.json"
    )
    assert missing_keys(ex, image) == []
    offers = _get(world, MKT.split("/offers/")[0] + "/offers?api-version=2026-04-01")
    ex = example(
        examples_dir,
        "compute-marketplace/2025-04-01/VirtualMachineImage_ListOffers_MaximumSet_Gen.json",
    )
    assert missing_keys(ex, offers) == []
