"""Compute conformance with the REAL azure-mgmt-compute client: VMs, disks, snapshots, NICs."""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

SUB = "00000000-0000-0000-0000-000000000001"
RG_PATH = f"/subscriptions/{SUB}/resourceGroups/rg"


def _power(client: Any, name: str) -> str:
    iv = client.virtual_machines.instance_view("rg", name)
    return next(s.code for s in iv.statuses if s.code.startswith("PowerState/"))


def test_create_vm_from_marketplace_creates_nic_and_os_disk(emulator_env: Any) -> None:
    c = emulator_env.compute_client()
    start = emulator_env.clock.now()
    vm = emulator_env.create_vm("build-1", client=c, tags={"imagefactory:build-id": "b1"})
    assert vm.properties.provisioning_state == "Succeeded"
    assert emulator_env.clock.now() - start >= emulator_env.emu.latency.mean("vm.create") * 0.7
    ref = vm.properties.storage_profile.image_reference
    assert ref.exact_version == "26200.7462.251205"  # "latest" resolved
    assert vm.properties.security_profile.security_type == "TrustedLaunch"
    nic_id = vm.properties.network_profile.network_interfaces[0].id
    assert nic_id.endswith("/networkInterfaces/build-1-nic")
    nic = emulator_env.emu.store.get(nic_id)
    assert nic["properties"]["virtualMachine"]["id"].lower() == vm.id.lower()
    disk = c.disks.get("rg", vm.properties.storage_profile.os_disk.name)
    assert disk.managed_by.lower() == vm.id.lower()
    assert disk.properties.disk_state == "Attached"
    assert _power(c, "build-1") == "PowerState/running"
    got = c.virtual_machines.get("rg", "build-1", expand="instanceView")
    assert got.properties.instance_view.statuses[-1].code == "PowerState/running"
    assert got.tags == {"imagefactory:build-id": "b1"}
    assert "adminPassword" not in str(emulator_env.emu.store.get(vm.id))


def test_vm_with_existing_nic_and_attached_os_disk(emulator_env: Any, make_vm_body: Any) -> None:
    c = emulator_env.compute_client()
    s, _, _ = emulator_env.http(
        "PUT",
        f"{RG_PATH}/providers/Microsoft.Network/networkInterfaces/nic-a?api-version=2025-03-01",
        {"location": "westeurope", "properties": {"ipConfigurations": [{"name": "ip1"}]}},
    )
    assert s == 201
    # A copy of a marketplace VM's OS disk carries its guest (apps) to the new VM.
    emulator_env.create_vm("src", client=c, trusted_launch=False)
    emulator_env.run_script("src", ["choco install git -y", "choco install 7zip -y"], client=c)
    os_disk = c.virtual_machines.get("rg", "src").properties.storage_profile.os_disk.managed_disk.id
    snap = c.snapshots.begin_create_or_update(
        "rg",
        "snap-1",
        {
            "location": "westeurope",
            "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": os_disk}},
        },
    ).result()
    assert snap.properties.provisioning_state == "Succeeded"
    copy = c.disks.begin_create_or_update(
        "rg",
        "copy-1",
        {
            "location": "westeurope",
            "properties": {
                "creationData": {"createOption": "Copy", "sourceResourceId": snap.id.lstrip("/")}
            },
        },
    ).result()
    assert copy.properties.os_type == "Windows"
    body = make_vm_body()
    body["properties"]["storageProfile"] = {
        "osDisk": {"createOption": "Attach", "osType": "Windows", "managedDisk": {"id": copy.id}}
    }
    body["properties"].pop("osProfile")
    body["properties"]["networkProfile"] = {
        "networkInterfaces": [
            {
                "id": f"{RG_PATH}/providers/Microsoft.Network/networkInterfaces/nic-a",
                "properties": {"primary": True, "deleteOption": "Detach"},
            }
        ]
    }
    vm = c.virtual_machines.begin_create_or_update("rg", "attached", body).result()
    assert vm.properties.storage_profile.os_disk.create_option == "Attach"
    out, err = emulator_env.run_script("attached", ["Get-InstalledApps"], client=c)
    assert (out.splitlines(), err) == (["App.7zip=latest", "App.git=latest"], "")
    # NIC in use by another VM is refused with Azure's code.
    body2 = make_vm_body()
    body2["properties"]["networkProfile"] = body["properties"]["networkProfile"]
    with pytest.raises(HttpResponseError) as e:
        c.virtual_machines.begin_create_or_update("rg", "other", body2).result()
    assert e.value.error.code == "NicInUse"
    # Detach on delete leaves the NIC and the disk behind, unattached.
    c.virtual_machines.begin_delete("rg", "attached").result()
    assert (
        "virtualMachine"
        not in emulator_env.emu.store.get(
            f"{RG_PATH}/providers/Microsoft.Network/networkInterfaces/nic-a"
        )["properties"]
    )
    assert c.disks.get("rg", "copy-1").properties.disk_state == "Unattached"


def test_delete_vm_honours_delete_options_and_force(emulator_env: Any) -> None:
    c = emulator_env.compute_client()
    vm = emulator_env.create_vm("gone", client=c)
    disk_name = vm.properties.storage_profile.os_disk.name
    nic_id = vm.properties.network_profile.network_interfaces[0].id
    c.virtual_machines.begin_delete("rg", "gone", force_deletion=True).result()
    with pytest.raises(ResourceNotFoundError):
        c.virtual_machines.get("rg", "gone")
    with pytest.raises(ResourceNotFoundError):
        c.disks.get("rg", disk_name)
    assert emulator_env.emu.store.get(nic_id) is None
    # deleting again is a no-op, as in Azure
    c.virtual_machines.begin_delete("rg", "gone").result()


def test_power_actions_and_instance_view(emulator_env: Any) -> None:
    c = emulator_env.compute_client()
    emulator_env.create_vm("p1", client=c)
    c.virtual_machines.begin_deallocate("rg", "p1").result()
    assert _power(c, "p1") == "PowerState/deallocated"
    with pytest.raises(HttpResponseError) as e:
        c.virtual_machines.begin_restart("rg", "p1").result()
    assert e.value.status_code == 409
    c.virtual_machines.begin_start("rg", "p1").result()
    assert _power(c, "p1") == "PowerState/running"
    c.virtual_machines.begin_power_off("rg", "p1").result()
    assert _power(c, "p1") == "PowerState/stopped"
    c.virtual_machines.begin_start("rg", "p1").result()
    c.virtual_machines.begin_restart("rg", "p1").result()
    iv = c.virtual_machines.instance_view("rg", "p1")
    assert iv.os_name.startswith("Windows 11")
    assert iv.vm_agent.statuses[0].display_status == "Ready"
    names = [e.data["operationName"] for e in emulator_env.emu.events.events()]
    assert "Microsoft.Compute/virtualMachines/deallocate/action" in names
    assert "Microsoft.Compute/virtualMachines/powerOff/action" in names


def test_list_vms_pages_through_next_link(emulator_env: Any) -> None:
    c = emulator_env.compute_client()
    for i in range(4):
        emulator_env.create_vm(f"v{i}", client=c)
    names = [vm.name for vm in c.virtual_machines.list("rg")]
    assert names == ["v0", "v1", "v2", "v3"]
    assert len(list(c.virtual_machines.list_all())) == 4
    assert emulator_env.emu.metrics.requests["Microsoft.Compute/virtualMachines/read"] >= 2


def test_generalize_rules_follow_the_guest(emulator_env: Any, sysprep_line: str) -> None:
    c = emulator_env.compute_client()
    emulator_env.create_vm("g1", client=c)
    # Running and not sysprepped: refused with Azure's wording.
    with pytest.raises(HttpResponseError) as e:
        c.virtual_machines.generalize("rg", "g1")
    assert e.value.error.code == "OperationNotAllowed"
    assert "since the VM is running" in e.value.error.message
    # Windows 11 25H2 has BitLocker on: sysprep fails with Windows' own message.
    out, err = emulator_env.run_script("g1", ["Get-BitLockerVolume -MountPoint C:", sysprep_line])
    assert "BitLockerProtectionStatus=On" in out.splitlines()
    assert "Sysprep was not able to validate your Windows installation" in err
    assert "BitLocker" in err
    assert _power(c, "g1") == "PowerState/running"
    # Stopped but not sysprepped: still refused.
    c.virtual_machines.begin_power_off("rg", "g1").result()
    with pytest.raises(HttpResponseError) as e:
        c.virtual_machines.generalize("rg", "g1")
    assert "Sysprep" in e.value.error.message
    c.virtual_machines.begin_start("rg", "g1").result()
    # After Disable-BitLocker, sysprep /shutdown succeeds and stops the VM from the inside.
    before = emulator_env.clock.now()
    out, err = emulator_env.run_script("g1", ["manage-bde -off C:", sysprep_line])
    assert err == ""
    assert "IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE" in out
    assert emulator_env.clock.now() - before >= emulator_env.emu.latency.mean("guest.sysprep")
    assert _power(c, "g1") == "PowerState/stopped"
    c.virtual_machines.generalize("rg", "g1")
    codes = [s.code for s in c.virtual_machines.instance_view("rg", "g1").statuses]
    assert "OSState/generalized" in codes
    with pytest.raises(HttpResponseError) as e:
        c.virtual_machines.begin_start("rg", "g1").result()
    assert e.value.error.code == "OperationNotAllowed"
    assert "generalized" in e.value.error.message
    # deallocating a generalized VM is fine
    c.virtual_machines.begin_deallocate("rg", "g1").result()


def test_run_command_action_outputs_and_errors(emulator_env: Any) -> None:
    c = emulator_env.compute_client()
    emulator_env.create_vm(
        "r1",
        client=c,
        trusted_launch=False,
        image={
            "publisher": "MicrosoftWindowsDesktop",
            "offer": "office-365",
            "sku": "win11-24h2-avd-m365",
            "version": "latest",
        },
    )
    out, err = emulator_env.run_script(
        "r1",
        [
            "$ErrorActionPreference = 'Stop'",
            "Write-Output 'hello from the guest'",
            "Get-BitLockerVolume -MountPoint C:",
            'reg add "HKLM\\SYSTEM\\CurrentControlSet\\Control\\BitLocker" '
            "/v PreventDeviceEncryption /t REG_DWORD /d 1 /f",
            "Get-ItemProperty -Path 'HKLM:\\SYSTEM\\CurrentControlSet\\Control\\BitLocker' "
            "-Name PreventDeviceEncryption",
            "Install-WindowsUpdate -AcceptAll",
            "Test-PendingReboot",
            "Get-PSDrive C",
        ],
        client=c,
    )
    lines = out.splitlines()
    assert lines[0] == "hello from the guest"
    # 24H2 without Trusted Launch: BitLocker off (key=value lines, docs/catalogue.md)
    assert lines[1:3] == ["BitLockerProtectionStatus=Off", "BitLockerVolumeStatus=FullyDecrypted"]
    assert "PreventDeviceEncryption : 1" in lines
    assert "PendingReboot=True" in lines
    assert any(line.startswith("FreeSpaceGB=") for line in lines)
    assert err == ""
    out, err = emulator_env.run_script("r1", ["Restart-Computer -Force"], client=c)
    out, err = emulator_env.run_script("r1", ["Test-PendingReboot"], client=c)
    assert out == "PendingReboot=False"
    out, err = emulator_env.run_script(
        "r1", ["Write-Output one", "Frobnicate-Thing -Now"], client=c
    )
    assert out == ""
    assert "'Frobnicate-Thing' is not recognized" in err
    out, err = emulator_env.run_script("r1", ["Write-Output one", "throw 'bad build'"], client=c)
    assert out == "one"
    assert "bad build" in err


def test_managed_run_commands(emulator_env: Any) -> None:
    c = emulator_env.compute_client()
    emulator_env.create_vm("m1", client=c)
    rc = c.virtual_machine_run_commands.begin_create_or_update(
        "rg",
        "m1",
        "install",
        {
            "location": "westeurope",
            "properties": {
                "source": {"script": "choco install $pkg -y\nWrite-Output done"},
                "parameters": [{"name": "pkg", "value": "notepadplusplus"}],
                "timeoutInSeconds": 3600,
            },
        },
    ).result()
    assert rc.properties.provisioning_state == "Succeeded"
    got = c.virtual_machine_run_commands.get_by_virtual_machine(
        "rg", "m1", "install", expand="instanceView"
    )
    view = got.properties.instance_view
    assert (view.execution_state, view.exit_code) == ("Succeeded", 0)
    assert view.output.splitlines() == ["Chocolatey installed 1/1 packages.", "done"]
    assert view.start_time is not None
    assert view.end_time is not None
    failing = c.virtual_machine_run_commands.begin_create_or_update(
        "rg",
        "m1",
        "fails",
        {"location": "westeurope", "properties": {"source": {"script": "exit 3"}}},
    ).result()
    assert failing.properties.provisioning_state == "Succeeded"
    view = c.virtual_machine_run_commands.get_by_virtual_machine(
        "rg", "m1", "fails", expand="instanceView"
    ).properties.instance_view
    assert (view.execution_state, view.exit_code) == ("Failed", 3)
    with pytest.raises(HttpResponseError):
        c.virtual_machine_run_commands.begin_create_or_update(
            "rg",
            "m1",
            "strict",
            {
                "location": "westeurope",
                "properties": {
                    "source": {"script": "Not-A-Command"},
                    "treatFailureAsDeploymentFailure": True,
                },
            },
        ).result()
    names = sorted(
        r.name for r in c.virtual_machine_run_commands.list_by_virtual_machine("rg", "m1")
    )
    assert names == ["fails", "install", "strict"]
    c.virtual_machine_run_commands.begin_delete("rg", "m1", "fails").result()
    with pytest.raises(ResourceNotFoundError):
        c.virtual_machine_run_commands.get_by_virtual_machine("rg", "m1", "fails")


def test_async_run_command_reports_running_then_succeeded(emulator_env: Any) -> None:
    c = emulator_env.compute_client()
    emulator_env.create_vm("a1", client=c)
    emulator_env.clock.pause()
    try:
        poller = c.virtual_machine_run_commands.begin_create_or_update(
            "rg",
            "a1",
            "slow",
            {
                "location": "westeurope",
                "properties": {
                    "source": {"script": "Start-Sleep -Seconds 600"},
                    "asyncExecution": True,
                },
            },
        )
        view = c.virtual_machine_run_commands.get_by_virtual_machine(
            "rg", "a1", "slow", expand="instanceView"
        ).properties.instance_view
        assert view.execution_state == "Pending"
    finally:
        emulator_env.clock.resume()
    assert poller.result().properties.provisioning_state == "Succeeded"
    emulator_env.clock.wait_until(emulator_env.clock.now(), real_timeout=0.1)
    states = set()
    for _ in range(200):
        view = c.virtual_machine_run_commands.get_by_virtual_machine(
            "rg", "a1", "slow", expand="instanceView"
        ).properties.instance_view
        states.add(view.execution_state)
        if view.execution_state == "Succeeded":
            break
        emulator_env.clock.wait_until(None, real_timeout=0.01)
    assert view.execution_state == "Succeeded"


def test_run_command_needs_a_running_vm(emulator_env: Any) -> None:
    c = emulator_env.compute_client()
    emulator_env.create_vm("d1", client=c)
    c.virtual_machines.begin_deallocate("rg", "d1").result()
    with pytest.raises(HttpResponseError) as e:
        emulator_env.run_script("d1", ["Write-Output x"], client=c)
    assert e.value.status_code == 409


def test_disks_and_snapshots(emulator_env: Any) -> None:
    c = emulator_env.compute_client()
    empty = c.disks.begin_create_or_update(
        "rg",
        "data-1",
        {
            "location": "westeurope",
            "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 64},
        },
    ).result()
    assert (empty.properties.disk_size_gb, empty.properties.provisioning_state) == (64, "Succeeded")
    snap = c.snapshots.begin_create_or_update(
        "rg",
        "data-snap",
        {
            "location": "westeurope",
            "properties": {
                "creationData": {"createOption": "Copy", "sourceResourceId": empty.id},
                "incremental": True,
            },
        },
    ).result()
    assert snap.properties.creation_data.source_unique_id == empty.properties.unique_id
    assert [s.name for s in c.snapshots.list_by_resource_group("rg")] == ["data-snap"]
    vm = emulator_env.create_vm("withdisk", client=c)
    os_disk = vm.properties.storage_profile.os_disk.name
    with pytest.raises(HttpResponseError) as e:
        c.disks.begin_delete("rg", os_disk).result()
    assert e.value.error.code == "OperationNotAllowed"
    assert "is attached to VM" in e.value.error.message
    c.snapshots.begin_delete("rg", "data-snap").result()
    c.disks.begin_delete("rg", "data-1").result()
    with pytest.raises(ResourceNotFoundError):
        c.disks.get("rg", "data-1")
    with pytest.raises(ResourceNotFoundError):
        c.snapshots.begin_create_or_update(
            "rg",
            "bad",
            {
                "location": "westeurope",
                "properties": {
                    "creationData": {
                        "createOption": "Copy",
                        "sourceResourceId": f"{RG_PATH}/providers/Microsoft.Compute/disks/nope",
                    }
                },
            },
        ).result()


def test_bad_vm_requests_get_azure_codes(emulator_env: Any, make_vm_body: Any) -> None:
    c = emulator_env.compute_client()
    body = make_vm_body()
    body.pop("location")
    with pytest.raises(HttpResponseError) as e:
        c.virtual_machines.begin_create_or_update("rg", "x1", body).result()
    assert (e.value.status_code, e.value.error.code) == (400, "LocationRequired")
    body = make_vm_body(
        image={"publisher": "Nobody", "offer": "nothing", "sku": "none", "version": "latest"}
    )
    with pytest.raises(ResourceNotFoundError) as e2:
        c.virtual_machines.begin_create_or_update("rg", "x2", body).result()
    assert e2.value.error.code == "PlatformImageNotFound"
    with pytest.raises(HttpResponseError) as e:
        c.virtual_machines.begin_create_or_update("rg", "bad_name-", make_vm_body()).result()
    assert (e.value.status_code, e.value.error.code) == (400, "InvalidResourceName")
    body = make_vm_body()
    body["properties"]["networkProfile"] = {}
    with pytest.raises(HttpResponseError) as e:
        c.virtual_machines.begin_create_or_update("rg", "x3", body).result()
    assert e.value.status_code == 400
    with pytest.raises(ResourceNotFoundError) as e3:
        c.virtual_machines.get("rg", "nope")
    assert e3.value.error.code == "ResourceNotFound"
    # Raw bodies the SDK would never send: malformed JSON and non-object JSON.
    path = f"{RG_PATH}/providers/Microsoft.Compute/virtualMachines/raw?api-version=2026-04-01"
    s, _, b = emulator_env.http("PUT", path, raw=b'{"location": ')
    assert (s, b["error"]["code"]) == (400, "InvalidRequestContent")
    s, _, b = emulator_env.http("PUT", path, [1, 2])
    assert (s, b["error"]["code"]) == (400, "InvalidRequestContent")
    s, _, b = emulator_env.http("PUT", path, {"location": "westeurope", "properties": "x"})
    assert s == 400
    s, _, b = emulator_env.http("POST", path.replace("/raw?", "/raw/frobnicate?"), {})
    assert s == 404
    assert emulator_env.emu.metrics.unexpected_errors == 0


def test_marketplace_catalogue(emulator_env: Any) -> None:
    c = emulator_env.compute_client()
    imgs = c.virtual_machine_images
    assert [p.name for p in imgs.list_publishers("westeurope")] == [
        "MicrosoftWindowsDesktop",
        "MicrosoftWindowsServer",
    ]
    assert [o.name for o in imgs.list_offers("westeurope", "MicrosoftWindowsDesktop")] == [
        "office-365",
        "windows-11",
    ]
    assert [
        s.name for s in imgs.list_skus("westeurope", "MicrosoftWindowsDesktop", "windows-11")
    ] == ["win11-25h2-avd"]
    versions = imgs.list("westeurope", "MicrosoftWindowsDesktop", "windows-11", "win11-25h2-avd")
    assert [v.name for v in versions] == ["26200.7171.251105", "26200.7462.251205"]
    top = imgs.list(
        "westeurope",
        "MicrosoftWindowsDesktop",
        "windows-11",
        "win11-25h2-avd",
        top=1,
        orderby="name desc",
    )
    assert [v.name for v in top] == ["26200.7462.251205"]
    img = imgs.get(
        "westeurope", "MicrosoftWindowsDesktop", "windows-11", "win11-25h2-avd", "26200.7462.251205"
    )
    assert img.properties.hyper_v_generation == "V2"
    assert img.properties.os_disk_image.operating_system == "Windows"
    with pytest.raises(ResourceNotFoundError):
        imgs.get("westeurope", "MicrosoftWindowsDesktop", "windows-11", "win11-25h2-avd", "1.2.3")
    assert imgs.list_publishers("eastasia") == []
    # A new version published through the admin API shows up (no event, as in Azure).
    s, body = emulator_env.admin(
        "POST",
        "marketplace/versions",
        {
            "publisher": "MicrosoftWindowsDesktop",
            "offer": "windows-11",
            "sku": "win11-25h2-avd",
            "version": "26200.7600.260105",
        },
    )
    assert s == 201
    versions = imgs.list("westeurope", "MicrosoftWindowsDesktop", "windows-11", "win11-25h2-avd")
    assert versions[-1].name == "26200.7600.260105"
    s, body = emulator_env.admin("POST", "marketplace/versions", {"publisher": "x"})
    assert s == 400
    assert "offer" in body["error"]["message"]
    vm = emulator_env.create_vm("newest", client=c)
    assert vm.properties.storage_profile.image_reference.exact_version == "26200.7600.260105"
