"""Conformance: every Azure REST example of an operation the emulator serves, replayed over HTTP.

For each example in ../shared/azure-rest-examples the test builds the request the example
describes (method and path of its operation, its parameters, its api-version, its REQUEST body
verbatim, placeholders such as ``{subscription-id}`` or ``{existing-nic-name}`` filled with
names the test creates first), sends it to the emulator, and asserts that

- the emulator accepts it (2xx), and
- the answer carries every key of the example's answer (recursively; lists compare each item
  with the example's first), for the immediate answer and, for long operations, the final one.

Keys the emulator deliberately leaves out are listed in ``NOT_MODELLED`` with the reason; an
example whose operation is deliberately not served would be listed in ``NOT_SERVED`` (none is).
Without ../shared the test is skipped (the examples are reference data outside the repository).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from tests.emulator.conftest import EXAMPLES as _DEFAULT_EXAMPLES
from tests.emulator.conftest import REPO, SMALL_SCENARIO

# ../shared beside the checkout; a git worktree one level deeper finds it one more level up.
EXAMPLES = next(
    (
        p
        for p in (
            Path(os.environ.get("AZURE_REST_EXAMPLES", "") or _DEFAULT_EXAMPLES),
            REPO.parents[1] / "shared" / "azure-rest-examples",
        )
        if p.is_dir()
    ),
    _DEFAULT_EXAMPLES,
)

SUB = "00000000-0000-0000-0000-000000000001"
RG = "myResourceGroup"
# The examples' subscription ids and placeholders, all mapped to the scenario's subscription.
SUBSCRIPTIONS = (
    "{subscription-id}",
    "{subscriptionId}",
    "daefabc0-95b4-48b3-b645-8a753a63c4fa",
    "24fb23e3-6ba3-41f0-9b6e-e41131d5d61e",
)
WINDOWS_SERVER = {
    "publisher": "MicrosoftWindowsServer",
    "offer": "WindowsServer",
    "sku": "2022-datacenter-g2",
    "version": "latest",
}
LINUX = ("Canonical", "ubuntu-24_04-lts", "server", "24.04.202511010")
PLACEHOLDERS = {
    "/subscriptions/subid/": f"/subscriptions/{SUB}/",
    "{resourceGroup}": RG,
    "{vmName}": "myVM",
    "{imageName}": "myImage",
    "{osSnapshotName}": "myOsSnapshot",
    "{dataDiskName}": "myDataDisk",
    "{existing-nic-name}": "myNic",
    "{your-username}": "azureuser",
    "{your-password}": "Not-a-real-secret-1",
    "{image_publisher}": LINUX[0],
    "{image_offer}": LINUX[1],
    "{image_sku}": LINUX[2],
}

MARKETPLACE_PARAMETERS = {
    "location": "westeurope",
    "publisherName": "MicrosoftWindowsDesktop",
    "offer": "windows-11",
    "skus": "win11-25h2-avd",
    "version": "26200.7462.251205",
    "$orderby": "name desc",
    "$expand": "properties",
}

_RG = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers"
_CMP = _RG + "/Microsoft.Compute"
_VM = _CMP + "/virtualMachines/{vmName}"
_GAL = _CMP + "/galleries/{galleryName}"
_IMG = _GAL + "/images/{galleryImageName}"
_VER = _IMG + "/versions/{galleryImageVersionName}"
_MKT = (
    "/subscriptions/{subscriptionId}/providers/Microsoft.Compute/locations/{location}"
    "/publishers/{publisherName}/artifacttypes/vmimage/offers"
)
_HP = _RG + "/Microsoft.DesktopVirtualization/hostPools/{hostPoolName}"
_SH = _HP + "/sessionHosts/{sessionHostName}"
_US = _SH + "/userSessions/{userSessionId}"
_NIC = _RG + "/Microsoft.Network/networkInterfaces/{networkInterfaceName}"

# Operation of each example: file name (without .json) -> (method, path template).
OPERATIONS: dict[str, tuple[str, str]] = {
    "Disk_Create_ByCopyingASnapshot": ("PUT", _CMP + "/disks/{diskName}"),
    "Disk_Delete": ("DELETE", _CMP + "/disks/{diskName}"),
    "Disk_Get": ("GET", _CMP + "/disks/{diskName}"),
    "Snapshot_Create_ByImportingAnUnmanagedBlobFromTheSameSubscription": (
        "PUT",
        _CMP + "/snapshots/{snapshotName}",
    ),
    "Snapshot_Create_FromAnExistingSnapshot": ("PUT", _CMP + "/snapshots/{snapshotName}"),
    "Snapshot_Delete": ("DELETE", _CMP + "/snapshots/{snapshotName}"),
    "Snapshot_Get": ("GET", _CMP + "/snapshots/{snapshotName}"),
    "GalleryImageVersion_Create": ("PUT", _VER),
    "GalleryImageVersion_Create_WithSnapshotsAsSource": ("PUT", _VER),
    "GalleryImageVersion_Create_WithVmAsSource": ("PUT", _VER),
    "GalleryImageVersion_Delete": ("DELETE", _VER),
    "GalleryImageVersion_Get": ("GET", _VER),
    "GalleryImageVersion_Get_WithReplicationStatus": ("GET", _VER),
    "GalleryImageVersion_ListByGalleryImage": ("GET", _IMG + "/versions"),
    "GalleryImageVersion_Update": ("PATCH", _VER),
    "GalleryImage_Create": ("PUT", _IMG),
    "GalleryImage_Get": ("GET", _IMG),
    "GalleryImage_ListByGallery": ("GET", _GAL + "/images"),
    "Gallery_Create": ("PUT", _GAL),
    "Gallery_Get": ("GET", _GAL),
    "VirtualMachineImage_ListOffers_MaximumSet_Gen": ("GET", _MKT),
    "VirtualMachineImage_ListSkus_MaximumSet_Gen": ("GET", _MKT + "/{offer}/skus"),
    "VirtualMachineImage_List_MaximumSet_Gen": ("GET", _MKT + "/{offer}/skus/{skus}/versions"),
    "VirtualMachineImage_List_MinimumSet_Gen": ("GET", _MKT + "/{offer}/skus/{skus}/versions"),
    "VirtualMachineImage_Get_MaximumSet_Gen": (
        "GET",
        _MKT + "/{offer}/skus/{skus}/versions/{version}",
    ),
    "VirtualMachineImage_Get_MinimumSet_Gen": (
        "GET",
        _MKT + "/{offer}/skus/{skus}/versions/{version}",
    ),
    "VirtualMachineRunCommand": ("POST", _VM + "/runCommand"),
    "VirtualMachineRunCommand_CreateOrUpdate": ("PUT", _VM + "/runCommands/{runCommandName}"),
    "VirtualMachineRunCommand_Get": ("GET", _VM + "/runCommands/{runCommandName}"),
    "VirtualMachine_Generalize": ("POST", _VM + "/generalize"),
    "VirtualMachine_Get_InstanceView": ("GET", _VM + "/instanceView"),
    "VirtualMachine_ListBySubscription_ByLocation": (
        "GET",
        "/subscriptions/{subscriptionId}/providers/Microsoft.Compute/locations/{location}"
        "/virtualMachines",
    ),
    "VirtualMachine_List_MinimumSet_Gen": ("GET", _CMP + "/virtualMachines"),
    "VirtualMachine_Create_FromAGeneralizedSharedImage": ("PUT", _VM),
    "VirtualMachine_Create_FromASharedGalleryImage": ("PUT", _VM),
    "VirtualMachine_Create_WithAMarketplaceImagePlan": ("PUT", _VM),
    "VirtualMachine_Create_WithSshAuthentication": ("PUT", _VM),
    "VirtualMachine_Deallocate_MaximumSet_Gen": ("POST", _VM + "/deallocate"),
    "VirtualMachine_Delete_Force": ("DELETE", _VM),
    "VirtualMachine_Get": ("GET", _VM),
    "VirtualMachine_Start_MaximumSet_Gen": ("POST", _VM + "/start"),
    "HostPool_Get": ("GET", _HP),
    "HostPool_Create": ("PUT", _HP),
    "HostPool_Update": ("PATCH", _HP),
    "HostPools_RetrieveRegistrationToken_Post": ("POST", _HP + "/retrieveRegistrationToken"),
    "HostPools_ListRegistrationToken_Post": ("POST", _HP + "/listRegistrationTokens"),
    "SessionHost_Delete": ("DELETE", _SH),
    "SessionHost_List": ("GET", _HP + "/sessionHosts"),
    "SessionHost_Get": ("GET", _SH),
    "SessionHost_Update": ("PATCH", _SH),
    "UserSession_SendMessage_Post": ("POST", _US + "/sendMessage"),
    "UserSession_Disconnect_Post": ("POST", _US + "/disconnect"),
    "UserSession_Get": ("GET", _US),
    "UserSession_List": ("GET", _SH + "/userSessions"),
    "UserSession_ListByHostPool": ("GET", _HP + "/userSessions"),
    "UserSession_Delete": ("DELETE", _US),
    "NetworkInterfaceCreate": ("PUT", _NIC),
    "NetworkInterfaceGet": ("GET", _NIC),
    "NetworkInterfaceDelete": ("DELETE", _NIC),
}

# Examples whose operation the emulator deliberately does not serve: name -> reason.
NOT_SERVED: dict[str, str] = {}

# Response keys the emulator deliberately leaves out (dotted path from the body) -> reason.
NOT_MODELLED = {
    "properties.encryptionSettingsCollection": "Azure Disk Encryption (per-disk key vault)",
    "properties.purchasePlan": "marketplace purchase plans on disks",
    "properties.applicationProfile": "VM applications (echoed when sent)",
    "properties.availabilitySet": "availability sets (echoed when sent)",
    "properties.proximityPlacementGroup": "proximity placement groups (echoed when sent)",
    "properties.extensionsTimeBudget": "VM extensions (echoed when sent)",
    "resources": "VM extensions",
    "properties.instanceView.bootDiagnostics": "boot diagnostics storage",
    "properties.diagnosticsProfile.bootDiagnostics.storageUri": "boot diagnostics storage",
    "bootDiagnostics": "boot diagnostics storage",
    "patchStatus": "patch assessment",
    "maintenanceRedeployStatus": "planned maintenance",
    "properties.sessionHostConfiguration": "preview-only (2025-03-01-preview)",
    "properties.lastSessionHostUpdateTime": "preview-only (2025-03-01-preview)",
    "properties.dscpConfiguration": "DSCP configurations",
    "properties.networkSecurityGroup": "network security groups",
    "properties.tapConfigurations": "virtual network taps",
    "properties.imageDeprecationStatus.scheduledDeprecationTime": "image deprecation dates",
    "properties.imageDeprecationStatus.alternativeOption": "image deprecation dates",
    "extendedLocation": "edge zones",
    "properties.storageProfile.osDisk.vhd": "unmanaged (VHD) OS disks",
    "properties.ipConfigurations.properties.publicIPAddress": (
        "public IP addresses (echoed when the request names one; Microsoft.Network/"
        "publicIPAddresses is not served)"
    ),
    "properties.publishingProfile.targetRegions.encryption": (
        "disk encryption sets (echoed only when the request names them)"
    ),
}
# The same per example (an example name or a prefix ending in "_") -> {path: reason}.
NOT_MODELLED_IN = {
    "VirtualMachine_Get": {"managedBy": "VM scale sets (a VM's managedBy names its scale set)"},
    "VirtualMachineImage_": {
        "tags": "tags on marketplace images (the generated examples fill every field)",
        "properties.plan": "marketplace purchase plans (the scenario's images have none)",
    },
}


def _not_modelled(name: str, path: str) -> bool:
    p = _norm_path(path)
    if p in NOT_MODELLED:
        return True
    return any(
        p in paths
        for key, paths in NOT_MODELLED_IN.items()
        if name == key or (key.endswith("_") and name.startswith(key))
    )


# Key paths (as above) whose content is the caller's data (tags) or free-form.
DATA_KEYS = {"tags"}


def _norm_path(path: str) -> str:
    """A dotted path without list indices ('a[0].b' -> 'a.b') and without a leading 'value'."""
    p = re.sub(r"\[\d+\]", "", path).lstrip(".")
    return p.removeprefix("value.")


def missing_keys(example: Any, actual: Any, path: str = "", name: str = "") -> list[str]:
    """Dotted paths of the example's keys the answer lacks. An object compares key by key; a
    list passes when each of the example's items is matched by some item of the answer (the
    closest one is reported otherwise)."""
    if isinstance(example, dict):
        if not isinstance(actual, dict):
            return [f"{path or '(root)'} (not an object)"]
        out: list[str] = []
        for key, value in example.items():
            sub = f"{path}.{key}" if path else key
            if _not_modelled(name, sub):
                continue
            if key not in actual:
                out.append(sub)
            elif key not in DATA_KEYS:
                out += missing_keys(value, actual[key], sub, name)
        return out
    if isinstance(example, list) and example:
        if not isinstance(actual, list):
            return [f"{path} (not a list)"]
        if not actual:
            return []
        out = []
        for item in example:
            tries = [missing_keys(item, a, f"{path}[{i}]", name) for i, a in enumerate(actual)]
            best = min(tries, key=len)
            out += best
        return out
    return []


def test_missing_keys_finds_nested_and_listed_absences() -> None:
    example = {"a": {"b": 1, "c": [{"d": 1}]}, "tags": {"x": "1"}}
    assert missing_keys(example, {"a": {"c": [{}, {"e": 2}]}, "tags": {}}) == [
        "a.b",
        "a.c[0].d",
    ]
    # one matching item is enough; an empty list cannot be compared
    assert missing_keys(example, {"a": {"b": 1, "c": [{}, {"d": 2}]}, "tags": {}}) == []
    assert missing_keys(example, {"a": {"b": 1, "c": []}, "tags": {}}) == []
    assert missing_keys({"v": 1}, {"w": 1}, name="X") == ["v"]


# -- the world each example needs --------------------------------------------------------------


def _scenario() -> dict[str, Any]:
    sc = json.loads(json.dumps(SMALL_SCENARIO))
    sc["regions"] = ["westus", "eastus", "centralus", "westeurope"]
    sc["page_size"] = 1  # so lists of two carry a nextLink, as the examples' lists do
    sc["marketplace"] = [
        {**m, "regions": None} for m in sc["marketplace"] if m.get("publisher")
    ] + [
        {
            "publisher": "microsoft-ads",
            "offer": "windows-data-science-vm",
            "sku": "windows2016",
            "versions": ["20.1.0"],
        },
        {
            "publisher": LINUX[0],
            "offer": LINUX[1],
            "sku": LINUX[2],
            "versions": [LINUX[3]],
            "os_type": "Linux",
        },
    ]
    return sc


@dataclass
class World:
    env: Any
    notes: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, api: str, body: Any = None) -> tuple[int, Any]:
        sep = "&" if "?" in path else "?"
        status, _, parsed = self.env.http(method, f"{path}{sep}api-version={api}", body)
        assert 200 <= status < 300, (method, path, status, parsed)
        return status, parsed

    def settle(self, path: str, api: str) -> dict[str, Any]:
        """GET ``path`` until its provisioningState is terminal (virtual time runs)."""
        deadline = time.monotonic() + 20
        while True:
            status, _, doc = self.env.http("GET", f"{path}?api-version={api}")
            state = (doc or {}).get("properties", {}).get("provisioningState") if doc else None
            if status == 200 and state in (None, "Succeeded", "Failed", "Canceled"):
                assert state != "Failed", (path, doc)
                return dict(doc)
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} did not settle: {status} {doc}")
            time.sleep(0.01)

    # resources -------------------------------------------------------------------------
    def rg_path(self, rg: str = RG) -> str:
        return f"/subscriptions/{SUB}/resourceGroups/{rg}/providers"

    def vm(
        self,
        name: str,
        *,
        rg: str = RG,
        location: str = "westus",
        power: str = "running",
        sysprepped: bool = False,
        generalized: bool = False,
        linux: bool = False,
    ) -> str:
        from emulator.compute import guest_of, seed_vm, vm_runtime

        emu = self.env.emu
        with emu.lock:
            vm = seed_vm(
                emu,
                subscription=SUB,
                resource_group=rg,
                name=name,
                location=location,
                image_reference=(
                    dict(zip(("publisher", "offer", "sku", "version"), LINUX, strict=True))
                    if linux
                    else {
                        "publisher": "MicrosoftWindowsServer",
                        "offer": "WindowsServer",
                        "sku": "2022-datacenter-g2",
                        "version": "latest",
                    }
                ),
                security_type=None,
            )
            vm_id = str(vm["id"])
            guest = guest_of(emu, vm_id)
            rt = vm_runtime(emu, vm_id)
            assert guest is not None
            assert rt is not None
            if sysprepped or generalized:
                guest.bitlocker = "FullyDecrypted"
                guest.sysprepped = True
            rt.power = power
            rt.generalized = generalized
        return vm_id

    def disk(self, name: str, *, rg: str = RG, location: str = "westus") -> str:
        path = f"{self.rg_path(rg)}/Microsoft.Compute/disks/{name}"
        body = {
            "location": location,
            "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 64},
        }
        self.call("PUT", path, "2025-01-02", body)
        self.settle(path, "2025-01-02")
        return path

    def snapshot(
        self, name: str, *, source: str | None = None, rg: str = RG, location: str = "westus"
    ) -> str:
        if source is None:
            vm_id = self.vm(f"src-{name.lower()}", rg=rg, location=location)
            source = str(
                self.env.emu.store.get(vm_id)["properties"]["storageProfile"]["osDisk"][
                    "managedDisk"
                ]["id"]
            )
        path = f"{self.rg_path(rg)}/Microsoft.Compute/snapshots/{name}"
        body = {
            "location": location,
            "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": source}},
        }
        self.call("PUT", path, "2025-01-02", body)
        self.settle(path, "2025-01-02")
        return path

    def gallery(self, name: str = "myGalleryName", *, location: str = "westus") -> str:
        path = f"{self.rg_path()}/Microsoft.Compute/galleries/{name}"
        body = {"location": location, "properties": {"description": "The gallery."}}
        self.call("PUT", path, "2025-03-03", body)
        self.settle(path, "2025-03-03")
        return path

    def image(
        self,
        name: str = "myGalleryImageName",
        *,
        gallery: str = "myGalleryName",
        location: str = "westus",
        security: str | None = None,
        os_type: str = "Windows",
    ) -> str:
        gpath = self.gallery(gallery, location=location)
        path = f"{gpath}/images/{name}"
        features = [{"name": "SecurityType", "value": security}] if security else []
        body = {
            "location": location,
            "properties": {
                "osType": os_type,
                "osState": "Generalized",
                "hyperVGeneration": "V2",
                "features": features,
                "identifier": {"publisher": "p", "offer": "o", "sku": name},
            },
        }
        self.call("PUT", path, "2025-03-03", body)
        self.settle(path, "2025-03-03")
        return path

    def version(
        self,
        name: str = "1.0.0",
        *,
        image: str = "myGalleryImageName",
        gallery: str = "myGalleryName",
        location: str = "westus",
        linux: bool = False,
    ) -> str:
        os_type = "Linux" if linux else "Windows"
        ipath = self.image(image, gallery=gallery, location=location, os_type=os_type)
        vm_id = self.vm(
            f"cap-{image[:8].lower()}-{name.replace('.', '')}",
            location=location,
            generalized=True,
            power="deallocated",
            linux=linux,
        )
        path = f"{ipath}/versions/{name}"
        body = {
            "location": location,
            "properties": {
                "publishingProfile": {"targetRegions": [{"name": location}]},
                "storageProfile": {"source": {"id": vm_id}},
                "safetyProfile": {"blockDeletionBeforeEndOfLife": False},
            },
        }
        self.call("PUT", path, "2025-03-03", body)
        self.settle(path, "2025-03-03")
        return path

    def nic(self, name: str = "myNic", *, rg: str = RG, location: str = "westus") -> str:
        path = f"{self.rg_path(rg)}/Microsoft.Network/networkInterfaces/{name}"
        body = {
            "location": location,
            "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": {}}]},
        }
        self.call("PUT", path, "2025-03-01", body)
        return path

    def marketplace(
        self, location: str, publisher: str, offer: str, sku: str, version: str
    ) -> None:
        status, body = self.env.admin(
            "POST",
            "marketplace/versions",
            {
                "publisher": publisher,
                "offer": offer,
                "sku": sku,
                "version": version,
                "regions": [location],
            },
        )
        assert status in (200, 201), body

    def host_pool(
        self, name: str = "hostPool1", *, rg: str = "resourceGroup1", kind: str = "Pooled"
    ) -> str:
        path = f"{self.rg_path(rg)}/Microsoft.DesktopVirtualization/hostPools/{name}"
        body = {
            "location": "centralus",
            "properties": {
                "hostPoolType": kind,
                "personalDesktopAssignmentType": "Automatic",
                "loadBalancerType": "Persistent" if kind == "Personal" else "BreadthFirst",
                "preferredAppGroupType": "Desktop",
                "maxSessionLimit": 10,
            },
        }
        self.call("PUT", path, "2024-04-03", body)
        return path

    def session_host(self, *, sessions: int = 1, kind: str = "Pooled") -> str:
        """hostPool1 with session host sessionHost1.microsoft.com and ``sessions`` sessions."""
        from emulator.avd import open_session, register_vm

        pool = self.host_pool(kind=kind)
        emu = self.env.emu
        vm_id = self.vm("sessionHost1", rg="resourceGroup1", location="centralus")
        with emu.lock:
            emu.store.meta(pool)["domain_suffix"] = "microsoft.com"
            host = register_vm(emu, pool, vm_id)
            for i in range(sessions):
                open_session(emu, str(host["id"]), f"user{i + 1}@microsoft.com", f"DOM\\u{i}")
        return str(host["id"])


def _arrange(name: str, w: World) -> None:
    if name in ("Disk_Create_ByCopyingASnapshot",):
        w.snapshot("mySnapshot")
    elif name in ("Disk_Delete",):
        w.disk("myDisk")
    elif name in ("Disk_Get",):
        # An OS disk from a platform image (Trusted Launch), attached to a VM, as in the example.
        path = f"{w.rg_path()}/Microsoft.Compute/disks/myManagedDisk"
        image = (
            f"/Subscriptions/{SUB}/Providers/Microsoft.Compute/Locations/westus/Publishers/"
            "MicrosoftWindowsServer/ArtifactTypes/VMImage/Offers/WindowsServer/Skus/"
            "2022-datacenter-g2/Versions/20348.4405.251105"
        )
        body = {
            "location": "westus",
            "properties": {
                "creationData": {"createOption": "FromImage", "imageReference": {"id": image}},
                "securityProfile": {"securityType": "TrustedLaunch"},
            },
        }
        w.call("PUT", path, "2025-01-02", body)
        w.settle(path, "2025-01-02")
        nic = w.nic("diskNic")
        vm = {
            "location": "westus",
            "properties": {
                "hardwareProfile": {"vmSize": "Standard_D2s_v5"},
                "storageProfile": {
                    "osDisk": {"createOption": "Attach", "managedDisk": {"id": path}}
                },
                "networkProfile": {"networkInterfaces": [{"id": nic}]},
            },
        }
        w.call("PUT", f"{w.rg_path()}/Microsoft.Compute/virtualMachines/diskVm", "2025-04-01", vm)
    elif name == "Snapshot_Create_FromAnExistingSnapshot":
        w.snapshot("mySnapshot1")
    elif name in ("Snapshot_Delete", "Snapshot_Get"):
        w.snapshot("mySnapshot")
    elif name == "GalleryImageVersion_Create":
        w.image()
        w.vm("myImageSource", generalized=True, power="deallocated")
        w.call(
            "PUT",
            f"{w.rg_path()}/Microsoft.Compute/images/myImage",
            "2025-04-01",
            {
                "location": "westus",
                "properties": {
                    "sourceVirtualMachine": {
                        "id": f"{w.rg_path()}/Microsoft.Compute/virtualMachines/myImageSource"
                    },
                    "hyperVGeneration": "V2",
                },
            },
        )
        w.settle(f"{w.rg_path()}/Microsoft.Compute/images/myImage", "2025-04-01")
    elif name == "GalleryImageVersion_Create_WithSnapshotsAsSource":
        w.image()
        w.snapshot("myOsSnapshot")
        w.disk("myDataDisk")
    elif name == "GalleryImageVersion_Create_WithVmAsSource":
        w.image()
        w.vm("myVM", generalized=True, power="deallocated")
    elif name in (
        "GalleryImageVersion_Delete",
        "GalleryImageVersion_Get",
        "GalleryImageVersion_Get_WithReplicationStatus",
    ):
        w.version()
    elif name == "GalleryImageVersion_ListByGalleryImage":
        w.version("1.0.0")
        w.version("1.0.1")
    elif name == "GalleryImageVersion_Update":
        _arrange("GalleryImageVersion_Create", w)
        body = _example(name)["parameters"]["galleryImageVersion"]
        create = {
            "location": "westus",
            "properties": {
                **body["properties"],
                "safetyProfile": {"blockDeletionBeforeEndOfLife": False},
            },
        }
        path = (
            f"{w.rg_path()}/Microsoft.Compute/galleries/myGalleryName/images/"
            "myGalleryImageName/versions/1.0.0"
        )
        w.call("PUT", path, "2025-03-03", json.loads(_fill(json.dumps(create))))
        w.settle(path, "2025-03-03")
    elif name == "GalleryImage_Get":
        w.image()
    elif name == "GalleryImage_ListByGallery":
        w.image()
        w.image("mySecondImage")
    elif name == "GalleryImage_Create" or name == "Gallery_Get":
        w.gallery()
    elif name.startswith("VirtualMachineImage_"):
        pass  # the scenario's marketplace (see MARKETPLACE_PARAMETERS)
    elif name == "VirtualMachineRunCommand":
        w.vm("vm3036", rg="crptestar98131")
    elif name == "VirtualMachineRunCommand_CreateOrUpdate":
        w.vm("myVM")
    elif name == "VirtualMachineRunCommand_Get":
        # Created with the CreateOrUpdate example's own body (script URI, run-as user, blobs).
        vm = w.vm("myVM")
        body = _example("VirtualMachineRunCommand_CreateOrUpdate")["parameters"]["runCommand"]
        body["properties"]["source"] = {"script": "Write-Host Hello World!"}
        w.call("PUT", f"{vm}/runCommands/myRunCommand", "2025-04-01", body)
        w.settle(f"{vm}/runCommands/myRunCommand", "2025-04-01")
    elif name == "VirtualMachine_Generalize":
        w.vm("myVMName", sysprepped=True, power="stopped")
    elif name in ("VirtualMachine_Get_InstanceView", "VirtualMachine_Delete_Force"):
        w.vm("myVM")
    elif name == "VirtualMachine_Get":
        # Created with user data, which the example's GET ($expand=userData) returns.
        body = {
            "location": "westus",
            "properties": {
                "hardwareProfile": {"vmSize": "Standard_D2s_v5"},
                "storageProfile": {"imageReference": dict(WINDOWS_SERVER)},
                "osProfile": {"computerName": "myVM", "adminUsername": "azureuser"},
                "networkProfile": {"networkInterfaces": [{"id": w.nic()}]},
                "userData": "RXhhbXBsZSBVc2VyRGF0YQ==",
            },
        }
        w.call("PUT", f"{w.rg_path()}/Microsoft.Compute/virtualMachines/myVM", "2025-11-01", body)
    elif name == "VirtualMachine_ListBySubscription_ByLocation":
        w.vm("vm-a", location="eastus")
        w.vm("vm-b", location="eastus")
    elif name in ("VirtualMachine_List_MinimumSet_Gen",):
        w.vm("vm-a", rg="rgcompute")
    elif name == "VirtualMachine_Deallocate_MaximumSet_Gen":
        vm_id = w.vm("aaaaaaaaaa", rg="rgcompute")
        with w.env.emu.lock:
            doc = w.env.emu.store.get(vm_id)
            doc["properties"]["additionalCapabilities"] = {"hibernationEnabled": True}
    elif name == "VirtualMachine_Start_MaximumSet_Gen":
        w.vm("aaaaaaaaaaaaaaaaaaaa", rg="rgcompute", power="deallocated")
    elif name.startswith("VirtualMachine_Create_"):
        w.nic()
        if name == "VirtualMachine_Create_FromAGeneralizedSharedImage":
            # The example's answer shows a Linux VM (linuxConfiguration).
            w.version(image="mySharedImage", gallery="mySharedGallery", linux=True)
        if name == "VirtualMachine_Create_FromASharedGalleryImage":
            w.version("1.0.0", image="sharedGalleryImageName", gallery="sharedGallery", linux=True)
            gal = f"{w.rg_path()}/Microsoft.Compute/galleries/sharedGallery"
            w.call(
                "PATCH",
                gal,
                "2025-03-03",
                {"properties": {"sharingProfile": {"permissions": "Groups"}}},
            )
            w.settle(gal, "2025-03-03")
            groups = [{"type": "Subscriptions", "ids": [SUB]}]
            w.call("POST", f"{gal}/share", "2025-03-03", {"operationType": "Add", "groups": groups})
    elif name in ("HostPool_Get", "HostPool_Update", "HostPools_RetrieveRegistrationToken_Post"):
        w.host_pool()
    elif name == "HostPools_ListRegistrationToken_Post":
        pool = w.host_pool()
        w.call(
            "PATCH",
            pool,
            "2024-04-03",
            {
                "properties": {
                    "registrationInfo": {
                        "expirationTime": "2026-01-06T06:00:00Z",
                        "registrationTokenOperation": "Update",
                    }
                }
            },
        )
    elif name == "SessionHost_Update":
        # assignedUser exists on personal host pools only (Azure refuses it on pooled ones).
        w.session_host(kind="Personal")
    elif name.startswith("SessionHost_") or name.startswith("UserSession_"):
        w.session_host(sessions=2 if "List" in name else 1)
    elif name == "NetworkInterfaceDelete":
        w.nic("test-nic", rg="rg1", location="eastus")
    elif name == "NetworkInterfaceGet":
        # Created with the Create example's body and attached to a VM, as in the example.
        nic = f"{w.rg_path('rg1')}/Microsoft.Network/networkInterfaces/test-nic"
        w.call(
            "PUT", nic, "2025-03-01", _example("NetworkInterfaceCreate")["parameters"]["parameters"]
        )
        image = dict(zip(("publisher", "offer", "sku", "version"), LINUX, strict=True))
        vm = {
            "location": "eastus",
            "properties": {
                "hardwareProfile": {"vmSize": "Standard_D2s_v5"},
                "storageProfile": {"imageReference": image},
                "osProfile": {"computerName": "nicvm", "adminUsername": "azureuser"},
                "networkProfile": {"networkInterfaces": [{"id": nic}]},
            },
        }
        vm_path = f"{w.rg_path('rg1')}/Microsoft.Compute/virtualMachines/nicVm"
        w.call("PUT", vm_path, "2025-04-01", vm)


# Placeholders in an example that only make sense once the world exists.
def _late_substitutions(name: str, w: World) -> dict[str, str]:
    if name in ("HostPool_Create", "HostPool_Update"):
        # The example's token expiry (2020) is in the past at replay time: Azure would refuse
        # it as the emulator does, so it moves to one day after the scenario's start.
        tomorrow = "2026-01-06T06:00:00.0000000Z"
        return {
            "2020-10-01T14:01:54.9571247Z": tomorrow,
            "2020-10-01T15:01:54.9571247Z": tomorrow,
        }
    if name == "VirtualMachine_Create_FromASharedGalleryImage":
        gal = w.env.emu.store.get(f"{w.rg_path()}/Microsoft.Compute/galleries/sharedGallery")
        unique = gal["properties"]["identifier"]["uniqueName"]
        return {
            "/SharedGalleries/sharedGalleryName/": f"/SharedGalleries/{unique}/",
            "/Versions/sharedGalleryImageVersionName": "/Versions/1.0.0",
        }
    return {}


# -- replay ------------------------------------------------------------------------------------


def _fill(text: str) -> str:
    for s in SUBSCRIPTIONS:
        text = text.replace(s, SUB)
    for k, v in PLACEHOLDERS.items():
        text = text.replace(k, v)
    return text


def _example(name: str) -> dict[str, Any]:
    found = sorted(EXAMPLES.glob(f"*/*/{name}.json"))
    assert len(found) == 1, found
    data: dict[str, Any] = json.loads(_fill(found[0].read_text(encoding="utf-8")))
    return data


def _example_names() -> list[str]:
    if not EXAMPLES.is_dir():
        return []
    return sorted(p.stem for p in EXAMPLES.glob("*/*/*.json"))


def _request(name: str, example: dict[str, Any]) -> tuple[str, str, Any]:
    method, template = OPERATIONS[name]
    params = dict(example["parameters"])
    if params.get("subscriptionId") == "subid":
        params["subscriptionId"] = SUB
    if name.startswith("VirtualMachineImage_"):
        # Generated examples with placeholder names ("aaaa"): the scenario's image instead.
        params.update({k: v for k, v in MARKETPLACE_PARAMETERS.items() if k in params})
    api = params.pop("api-version", None) or params.pop("version")
    used = set(re.findall(r"\{(\w+)\}", template))
    path = template
    for key in used:
        path = path.replace("{" + key + "}", quote(str(params[key]), safe=""))
    body: Any = None
    query: dict[str, str] = {"api-version": str(api)}
    for key, value in params.items():
        if key in used:
            continue
        if isinstance(value, dict | list):
            body = value
        elif isinstance(value, bool):
            query[key] = "true" if value else "false"
        else:
            query[key] = str(value)
    return method, f"{path}?{urlencode(query)}", body


def _final(w: World, method: str, path: str, status: int, headers: dict[str, str]) -> Any:
    """The answer once a long operation is done: the resource (PUT/PATCH) or the action's
    result (POST, from its Location)."""
    bare, api = path.split("?")[0], re.search(r"api-version=([^&]+)", path)
    assert api is not None
    if method in ("PUT", "PATCH"):
        return w.settle(bare, api.group(1))
    location = headers.get("location")
    if method == "POST" and status == 202 and location:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            st, _, body = w.env.http("GET", location.replace(w.env.url, ""))
            if st == 200:
                return body
            assert st == 202, (st, body)
            time.sleep(0.01)
        raise AssertionError(f"{location} did not finish")
    return None


@pytest.mark.parametrize("name", _example_names())
def test_example_is_accepted_and_answered_in_full(name: str, emulator_factory: Any) -> None:
    if name in NOT_SERVED:
        pytest.skip(f"not served: {NOT_SERVED[name]}")
    assert name in OPERATIONS, f"{name}: a new example; map it to its operation"
    env = emulator_factory(_scenario())
    w = World(env)
    _arrange(name, w)
    example = _example(name)
    text = json.dumps(example)
    for old, new in _late_substitutions(name, w).items():
        text = text.replace(old, new)
    example = json.loads(text)
    method, path, body = _request(name, example)
    status, headers, answer = env.http(method, path, body)
    assert 200 <= status < 300, f"{name}: {method} {path} -> {status} {answer}"
    responses = example["responses"]
    expected = (responses.get(str(status)) or {}).get("body")
    if expected is not None:
        missing = missing_keys(expected, answer, name=name)
        assert not missing, f"{name}: the immediate answer ({status}) lacks {missing}"
    final_expected = (responses.get("200") or {}).get("body")
    if status in (201, 202) and final_expected is not None:
        final = _final(w, method, path, status, headers)
        missing = missing_keys(final_expected, final, name=name)
        assert not missing, f"{name}: the final answer lacks {missing}"


def test_every_example_maps_to_an_operation() -> None:
    if not EXAMPLES.is_dir():
        pytest.skip(f"Azure REST examples not found at {EXAMPLES} (../shared/azure-rest-examples)")
    unmapped = [n for n in _example_names() if n not in OPERATIONS and n not in NOT_SERVED]
    assert unmapped == []


Arrange = Callable[[World], None]
