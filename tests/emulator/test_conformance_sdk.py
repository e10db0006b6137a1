"""The request forms and actions added for REST conformance, driven through the real SDK clients.

PATCH with ARM's merge semantics (tags replaced whole, properties merged, fixed properties
refused) for VMs, disks, snapshots, run commands, gallery image definitions and NICs; the VM
actions redeploy, reapply, vmSizes and deallocate with hibernation; disk and snapshot SAS grant
and revoke; snapshot Import; managed images (Microsoft.Compute/images) as the older capture path;
shared and community gallery image references; the built-in run command catalogue.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from test_gallery_support import image_body, make_vm, version_body

from tests.emulator.conftest import SUB, WIN11_25H2

RG = "rg"
SUB2 = "00000000-0000-0000-0000-000000000002"


def _statuses(client: Any, vm: str, rg: str = RG) -> list[str]:
    return [s.code for s in client.virtual_machines.instance_view(rg, vm).statuses]


# -- virtual machines ----------------------------------------------------------------------------


def test_vm_patch_merges_properties_replaces_tags_and_refuses_fixed_ones(emulator_env: Any) -> None:
    env = emulator_env
    c = env.compute_client()
    before = env.create_vm("p1", tags={"a": "1", "b": "2"}, client=c)
    updated = c.virtual_machines.begin_update(
        RG,
        "p1",
        {
            "tags": {"c": "3"},
            "properties": {
                "hardwareProfile": {"vmSize": "Standard_D8s_v5"},
                "diagnosticsProfile": {"bootDiagnostics": {"enabled": False}},
            },
        },
    ).result()
    assert updated.tags == {"c": "3"}  # replaced whole, not merged
    assert updated.hardware_profile.vm_size == "Standard_D8s_v5"
    assert updated.diagnostics_profile.boot_diagnostics.enabled is False
    # everything the patch did not name is kept
    assert updated.os_profile.computer_name == before.os_profile.computer_name
    assert updated.storage_profile.os_disk.managed_disk.id == (
        before.storage_profile.os_disk.managed_disk.id
    )
    assert updated.security_profile.security_type == "TrustedLaunch"
    assert updated.etag != before.etag
    with pytest.raises(HttpResponseError) as err:
        c.virtual_machines.begin_update(
            RG, "p1", {"properties": {"osProfile": {"computerName": "renamed"}}}
        ).result()
    assert err.value.status_code == 409
    assert err.value.error.code == "PropertyChangeNotAllowed"
    with pytest.raises(HttpResponseError) as err:
        c.virtual_machines.begin_update(
            RG,
            "p1",
            {"properties": {"storageProfile": {"imageReference": {**WIN11_25H2, "sku": "x"}}}},
        ).result()
    assert err.value.error.code == "PropertyChangeNotAllowed"
    # read-only properties in a request are ignored, as Azure ignores them
    again = c.virtual_machines.begin_update(
        RG, "p1", {"properties": {"provisioningState": "Failed", "vmId": "x"}}
    ).result()
    assert again.provisioning_state == "Succeeded"
    assert again.vm_id == before.vm_id


def test_vm_put_on_an_existing_vm_updates_it(emulator_env: Any, make_vm_body: Any) -> None:
    env = emulator_env
    c = env.compute_client()
    env.create_vm("p2", client=c)
    body = make_vm_body(tags={"new": "tag"})
    body["properties"]["hardwareProfile"]["vmSize"] = "Standard_D16s_v5"
    vm = c.virtual_machines.begin_create_or_update(RG, "p2", body).result()
    assert vm.tags == {"new": "tag"}
    assert vm.hardware_profile.vm_size == "Standard_D16s_v5"
    assert vm.provisioning_state == "Succeeded"


def test_vm_redeploy_reapply_and_available_sizes(emulator_env: Any) -> None:
    env = emulator_env
    c = env.compute_client()
    env.create_vm("a1", client=c)
    heard: list[str] = []
    env.emu.add_listener("vm.power", lambda vm_id, power: heard.append(power))
    c.virtual_machines.begin_redeploy(RG, "a1").result()
    assert heard == ["starting", "running"]  # the VM went down and came back on a new host
    assert "PowerState/running" in _statuses(c, "a1")
    c.virtual_machines.begin_reapply(RG, "a1").result()
    assert c.virtual_machines.get(RG, "a1").provisioning_state == "Succeeded"
    sizes = {s.name: s for s in c.virtual_machines.list_available_sizes(RG, "a1")}
    assert sizes["Standard_D4s_v5"].number_of_cores == 4
    with pytest.raises(HttpResponseError) as err:
        c.virtual_machines.begin_redeploy(RG, "missing").result()
    assert err.value.status_code == 404


def test_vm_hibernation_needs_the_capability(emulator_env: Any) -> None:
    env = emulator_env
    c = env.compute_client()
    env.create_vm("h1", client=c)
    with pytest.raises(HttpResponseError) as err:
        c.virtual_machines.begin_deallocate(RG, "h1", hibernate=True).result()
    assert err.value.status_code == 409
    c.virtual_machines.begin_update(
        RG, "h1", {"properties": {"additionalCapabilities": {"hibernationEnabled": True}}}
    ).result()
    c.virtual_machines.begin_deallocate(RG, "h1", hibernate=True).result()
    codes = _statuses(c, "h1")
    assert "PowerState/deallocated" in codes
    assert "HibernationState/Hibernated" in codes
    c.virtual_machines.begin_start(RG, "h1").result()
    assert "HibernationState/Hibernated" not in _statuses(c, "h1")


# -- disks and snapshots ---------------------------------------------------------------------------


def test_disk_patch_grows_only_and_replaces_tags(emulator_env: Any) -> None:
    c = emulator_env.compute_client()
    body = {
        "location": "westeurope",
        "tags": {"a": "1"},
        "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 32},
    }
    c.disks.begin_create_or_update(RG, "d1", body).result()
    disk = c.disks.begin_update(
        RG, "d1", {"tags": {"b": "2"}, "properties": {"diskSizeGB": 64}}
    ).result()
    assert disk.tags == {"b": "2"}
    assert disk.disk_size_gb == 64
    assert disk.disk_size_bytes == 64 * 1024**3
    assert disk.creation_data.create_option == "Empty"  # kept
    with pytest.raises(HttpResponseError) as err:
        c.disks.begin_update(RG, "d1", {"properties": {"diskSizeGB": 16}}).result()
    assert err.value.status_code == 400
    assert "reduction" in err.value.message


def test_disk_and_snapshot_sas_grant_and_revoke(emulator_env: Any) -> None:
    env = emulator_env
    c = env.compute_client()
    body = {
        "location": "westeurope",
        "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 32},
    }
    c.disks.begin_create_or_update(RG, "d2", body).result()
    sas = c.disks.begin_grant_access(
        RG, "d2", {"access": "Read", "durationInSeconds": 3600}
    ).result()
    assert sas.access_sas.startswith("https://")
    assert "sig=" in sas.access_sas
    assert c.disks.get(RG, "d2").disk_state == "ActiveSAS"
    c.disks.begin_revoke_access(RG, "d2").result()
    assert c.disks.get(RG, "d2").disk_state == "Unattached"
    # an OS disk of a running VM gets no SAS
    vm = env.create_vm("s1", client=c)
    os_disk = vm.storage_profile.os_disk.name
    with pytest.raises(HttpResponseError) as err:
        c.disks.begin_grant_access(
            RG, os_disk, {"access": "Read", "durationInSeconds": 600}
        ).result()
    assert err.value.status_code == 409
    snap = {
        "location": "westeurope",
        "properties": {
            "osType": "Windows",
            "creationData": {
                "createOption": "Import",
                "sourceUri": "https://account.blob.core.windows.net/vhds/os.vhd",
            },
        },
    }
    imported = c.snapshots.begin_create_or_update(RG, "imp", snap).result()
    assert imported.provisioning_state == "Succeeded"
    assert imported.creation_data.source_uri.endswith("os.vhd")
    granted = c.snapshots.begin_grant_access(
        RG, "imp", {"access": "Read", "durationInSeconds": 60}
    ).result()
    assert granted.access_sas.startswith("https://")
    c.snapshots.begin_revoke_access(RG, "imp").result()
    updated = c.snapshots.begin_update(RG, "imp", {"tags": {"k": "v"}}).result()
    assert updated.tags == {"k": "v"}


# -- run commands -------------------------------------------------------------------------------


def _rc_view(c: Any, vm: str, name: str) -> Any:
    return c.virtual_machine_run_commands.get_by_virtual_machine(
        RG, vm, name, expand="instanceView"
    ).instance_view


def test_run_command_patch_reruns_with_merged_properties(emulator_env: Any) -> None:
    env = emulator_env
    c = env.compute_client()
    env.create_vm("r1", client=c)
    body = {
        "location": "westeurope",
        "properties": {"source": {"script": "Write-Output one"}, "timeoutInSeconds": 600},
    }
    c.virtual_machine_run_commands.begin_create_or_update(RG, "r1", "rc", body).result()
    assert _rc_view(c, "r1", "rc").output == "one"
    c.virtual_machine_run_commands.begin_update(
        RG, "r1", "rc", {"properties": {"source": {"script": "Write-Output two"}}}
    ).result()
    rc = c.virtual_machine_run_commands.get_by_virtual_machine(
        RG, "r1", "rc", expand="instanceView"
    )
    assert rc.instance_view.output == "two"
    assert rc.timeout_in_seconds == 600  # kept from the first request


def test_run_command_from_a_script_uri_fails_like_an_unreachable_script(
    emulator_env: Any,
) -> None:
    env = emulator_env
    c = env.compute_client()
    env.create_vm("r2", client=c)
    body = {
        "location": "westeurope",
        "properties": {
            "source": {"scriptUri": "https://account.blob.core.windows.net/s/script.ps1"},
            "runAsUser": "user1",
            "outputBlobUri": "https://account.blob.core.windows.net/out/o.txt",
        },
    }
    rc = c.virtual_machine_run_commands.begin_create_or_update(RG, "r2", "uri", body).result()
    assert rc.provisioning_state == "Succeeded"  # treatFailureAsDeploymentFailure is false
    assert rc.run_as_user == "user1"
    assert rc.output_blob_uri.endswith("o.txt")
    view = _rc_view(c, "r2", "uri")
    assert view.execution_state == "Failed"
    assert "download" in view.error


def test_builtin_run_command_catalogue(emulator_env: Any) -> None:
    c = emulator_env.compute_client()
    ids = {d.id for d in c.virtual_machine_run_commands.list("westeurope")}
    assert {"RunPowerShellScript", "RunShellScript"} <= ids
    assert c.virtual_machine_run_commands.get("westeurope", "RunShellScript").os_type == "Linux"


# -- managed images and the gallery ------------------------------------------------------------


def _gallery_with_image(c: Any, gallery: str = "gal", rg: str = RG) -> None:
    c.galleries.begin_create_or_update(rg, gallery, {"location": "westeurope"}).result()
    c.gallery_images.begin_create_or_update(rg, gallery, "img", image_body(security=None)).result()


def test_managed_image_captures_a_generalized_vm_and_serves_vms_and_versions(
    emulator_env: Any,
) -> None:
    env = emulator_env
    c = env.compute_client()
    running = make_vm(env, "running-src", rg=RG)
    with pytest.raises(HttpResponseError) as err:
        c.images.begin_create_or_update(
            RG,
            "bad",
            {"location": "westeurope", "properties": {"sourceVirtualMachine": {"id": running}}},
        ).result()
    assert err.value.status_code == 409
    src = make_vm(env, "cap-src", rg=RG, generalized=True)
    image = c.images.begin_create_or_update(
        RG,
        "img1",
        {"location": "westeurope", "properties": {"sourceVirtualMachine": {"id": src}}},
    ).result()
    assert image.provisioning_state == "Succeeded"
    assert image.storage_profile.os_disk.os_state == "Generalized"
    assert image.source_virtual_machine.id == src
    assert [i.name for i in c.images.list_by_resource_group(RG)] == ["img1"]
    assert [i.name for i in c.images.list()] == ["img1"]
    vm = env.create_vm("from-image", image={"id": image.id}, trusted_launch=False, client=c)
    assert vm.storage_profile.image_reference.id == image.id
    assert "PowerState/running" in _statuses(c, "from-image")
    _gallery_with_image(c)
    version = c.gallery_image_versions.begin_create_or_update(
        RG,
        "gal",
        "img",
        "1.0.0",
        version_body({"source": {"id": image.id}}, safety={"blockDeletionBeforeEndOfLife": False}),
    ).result()
    assert version.provisioning_state == "Succeeded"
    assert version.storage_profile.source.id == image.id


def test_gallery_version_from_snapshot_with_data_disks(emulator_env: Any) -> None:
    env = emulator_env
    c = env.compute_client()
    vm = env.create_vm("snapsrc", trusted_launch=False, client=c)
    os_disk = vm.storage_profile.os_disk.managed_disk.id
    snap = c.snapshots.begin_create_or_update(
        RG,
        "os-snap",
        {
            "location": "westeurope",
            "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": os_disk}},
        },
    ).result()
    data = c.disks.begin_create_or_update(
        RG,
        "data1",
        {
            "location": "westeurope",
            "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 16},
        },
    ).result()
    _gallery_with_image(c)
    storage = {
        "osDiskImage": {"source": {"id": snap.id}, "hostCaching": "ReadOnly"},
        "dataDiskImages": [{"lun": 1, "hostCaching": "None", "source": {"id": data.id}}],
    }
    version = c.gallery_image_versions.begin_create_or_update(
        RG,
        "gal",
        "img",
        "1.0.0",
        version_body(storage, safety={"blockDeletionBeforeEndOfLife": False}),
    ).result()
    assert version.storage_profile.os_disk_image.host_caching == "ReadOnly"
    [dd] = version.storage_profile.data_disk_images
    assert (dd.lun, dd.size_in_gb, dd.source.id) == (1, 16, data.id)


def test_gallery_image_patch_merges_nested_properties(emulator_env: Any) -> None:
    c = emulator_env.compute_client()
    _gallery_with_image(c)
    c.gallery_images.begin_update(
        RG, "gal", "img", {"properties": {"recommended": {"vCPUs": {"min": 2, "max": 16}}}}
    ).result()
    img = c.gallery_images.begin_update(
        RG, "gal", "img", {"properties": {"recommended": {"memory": {"min": 4}}}}
    ).result()
    assert img.recommended.v_cp_us.min == 2  # kept by the second patch
    assert img.recommended.memory.min == 4
    assert img.properties.identifier.sku == "win11"


def _shared_world(emulator_factory: Any, small_scenario: dict[str, Any]) -> Any:
    sc = copy.deepcopy(small_scenario)
    sc["subscriptions"] = [{"id": SUB}, {"id": SUB2}]
    env = emulator_factory(sc)
    c = env.compute_client()
    _gallery_with_image(c, rg="rg-img")
    src = make_vm(env, "share-src", generalized=True)
    c.gallery_image_versions.begin_create_or_update(
        "rg-img",
        "gal",
        "img",
        "1.0.0",
        version_body({"source": {"id": src}}, safety={"blockDeletionBeforeEndOfLife": False}),
    ).result()
    return env


def test_shared_gallery_reference_needs_the_gallery_shared_with_the_subscription(
    emulator_factory: Any, small_scenario: dict[str, Any]
) -> None:
    env = _shared_world(emulator_factory, small_scenario)
    c = env.compute_client()
    other = env.compute_client(subscription=SUB2)
    unique = c.galleries.get("rg-img", "gal").identifier.unique_name
    shared_id = f"/SharedGalleries/{unique}/Images/img/Versions/1.0.0"
    with pytest.raises(HttpResponseError) as err:
        env.create_vm(
            "other", image={"sharedGalleryImageId": shared_id}, client=other, trusted_launch=False
        )
    assert err.value.status_code == 404
    with pytest.raises(HttpResponseError) as err:  # Private: groups cannot be added
        c.gallery_sharing_profile.begin_update(
            "rg-img",
            "gal",
            {"operationType": "Add", "groups": [{"type": "Subscriptions", "ids": [SUB2]}]},
        ).result()
    assert err.value.status_code == 409
    c.galleries.begin_update(
        "rg-img", "gal", {"properties": {"sharingProfile": {"permissions": "Groups"}}}
    ).result()
    result = c.gallery_sharing_profile.begin_update(
        "rg-img",
        "gal",
        {"operationType": "Add", "groups": [{"type": "Subscriptions", "ids": [SUB2]}]},
    ).result()
    assert result.groups[0].ids == [SUB2]
    vm = env.create_vm(
        "other", image={"sharedGalleryImageId": shared_id}, client=other, trusted_launch=False
    )
    ref = vm.storage_profile.image_reference
    assert ref.shared_gallery_image_id == shared_id
    assert ref.exact_version == "1.0.0"
    # the consumer's read views
    [shared] = list(other.shared_galleries.list("westeurope"))
    assert shared.identifier.unique_id == f"/SharedGalleries/{unique}"
    [img] = list(other.shared_gallery_images.list("westeurope", unique))
    assert img.properties.identifier.sku == "win11"
    ver = other.shared_gallery_image_versions.get("westeurope", unique, "img", "1.0.0")
    assert ver.identifier.unique_id == shared_id
    assert ver.properties.storage_profile.os_disk_image.disk_size_gb > 0
    with pytest.raises(HttpResponseError) as err:
        env.compute_client(subscription=SUB2).shared_galleries.get("westeurope", "nope")
    assert err.value.status_code == 404
    # without /Versions/...: the latest version
    latest = f"/SharedGalleries/{unique}/Images/img"
    vm2 = env.create_vm(
        "other2", image={"sharedGalleryImageId": latest}, client=other, trusted_launch=False
    )
    assert vm2.storage_profile.image_reference.exact_version == "1.0.0"


def test_community_gallery_reference_after_enable_community(
    emulator_factory: Any, small_scenario: dict[str, Any]
) -> None:
    env = _shared_world(emulator_factory, small_scenario)
    c = env.compute_client()
    c.galleries.begin_update(
        "rg-img",
        "gal",
        {
            "properties": {
                "sharingProfile": {
                    "permissions": "Community",
                    "communityGalleryInfo": {
                        "publisherUri": "https://contoso.com",
                        "publisherContact": "images@contoso.com",
                        "eula": "https://contoso.com/eula",
                        "publicNamePrefix": "contoso",
                    },
                }
            }
        },
    ).result()
    c.gallery_sharing_profile.begin_update(
        "rg-img", "gal", {"operationType": "EnableCommunity"}
    ).result()
    info = c.galleries.get("rg-img", "gal").sharing_profile.community_gallery_info
    [public] = info.public_names
    assert public.startswith("contoso-")
    ref = f"/CommunityGalleries/{public}/Images/img/Versions/1.0.0"
    other = env.compute_client(subscription=SUB2)
    vm = env.create_vm(
        "community", image={"communityGalleryImageId": ref}, client=other, trusted_launch=False
    )
    assert vm.storage_profile.image_reference.community_gallery_image_id == ref
    gallery = other.community_galleries.get("westeurope", public)
    assert gallery.identifier.unique_id == f"/CommunityGalleries/{public}"
    assert gallery.properties.community_metadata.publisher_contact == "images@contoso.com"
    image = other.community_gallery_images.get("westeurope", public, "img")
    assert image.properties.os_type == "Windows"
    [version] = list(other.community_gallery_image_versions.list("westeurope", public, "img"))
    assert version.identifier.unique_id == ref


# -- network interfaces ------------------------------------------------------------------------


def test_nic_patch_replaces_tags(emulator_env: Any) -> None:
    env = emulator_env
    env.create_vm("n1")
    path = (
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/"
        "networkInterfaces/n1-nic"
    )
    status, _, body = env.http("PATCH", path + "?api-version=2025-03-01", {"tags": {"x": "1"}})
    assert status == 200
    assert body["tags"] == {"x": "1"}
    status, _, body = env.http("PATCH", path + "?api-version=2025-03-01", {"tags": {"y": "2"}})
    assert body["tags"] == {"y": "2"}
    assert body["properties"]["virtualMachine"]["id"].endswith("/n1")


def test_vm_echoes_accepted_fields_and_user_data_only_on_expand(
    emulator_env: Any, make_vm_body: Any
) -> None:
    env = emulator_env
    c = env.compute_client()
    body = make_vm_body()
    body["properties"]["userData"] = "ZWNobyBoaQ=="
    body["properties"]["priority"] = "Regular"
    body["properties"]["additionalCapabilities"] = {"hibernationEnabled": True}
    c.virtual_machines.begin_create_or_update(RG, "u1", body).result()
    vm = c.virtual_machines.get(RG, "u1")
    assert vm.user_data is None
    assert vm.priority == "Regular"
    assert vm.additional_capabilities.hibernation_enabled is True
    assert c.virtual_machines.get(RG, "u1", expand="userData").user_data == "ZWNobyBoaQ=="


def test_actions_deliberately_not_served_answer_invalid_resource_type(emulator_env: Any) -> None:
    """The README's Conformance table lists them; a client gets ARM's 404, never a 5xx."""
    env = emulator_env
    c = env.compute_client()
    env.create_vm("ns1", client=c)
    with pytest.raises(HttpResponseError) as err:
        c.virtual_machines.begin_reimage(RG, "ns1").result()
    assert err.value.status_code == 404
    assert err.value.error.code == "InvalidResourceType"


# -- Azure Virtual Desktop -------------------------------------------------------------------------


def test_host_pool_patch_merges_agent_update_and_keeps_preview_fields(emulator_env: Any) -> None:
    env = emulator_env
    path = (
        f"/subscriptions/{SUB}/resourceGroups/rg-avd/providers/Microsoft.DesktopVirtualization/"
        "hostPools/hp1"
    )
    body = {
        "location": "westeurope",
        "tags": {"a": "1"},
        "properties": {
            "hostPoolType": "Pooled",
            "loadBalancerType": "BreadthFirst",
            "preferredAppGroupType": "Desktop",
            "friendlyName": "first",
            "agentUpdate": {
                "type": "Scheduled",
                "maintenanceWindowTimeZone": "UTC",
                "maintenanceWindows": [{"hour": 2, "dayOfWeek": "Sunday"}],
            },
            "managedPrivateUDP": "Enabled",
            "managementType": "Standard",
        },
    }
    status, _, created = env.http("PUT", path + "?api-version=2024-08-08-preview", body)
    assert status in (200, 201), created
    avd = env.avd_client()
    pool = avd.host_pools.update(
        "rg-avd",
        "hp1",
        {"tags": {"b": "2"}, "properties": {"agentUpdate": {"useSessionHostLocalTime": True}}},
    )
    assert pool.tags == {"b": "2"}
    assert pool.friendly_name == "first"
    assert pool.agent_update.type == "Scheduled"  # merged, not replaced
    assert pool.agent_update.use_session_host_local_time is True
    assert pool.agent_update.maintenance_windows[0].hour == 2
    status, _, got = env.http("GET", path + "?api-version=2024-08-08-preview")
    assert got["properties"]["managedPrivateUDP"] == "Enabled"
    change = {"properties": {"managementType": "Automated"}}
    status, _, err = env.http("PATCH", path + "?api-version=2024-08-08-preview", change)
    assert status == 400
    assert err["error"]["code"] == "PropertyChangeNotAllowed"


def test_vm_data_disks_at_creation_follow_their_delete_option(
    emulator_env: Any, make_vm_body: Any
) -> None:
    env = emulator_env
    c = env.compute_client()
    spare = {
        "location": "westeurope",
        "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 8},
    }
    c.disks.begin_create_or_update(RG, "spare", spare).result()
    body = make_vm_body()
    body["properties"]["storageProfile"]["dataDisks"] = [
        {"lun": 0, "createOption": "Empty", "diskSizeGB": 32, "deleteOption": "Delete"},
        {
            "lun": 1,
            "createOption": "Attach",
            "managedDisk": {"id": c.disks.get(RG, "spare").id},
        },
    ]
    vm = c.virtual_machines.begin_create_or_update(RG, "dd1", body).result()
    lun0, lun1 = sorted(vm.storage_profile.data_disks, key=lambda d: d.lun)
    assert lun0.disk_size_gb == 32
    assert c.disks.get(RG, lun0.name).managed_by == vm.id
    assert lun1.name == "spare"
    assert c.disks.get(RG, "spare").disk_state == "Attached"
    # a PATCH naming the same luns changes their settings, not the disks
    patched = c.virtual_machines.begin_update(
        RG,
        "dd1",
        {
            "properties": {
                "storageProfile": {"dataDisks": [{"lun": 0, "caching": "ReadOnly"}, {"lun": 1}]}
            }
        },
    ).result()
    assert sorted(d.caching for d in patched.storage_profile.data_disks) == ["None", "ReadOnly"]
    assert {d.managed_disk.id for d in patched.storage_profile.data_disks} == {
        lun0.managed_disk.id,
        lun1.managed_disk.id,
    }
    with pytest.raises(HttpResponseError) as err:
        c.virtual_machines.begin_update(
            RG, "dd1", {"properties": {"storageProfile": {"dataDisks": []}}}
        ).result()
    assert err.value.status_code == 400
    # a gallery version captured from the VM carries its data disks
    with env.emu.lock:
        from emulator.compute import guest_of, vm_runtime

        guest = guest_of(env.emu, vm.id)
        rt = vm_runtime(env.emu, vm.id)
        assert guest is not None
        assert rt is not None
        guest.bitlocker, guest.sysprepped = "FullyDecrypted", True
        rt.power, rt.generalized = "deallocated", True
    c.galleries.begin_create_or_update(RG, "gal", {"location": "westeurope"}).result()
    c.gallery_images.begin_create_or_update(
        RG, "gal", "img", image_body(security="TrustedLaunchSupported")
    ).result()
    version = c.gallery_image_versions.begin_create_or_update(
        RG,
        "gal",
        "img",
        "1.0.0",
        version_body({"source": {"id": vm.id}}, safety={"blockDeletionBeforeEndOfLife": False}),
    ).result()
    assert sorted(d.lun for d in version.storage_profile.data_disk_images) == [0, 1]
    c.virtual_machines.begin_delete(RG, "dd1").result()
    names = {d.name for d in c.disks.list_by_resource_group(RG)}
    assert lun0.name not in names  # deleteOption Delete
    assert c.disks.get(RG, "spare").disk_state == "Unattached"  # Detach (the default)
