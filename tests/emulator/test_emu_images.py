"""VMs from gallery image versions (the contract with emulator/gallery.py) and orphan reports.

The gallery module stores image definitions and versions as ARM documents and attaches the
captured guest with ``compute.set_guest``; these tests play that part by writing the documents
directly, so they pin down what compute expects whether or not gallery.py is present.
"""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from emulator.compute import guest_of, set_guest, vm_runtime

SUB = "00000000-0000-0000-0000-000000000001"
GALLERY = f"/subscriptions/{SUB}/resourceGroups/rg-img/providers/Microsoft.Compute/galleries/gal"
DEFINITION = f"{GALLERY}/images/win11"


def _publish(env: Any, version: str, source_vm: str | None, regions: list[str]) -> str:
    """What the gallery module does on a successful image version create."""
    emu = env.emu
    with emu.lock:
        if emu.store.get(DEFINITION) is None:
            emu.store.put(
                DEFINITION,
                {
                    "name": "win11",
                    "type": "Microsoft.Compute/galleries/images",
                    "location": "westeurope",
                    "properties": {
                        "osType": "Windows",
                        "osState": "Generalized",
                        "hyperVGeneration": "V2",
                        "identifier": {"publisher": "Contoso", "offer": "avd", "sku": "win11"},
                        "provisioningState": "Succeeded",
                    },
                },
            )
        vid = f"{DEFINITION}/versions/{version}"
        emu.store.put(
            vid,
            {
                "name": version,
                "type": "Microsoft.Compute/galleries/images/versions",
                "location": "westeurope",
                "properties": {
                    "provisioningState": "Succeeded",
                    "publishingProfile": {"targetRegions": [{"name": r} for r in regions]},
                },
            },
        )
        if source_vm is not None:
            vm_id = (
                f"/subscriptions/{SUB}/resourceGroups/rg/providers/"
                f"Microsoft.Compute/virtualMachines/{source_vm}"
            )
            guest = guest_of(emu, vm_id)
            assert guest is not None
            set_guest(emu, vid, guest)
    return vid


def _build_image_vm(env: Any, name: str, *, prevent: bool, sysprep_line: str) -> None:
    env.create_vm(name)
    lines = ["Disable-BitLocker -MountPoint C:", "choco install vscode -y"]
    if prevent:
        lines.append(
            'reg add "HKLM\\SYSTEM\\CurrentControlSet\\Control\\BitLocker" '
            "/v PreventDeviceEncryption /t REG_DWORD /d 1 /f"
        )
    env.run_script(name, [*lines, sysprep_line])
    c = env.compute_client()
    c.virtual_machines.begin_deallocate("rg", name).result()
    c.virtual_machines.generalize("rg", name)


def test_vm_from_gallery_version_carries_the_captured_guest(
    emulator_env: Any, sysprep_line: str
) -> None:
    _build_image_vm(emulator_env, "builder", prevent=True, sysprep_line=sysprep_line)
    vid = _publish(emulator_env, "1.0.0", "builder", ["westeurope"])
    vm = emulator_env.create_vm("host-1", image={"id": DEFINITION})  # definition: latest
    assert vm.properties.storage_profile.image_reference.exact_version == "1.0.0"
    out, _ = emulator_env.run_script(
        "host-1", ["Get-InstalledApps", "Get-BitLockerVolume -MountPoint C:"]
    )
    assert "App.vscode=latest" in out.splitlines()
    assert (
        "BitLockerVolumeStatus=FullyDecrypted" in out.splitlines()
    )  # the registry value kept device encryption off
    disk = emulator_env.compute_client().disks.get("rg", vm.properties.storage_profile.os_disk.name)
    assert disk.properties.creation_data.gallery_image_reference.id == vid
    rt = vm_runtime(emulator_env.emu, vm.id)
    assert rt is not None
    assert not rt.generalized


def test_without_the_registry_value_trusted_launch_turns_bitlocker_back_on(
    emulator_env: Any, sysprep_line: str
) -> None:
    _build_image_vm(emulator_env, "builder", prevent=False, sysprep_line=sysprep_line)
    _publish(emulator_env, "1.0.0", "builder", ["westeurope"])
    emulator_env.create_vm("host-1", image={"id": DEFINITION})
    out, _ = emulator_env.run_script("host-1", ["Get-BitLockerVolume -MountPoint C:"])
    assert "BitLockerProtectionStatus=On" in out.splitlines()


def test_gallery_version_must_be_replicated_to_the_region(emulator_env: Any) -> None:
    _publish(emulator_env, "1.0.0", None, ["northeurope"])
    with pytest.raises(HttpResponseError) as e:
        emulator_env.create_vm("host-1", image={"id": DEFINITION + "/versions/1.0.0"})
    assert e.value.error.code == "GalleryImageNotFound"
    assert "westeurope" in e.value.error.message
    vm = emulator_env.create_vm(
        "host-2", location="northeurope", image={"id": DEFINITION + "/versions/1.0.0"}
    )
    assert vm.properties.provisioning_state == "Succeeded"


def test_image_captured_without_sysprep_fails_provisioning(emulator_env: Any) -> None:
    emulator_env.create_vm("careless")
    _publish(emulator_env, "2.0.0", "careless", ["westeurope"])
    with pytest.raises(HttpResponseError) as e:
        emulator_env.create_vm("host-3", image={"id": DEFINITION + "/versions/2.0.0"})
    assert "OSProvisioningTimedOut" in str(e.value)


def test_orphan_report_follows_build_ownership(emulator_env: Any) -> None:
    emulator_env.create_vm("b1-vm", tags={"imagefactory:build-id": "b1"})
    emulator_env.create_vm(
        "b2-vm", tags={"imagefactory:build-id": "b2", "imagefactory:build-state": "running"}
    )
    emulator_env.create_vm("stray")
    assert emulator_env.admin("PUT", "builds/b1", {"state": "running"})[0] == 200
    _, report = emulator_env.admin("GET", "report")
    orphans = {o["id"].rsplit("/", 1)[-1]: o for o in report["orphans"]}
    owned = report["ownership"]["ownedByRunningBuild"]
    assert any(i.endswith("/b1-vm") for i in owned)
    assert any(i.endswith("/b2-vm") for i in owned)
    assert orphans["stray"]["reason"] == "untracked"
    assert "b1-vm" not in orphans
    assert emulator_env.admin("PUT", "builds/b1", {"state": "ended"})[0] == 200
    _, report = emulator_env.admin("GET", "report")
    orphans = {o["id"].rsplit("/", 1)[-1]: o for o in report["orphans"]}
    assert (orphans["b1-vm"]["reason"], orphans["b1-vm"]["buildId"]) == ("build-ended", "b1")
    assert "b2-vm" not in orphans
    # the VM's OS disk and NIC carry no build tag of their own (Azure does not copy VM tags)
    assert any(n.startswith("b1-vm_OsDisk_1_") for n in orphans)
    assert orphans["b1-vm-nic"]["reason"] == "untracked"
    assert report["compute"]["consistencyProblems"] == []
    # deleting everything leaves a clean report
    c = emulator_env.compute_client()
    for name in ("b1-vm", "b2-vm", "stray"):
        c.virtual_machines.begin_delete("rg", name).result()
    _, report = emulator_env.admin("GET", "report")
    assert report["orphans"] == []
    assert emulator_env.admin("PUT", "builds/b1", {"state": "maybe"})[0] == 400
