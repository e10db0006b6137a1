"""Compute and its network neighbours: VMs, run commands, managed disks, snapshots, NICs.

Virtual machines are created from a marketplace image, a Compute Gallery image (definition or
version id) or an attached managed OS disk; they create their NIC from
``networkInterfaceConfigurations`` or use NICs referenced by id, and honour ``deleteOption`` for
NICs and the OS disk on delete. Power actions, generalize, the ``runCommand`` action and managed
``runCommands`` follow the Compute RP's shapes and (where it matters) its error wording.

The guest OS lives on the OS disk (:mod:`emulator.guest`): disk copies, snapshots and images
carry it. Helpers for other modules (the gallery captures guests, the AVD module seeds session
hosts and starts VMs on connect) are :func:`guest_of`, :func:`set_guest`, :func:`vm_runtime`,
:func:`seed_vm`, :func:`set_power` and :func:`start_vm`.

Every power change of a VM is told to the ``vm.power`` listeners (``emu.add_listener``) at the
virtual instant it happens ("starting", "running" once booted, "stopping", "stopped" for a power
off or a guest shutdown, "deallocating", "deallocated", "deleted"); every finished run-command
step to the ``vm.guest`` listeners. A VM created from an image *definition* gets its latest
version in its region (:func:`emulator.gallery.latest_version`: the region's own
``excludeFromLatest`` wins over the global flag).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from emulator.arm import (
    ArmError,
    Headers,
    Request,
    Response,
    as_int,
    as_list,
    as_object,
    as_str,
    bad_request,
    check_name,
    merge_patch,
    operation_not_allowed,
    property_change_not_allowed,
    resource_not_found,
)
from emulator.core import Emulator
from emulator.events import iso
from emulator.gallery import latest_version, replicated_to, shared_gallery_named
from emulator.guest import (
    GuestState,
    ScriptContext,
    ScriptError,
    Step,
    parse_script,
    settle,
    should_run,
)
from emulator.identity import imds, vm_identity
from emulator.marketplace import find_image, norm_region
from emulator.store import parse_resource_id

log = logging.getLogger(__name__)

RG = "/subscriptions/{sub}/resourceGroups/{rg}"
VMS = RG + "/providers/Microsoft.Compute/virtualMachines"
VM = VMS + "/{vm}"
DISKS = RG + "/providers/Microsoft.Compute/disks"
SNAPSHOTS = RG + "/providers/Microsoft.Compute/snapshots"
NICS = RG + "/providers/Microsoft.Network/networkInterfaces"
IMAGES = RG + "/providers/Microsoft.Compute/images"

VM_TYPE = "Microsoft.Compute/virtualMachines"
RC_TYPE = "Microsoft.Compute/virtualMachines/runCommands"
DISK_TYPE = "Microsoft.Compute/disks"
SNAP_TYPE = "Microsoft.Compute/snapshots"
NIC_TYPE = "Microsoft.Network/networkInterfaces"
MANAGED_IMAGE_TYPE = "Microsoft.Compute/images"
GALLERY_IMAGE_TYPE = "Microsoft.Compute/galleries/images"
GALLERY_VERSION_TYPE = "Microsoft.Compute/galleries/images/versions"

VM_NAME_RULE = (
    "The name can be up to 64 characters long. It can contain letters, numbers, '.', '-' and "
    "'_'; it must start with a letter or number and cannot end with '.' or '-'."
)
DISK_NAME_RULE = (
    "The name can be up to 80 characters long. It must begin with a word character, and it must "
    "end with a word character or with '_'. The name may contain word characters or '.', '-', "
    "'_'."
)
# What ``vmSizes`` lists (a VM can be resized to these; a small, realistic subset).
VM_SIZES: tuple[dict[str, Any], ...] = tuple(
    {
        "name": name,
        "numberOfCores": cores,
        "osDiskSizeInMB": 1047552,
        "resourceDiskSizeInMB": 0,
        "memoryInMB": mem,
        "maxDataDiskCount": disks,
    }
    for name, cores, mem, disks in (
        ("Standard_D2s_v5", 2, 8192, 4),
        ("Standard_D4s_v5", 4, 16384, 8),
        ("Standard_D8s_v5", 8, 32768, 16),
        ("Standard_D16s_v5", 16, 65536, 32),
        ("Standard_D4ads_v5", 4, 16384, 8),
        ("Standard_E4s_v5", 4, 32768, 8),
        ("Standard_NV6ads_A10_v5", 6, 56320, 4),
    )
)
# The built-in run commands the emulator's guest can run (the action's commandId values).
BUILTIN_COMMANDS: tuple[dict[str, Any], ...] = (
    {
        "$schema": "http://schema.management.azure.com/schemas/2016-11-17/runcommands.json",
        "id": "RunPowerShellScript",
        "osType": "Windows",
        "label": "Executes a PowerShell script",
        "description": "Custom multiline PowerShell script should be defined in script property. "
        "Optional parameters can be set in parameters property.",
        "script": ["param(", "    [string]$arg1,", "    [string]$arg2", ")", "$arg1", "$arg2"],
        "parameters": [
            {"name": "arg1", "type": "string", "required": False},
            {"name": "arg2", "type": "string", "required": False},
        ],
    },
    {
        "$schema": "http://schema.management.azure.com/schemas/2016-11-17/runcommands.json",
        "id": "RunShellScript",
        "osType": "Linux",
        "label": "Executes a Linux shell script",
        "description": "Custom multiline shell script should be defined in script property. "
        "Optional parameters can be set in parameters property.",
        "script": ["set -e", "$arg1", "$arg2"],
        "parameters": [
            {"name": "arg1", "type": "string", "required": False},
            {"name": "arg2", "type": "string", "required": False},
        ],
    },
)
# VM properties Azure stores and returns as sent, which the emulator accepts without modelling.
VM_ECHOED = (
    "additionalCapabilities",
    "userData",
    "priority",
    "evictionPolicy",
    "billingProfile",
    "scheduledEventsProfile",
    "capacityReservation",
    "applicationProfile",
    "availabilitySet",
    "proximityPlacementGroup",
    "host",
    "hostGroup",
    "platformFaultDomain",
    "extensionsTimeBudget",
)
MAX_RUN_COMMAND_SECONDS = 5400  # the action runCommand's 90-minute limit
NOT_RUNNING = "The operation requires the VM to be running (or set to run)."


# -- runtime state beside the ARM documents -------------------------------------------------


@dataclass
class VmRuntime:
    """A VM's emulator-side state (``store.meta(vm_id)["vm"]``)."""

    power: str = "starting"  # starting|running|stopping|stopped|deallocating|deallocated
    generalized: bool = False
    os_disk_id: str = ""
    trusted_launch: bool = False
    hyper_v_generation: str = "V2"
    seq: int = 0  # bumps with each power transition; stale completions are ignored
    action_run_active: bool = False
    executions: list[Execution] = field(default_factory=list)


def vm_runtime(emu: Emulator, vm_id: str) -> VmRuntime | None:
    """The runtime state of a VM (power, generalized...), or None if it does not exist."""
    if not emu.store.exists(vm_id):
        return None
    rt = emu.store.meta(vm_id).get("vm")
    return rt if isinstance(rt, VmRuntime) else None


def guest_of(emu: Emulator, resource_id: str) -> GuestState | None:
    """The live guest state of a VM (its OS disk's), disk, snapshot or image version."""
    doc = emu.store.get(resource_id)
    if doc is None:
        return None
    if str(doc.get("type", "")).lower() == VM_TYPE.lower():
        rt = vm_runtime(emu, resource_id)
        if rt is None or not rt.os_disk_id:
            return None
        return guest_of(emu, rt.os_disk_id)
    g = emu.store.meta(resource_id).get("guest")
    return g if isinstance(g, GuestState) else None


def set_guest(emu: Emulator, resource_id: str, guest: GuestState) -> None:
    """Attach a guest state to a disk, snapshot or gallery image version (stores a copy)."""
    emu.store.meta(resource_id)["guest"] = guest.copy()


def set_power(emu: Emulator, vm_id: str, power: str) -> None:
    """Set a VM's power state and tell the ``vm.power`` listeners (nothing when unchanged).

    Call under the lock, after the state the listeners may read (provisioning state, guest)
    is final."""
    rt = vm_runtime(emu, vm_id)
    if rt is None or rt.power == power:
        return
    rt.power = power
    emu.emit("vm.power", vm_id, power)


def _power_status(power: str) -> dict[str, str]:
    return {"code": f"PowerState/{power}", "level": "Info", "displayStatus": f"VM {power}"}


def _id(sub: str, rg: str, provider_type: str, name: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{provider_type}/{name}"


def _norm_id(rid: str) -> str:
    return "/" + rid.strip().lstrip("/")


def _size_bytes(gb: int) -> int:
    return gb * 1024 * 1024 * 1024


# -- VM creation (shared by the PUT handler and seeding) ------------------------------------


@dataclass
class _Source:
    guest: GuestState
    os_type: str
    hyper_v: str
    image_reference: dict[str, Any] | None
    creation_data: dict[str, Any]
    attach_disk_id: str | None
    run_oobe: bool
    provisioning_fails: str | None = None


def _shared_gallery_source(emu: Emulator, ref: str, field_name: str, location: str) -> _Source:
    """``sharedGalleryImageId`` (``/SharedGalleries/{uniqueName}/Images/{image}[/Versions/{v}]``,
    a gallery shared with the caller's subscription or tenant) or ``communityGalleryImageId``
    (``/CommunityGalleries/{publicName}/...``, a gallery shared with the community)."""
    parts = [p for p in ref.split("/") if p]
    low = [p.lower() for p in parts]
    community = field_name == "communityGalleryImageId"
    kind = "communitygalleries" if community else "sharedgalleries"
    ok = len(parts) in (4, 6) and low[0] == kind and low[2] == "images"
    if ok and len(parts) == 6:
        ok = low[4] == "versions"
    if not ok:
        raise bad_request(
            f"The value '{ref}' of imageReference.{field_name} is not a valid "
            f"{'community' if community else 'shared'} gallery image id.",
            target=f"imageReference.{field_name}",
        )
    current = emu.current_request()
    caller_sub = (current.subscription if current else None) or ""
    gallery = shared_gallery_named(emu, caller_sub, parts[1], community)
    target = f"{gallery['id']}/images/{parts[3]}" if gallery else ""
    if gallery is not None and len(parts) == 6:
        target += f"/versions/{parts[5]}"
    if gallery is None or not emu.store.exists(target):
        raise ArmError(
            404,
            "GalleryImageNotFound",
            f"The gallery image {ref} is not available in {norm_region(location)} region or "
            "not shared with the subscription. Please contact image owner to share and "
            "replicate to this region, or change your requested region.",
        )
    src = _resolve_gallery(emu, target, location)
    exact = (src.image_reference or {}).get("exactVersion", "")
    src.image_reference = {field_name: ref, "exactVersion": exact}
    return src


def _resolve_gallery(emu: Emulator, ref_id: str, location: str) -> _Source:
    rid = _norm_id(ref_id)
    doc = emu.store.get(rid)
    rtype = str((doc or {}).get("type", "")).lower()
    if doc is not None and rtype == MANAGED_IMAGE_TYPE.lower():
        return _resolve_managed_image(emu, doc)
    version_doc: dict[str, Any] | None = None
    definition: dict[str, Any] | None = None
    if doc is not None and rtype == GALLERY_IMAGE_TYPE.lower():
        definition = doc
        # "latest": the highest Succeeded version replicated here and not excluded from latest
        # in this region (a target region's own excludeFromLatest wins over the global one).
        version_doc = latest_version(emu, rid, location)
    elif doc is not None and rtype == GALLERY_VERSION_TYPE.lower():
        version_doc = doc
        parent = parse_resource_id(rid).parent
        definition = emu.store.get(parent) if parent else None
    not_available = ArmError(
        404,
        "GalleryImageNotFound",
        f"The gallery image {rid} is not available in {norm_region(location)} region. Please "
        "contact image owner to replicate to this region, or change your requested region.",
    )
    if version_doc is None or not replicated_to(emu, version_doc, location):
        raise not_available
    if str(version_doc.get("properties", {}).get("provisioningState", "Succeeded")) not in (
        "Succeeded",
    ):
        raise not_available
    dprops = (definition or {}).get("properties", {})
    os_type = str(dprops.get("osType", "Windows"))
    os_state = str(dprops.get("osState", "Generalized"))
    stored = guest_of(emu, str(version_doc["id"]))
    if stored is not None:
        guest = stored.copy()
    else:
        ident = dprops.get("identifier", {})
        from emulator.guest import marketplace_guest

        guest = marketplace_guest(
            str(ident.get("publisher", "publisher")),
            str(ident.get("offer", "offer")),
            str(ident.get("sku", "sku")),
            str(version_doc.get("name", "1.0.0")),
            os_type=os_type,
        )
        guest.sysprepped = os_state == "Generalized"
    fails = None
    if os_state == "Generalized" and not guest.sysprepped and os_type == "Windows":
        fails = "not-sysprepped"
    return _Source(
        guest=guest,
        os_type=os_type,
        hyper_v=str(dprops.get("hyperVGeneration", "V2")),
        image_reference={"id": ref_id, "exactVersion": str(version_doc.get("name", ""))},
        creation_data={
            "createOption": "FromImage",
            "galleryImageReference": {"id": str(version_doc["id"])},
        },
        attach_disk_id=None,
        run_oobe=os_state == "Generalized",
        provisioning_fails=fails,
    )


def _resolve_source(emu: Emulator, props: dict[str, Any], location: str) -> _Source:
    storage = as_object(props.get("storageProfile"), "storageProfile")
    image_ref = as_object(storage.get("imageReference"), "storageProfile.imageReference")
    os_disk = as_object(storage.get("osDisk"), "storageProfile.osDisk")
    create_option = str(os_disk.get("createOption") or ("FromImage" if image_ref else "")).lower()
    if create_option == "attach":
        managed = as_object(os_disk.get("managedDisk"), "storageProfile.osDisk.managedDisk")
        disk_id = _norm_id(as_str(managed.get("id"), "osDisk.managedDisk.id") or "")
        if disk_id == "/":
            raise bad_request(
                "Required parameter 'osDisk.managedDisk.id' is missing (null).",
                target="osDisk.managedDisk.id",
            )
        disk = emu.store.get(disk_id)
        if disk is None or str(disk.get("type", "")).lower() != DISK_TYPE.lower():
            raise resource_not_found(disk_id)
        if disk.get("managedBy"):
            raise ArmError(
                409,
                "OperationNotAllowed",
                f"Disk {disk['name']} is already attached to VM {disk['managedBy']}.",
            )
        guest = guest_of(emu, disk_id) or GuestState()
        dprops = disk.get("properties", {})
        return _Source(
            guest=guest,
            os_type=str(dprops.get("osType") or os_disk.get("osType") or guest.os_type),
            hyper_v=str(dprops.get("hyperVGeneration", "V2")),
            image_reference=None,
            creation_data={},
            attach_disk_id=str(disk["id"]),
            run_oobe=guest.sysprepped,
        )
    if create_option != "fromimage":
        raise bad_request(
            f"The value '{os_disk.get('createOption')}' of parameter 'osDisk.createOption' is not "
            "allowed. Allowed values are 'FromImage' and 'Attach'.",
            target="osDisk.createOption",
        )
    if not image_ref:
        raise bad_request(
            "Required parameter 'imageReference' is missing (null).", target="imageReference"
        )
    if image_ref.get("id"):
        return _resolve_gallery(emu, str(image_ref["id"]), location)
    for shared_field in ("sharedGalleryImageId", "communityGalleryImageId"):
        if image_ref.get(shared_field):
            ref = as_str(image_ref.get(shared_field), f"imageReference.{shared_field}") or ""
            return _shared_gallery_source(emu, ref, shared_field, location)
    pub, offer = str(image_ref.get("publisher", "")), str(image_ref.get("offer", ""))
    sku, version = str(image_ref.get("sku", "")), str(image_ref.get("version", "latest"))
    iv = find_image(emu, location, pub, offer, sku, version)
    if iv is None:
        raise ArmError(
            404,
            "PlatformImageNotFound",
            f"The platform image '{pub}:{offer}:{sku}:{version}' is not available. Verify that "
            "all fields in the storage profile are correct. For more details about storage "
            "profile information, please refer to https://aka.ms/storageprofile",
            target="imageReference",
        )
    current = emu.current_request()
    sub = (current.subscription if current else None) or ""
    return _Source(
        guest=iv.new_guest(),
        os_type=iv.os_type,
        hyper_v=iv.hyper_v_generation,
        image_reference={
            "publisher": pub,
            "offer": offer,
            "sku": sku,
            "version": version,
            "exactVersion": iv.version,
        },
        creation_data={
            "createOption": "FromImage",
            "imageReference": {"id": iv.platform_id(sub, location)},
        },
        attach_disk_id=None,
        run_oobe=True,
    )


class _Plan:
    """Everything a VM create will write, validated before anything is written."""

    def __init__(self) -> None:
        self.vm: dict[str, Any] = {}
        self.runtime = VmRuntime()
        self.disk: dict[str, Any] | None = None
        self.disk_id = ""
        self.new_nics: list[dict[str, Any]] = []
        self.attach_nics: list[str] = []
        self.source: _Source | None = None
        self.data_disks: list[dict[str, Any]] = []  # new managed disks (Empty)
        self.attach_data: list[str] = []  # existing disks attached as data disks


def _plan_vm(emu: Emulator, vm_id: str, body: dict[str, Any]) -> _Plan:
    rid = parse_resource_id(vm_id)
    name = rid.name
    check_name(
        name,
        kind=VM_TYPE,
        pattern=r"[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9_]|[A-Za-z0-9]",
        max_length=64,
        rule=VM_NAME_RULE,
    )
    location = body.get("location")
    if not isinstance(location, str) or not location.strip():
        raise ArmError(
            400, "LocationRequired", "The location property is required for this definition."
        )
    props = body.get("properties")
    if not isinstance(props, dict):
        raise bad_request("Required parameter 'properties' is missing (null).", target="properties")
    tags = as_object(body.get("tags"), "tags")
    plan = _Plan()
    source = _resolve_source(emu, props, location)
    plan.source = source
    security = dict(as_object(props.get("securityProfile"), "securityProfile"))
    sec_type = str(security.get("securityType") or "Standard")
    trusted = sec_type.lower() == "trustedlaunch"
    if trusted and source.hyper_v == "V1":
        raise bad_request(
            "The image is a Generation 1 (V1) image; Trusted Launch requires a Generation 2 "
            "(V2) image.",
            code="BadRequest",
            target="securityProfile.securityType",
        )
    if trusted:
        security.setdefault("uefiSettings", {"secureBootEnabled": True, "vTpmEnabled": True})
    security["securityType"] = sec_type
    storage = as_object(props.get("storageProfile"), "storageProfile")
    os_disk_in = as_object(storage.get("osDisk"), "storageProfile.osDisk")
    vm_guid = emu.new_id()
    sub, rg = rid.subscription or "", rid.resource_group or ""
    if source.attach_disk_id:
        plan.disk_id = source.attach_disk_id
        disk_name = parse_resource_id(plan.disk_id).name
    else:
        disk_name = str(os_disk_in.get("name") or f"{name}_OsDisk_1_{vm_guid.replace('-', '')}")
        check_name(disk_name, kind=DISK_TYPE, max_length=80, rule=DISK_NAME_RULE)
        plan.disk_id = _id(sub, rg, DISK_TYPE, disk_name)
        if emu.store.exists(plan.disk_id):
            raise ArmError(
                409,
                "ConflictingUserInput",
                f"A disk with name {disk_name} already exists in Resource Group "
                f"{rg.upper()} and is attached to VM "
                f"{emu.store.get(plan.disk_id).get('managedBy', '')}. 'Name' is an optional "  # type: ignore[union-attr]
                "property for a disk and a unique name will be generated if not provided.",
            )
    managed = as_object(os_disk_in.get("managedDisk"), "storageProfile.osDisk.managedDisk")
    storage_type = str(managed.get("storageAccountType") or "Premium_LRS")
    size_gb = (
        as_int(os_disk_in.get("diskSizeGB"), "storageProfile.osDisk.diskSizeGB")
        or source.guest.disk_size_gb
    )
    os_disk_out: dict[str, Any] = {
        "osType": source.os_type,
        "name": disk_name,
        "createOption": "Attach" if source.attach_disk_id else "FromImage",
        "caching": os_disk_in.get("caching", "ReadWrite"),
        "managedDisk": {"storageAccountType": storage_type, "id": plan.disk_id},
        "deleteOption": os_disk_in.get("deleteOption", "Detach"),
        "diskSizeGB": size_gb,
    }
    # Network.
    network = dict(as_object(props.get("networkProfile"), "networkProfile"))
    nic_refs: list[dict[str, Any]] = []
    refs_path = "networkProfile.networkInterfaces"
    for ref in as_list(network.get("networkInterfaces"), refs_path):
        ref = as_object(ref, refs_path)
        nic_id = _norm_id(as_str(ref.get("id"), f"{refs_path}.id") or "")
        nic = emu.store.get(nic_id)
        if nic is None:
            raise ArmError(
                400,
                "InvalidResourceReference",
                f"Resource {nic_id} referenced by resource {vm_id} was not found. Please make "
                "sure that the referenced resource exists, and that both resources are in the "
                "same region.",
            )
        attached = (nic.get("properties", {}).get("virtualMachine") or {}).get("id")
        if attached and attached.lower() != vm_id.lower():
            raise ArmError(
                400,
                "NicInUse",
                f"Network Interface {nic['id']} is used by existing resource {attached}. In "
                "order to use this network interface, first delete or detach it from the "
                "existing resource.",
            )
        rprops = dict(as_object(ref.get("properties"), f"{refs_path}.properties"))
        rprops.setdefault("deleteOption", "Detach")
        nic_refs.append({"id": str(nic["id"]), "properties": rprops})
        plan.attach_nics.append(str(nic["id"]))
    cfg_path = "networkProfile.networkInterfaceConfigurations"
    configs = as_list(network.get("networkInterfaceConfigurations"), cfg_path)
    if configs and not network.get("networkApiVersion"):
        raise bad_request(
            "networkProfile.networkApiVersion is required when "
            "networkInterfaceConfigurations are specified.",
            target="networkProfile.networkApiVersion",
        )
    for cfg in configs:
        cfg = as_object(cfg, cfg_path)
        cname = as_str(cfg.get("name"), f"{cfg_path}.name") or ""
        if not cname:
            raise bad_request(
                "Required parameter 'networkInterfaceConfigurations.name' is missing (null).",
                target="networkProfile.networkInterfaceConfigurations.name",
            )
        cprops = as_object(cfg.get("properties"), f"{cfg_path}.properties")
        nic_id = _id(sub, rg, NIC_TYPE, f"{name}-{cname}")
        if emu.store.exists(nic_id):
            raise ArmError(
                409,
                "Conflict",
                f"Network interface {nic_id} already exists; it cannot be created for "
                f"virtual machine {vm_id}.",
            )
        ipcfgs = as_list(
            cprops.get("ipConfigurations"), f"{cfg_path}.properties.ipConfigurations"
        ) or [{"name": "ipconfig1", "properties": {}}]
        plan.new_nics.append(
            _nic_doc(
                emu,
                nic_id,
                location,
                {},  # Azure does not copy a VM's tags to the NICs and disks it creates
                ipcfgs,
                vm_id=vm_id,
                accel=bool(cprops.get("enableAcceleratedNetworking", False)),
            )
        )
        nic_refs.append(
            {
                "id": nic_id,
                "properties": {
                    "primary": bool(cprops.get("primary", len(nic_refs) == 0)),
                    "deleteOption": cprops.get("deleteOption", "Detach"),
                },
            }
        )
    if not nic_refs:
        raise bad_request(
            "Required parameter 'networkProfile' is missing (null).", target="networkProfile"
        )
    os_profile = dict(as_object(props.get("osProfile"), "osProfile"))
    os_profile.pop("adminPassword", None)
    vm_props: dict[str, Any] = {
        "vmId": vm_guid,
        "hardwareProfile": {
            "vmSize": as_str(
                as_object(props.get("hardwareProfile"), "hardwareProfile").get("vmSize"),
                "hardwareProfile.vmSize",
            )
            or "Standard_D2s_v5"
        },
        "storageProfile": {
            **({"imageReference": source.image_reference} if source.image_reference else {}),
            "osDisk": os_disk_out,
            "dataDisks": _plan_data_disks(emu, plan, vm_id, name, location, storage),
            "diskControllerType": "SCSI",
        },
        "securityProfile": security,
        "networkProfile": {**network, "networkInterfaces": nic_refs},
        "diagnosticsProfile": props.get("diagnosticsProfile")
        or {"bootDiagnostics": {"enabled": True}},
        "provisioningState": "Creating",
        "timeCreated": emu.now_iso(),
    }
    if not source.attach_disk_id:
        os_profile.setdefault("computerName", name[:15])
        os_profile.setdefault("adminUsername", "azureuser")
        os_profile.setdefault("secrets", [])
        os_profile.setdefault("allowExtensionOperations", True)
        os_profile.setdefault("requireGuestProvisionSignal", True)
        if source.os_type == "Windows":
            os_profile.setdefault(
                "windowsConfiguration",
                {"provisionVMAgent": True, "enableAutomaticUpdates": True},
            )
        else:
            os_profile.setdefault("linuxConfiguration", {"disablePasswordAuthentication": False})
        vm_props["osProfile"] = os_profile
    if props.get("licenseType"):
        vm_props["licenseType"] = props["licenseType"]
    for key in VM_ECHOED:  # accepted and returned as sent (not modelled further)
        if props.get(key) is not None:
            vm_props[key] = props[key]
    plan.vm = {
        "name": name,
        "id": vm_id,
        "type": VM_TYPE,
        "location": location,
        "tags": dict(tags),
        "etag": '"1"',
        "properties": vm_props,
    }
    for k in ("zones", "plan"):
        if k in body:
            plan.vm[k] = body[k]
    identity = vm_identity(emu, body.get("identity"))  # with Azure's principal/client ids
    if identity is not None:
        plan.vm["identity"] = identity
    plan.runtime = VmRuntime(
        power="starting",
        os_disk_id=plan.disk_id,
        trusted_launch=trusted,
        hyper_v_generation=source.hyper_v,
    )
    if not source.attach_disk_id:
        plan.disk = _disk_doc(
            emu,
            plan.disk_id,
            location,
            {},
            creation=source.creation_data,
            os_type=source.os_type,
            hyper_v=source.hyper_v,
            size_gb=size_gb,
            sku=storage_type,
            security={"securityType": "TrustedLaunch"} if trusted else None,
        )
        plan.disk["managedBy"] = vm_id
        plan.disk["properties"]["diskState"] = "Attached"
        plan.disk["properties"]["provisioningState"] = "Succeeded"
    return plan


def _plan_data_disks(
    emu: Emulator,
    plan: _Plan,
    vm_id: str,
    vm_name: str,
    location: str,
    storage: dict[str, Any],
) -> list[dict[str, Any]]:
    """``storageProfile.dataDisks`` at creation: ``Empty`` (a new managed disk) or ``Attach``
    (an unattached managed disk). The guest does not see them (nothing in an image pipeline
    reads a data disk)."""
    path = "storageProfile.dataDisks"
    out: list[dict[str, Any]] = []
    luns: set[int] = set()
    rid = parse_resource_id(vm_id)
    for raw in as_list(storage.get("dataDisks"), path):
        item = as_object(raw, path)
        lun = as_int(item.get("lun"), f"{path}.lun")
        if lun is None or lun < 0 or lun > 63:
            raise bad_request("Each data disk needs a lun between 0 and 63.", target=f"{path}.lun")
        if lun in luns:
            raise bad_request(
                f"The lun {lun} is used by more than one data disk.", target=f"{path}.lun"
            )
        luns.add(lun)
        option = str(item.get("createOption") or "").lower()
        managed = as_object(item.get("managedDisk"), f"{path}.managedDisk")
        sku = str(managed.get("storageAccountType") or "Premium_LRS")
        if option == "empty":
            size = as_int(item.get("diskSizeGB"), f"{path}.diskSizeGB")
            if not size:
                raise bad_request(
                    "Required parameter 'dataDisk.diskSizeGB' is missing (null).",
                    target=f"{path}.diskSizeGB",
                )
            disk_name = str(
                item.get("name") or f"{vm_name}_disk{lun + 2}_{emu.new_id().replace('-', '')}"
            )
            check_name(disk_name, kind=DISK_TYPE, max_length=80, rule=DISK_NAME_RULE)
            disk_id = _id(rid.subscription or "", rid.resource_group or "", DISK_TYPE, disk_name)
            if emu.store.exists(disk_id):
                raise ArmError(
                    409,
                    "ConflictingUserInput",
                    f"A disk with name {disk_name} already exists in Resource Group "
                    f"{(rid.resource_group or '').upper()}.",
                )
            disk = _disk_doc(
                emu,
                disk_id,
                location,
                {},
                creation={"createOption": "Empty"},
                os_type=None,
                hyper_v=None,
                size_gb=size,
                sku=sku,
            )
            disk["managedBy"] = vm_id
            disk["properties"]["diskState"] = "Attached"
            disk["properties"]["provisioningState"] = "Succeeded"
            plan.data_disks.append(disk)
        elif option == "attach":
            disk_id = _norm_id(as_str(managed.get("id"), f"{path}.managedDisk.id") or "")
            attached = emu.store.get(disk_id)
            if attached is None or str(attached.get("type", "")).lower() != DISK_TYPE.lower():
                raise resource_not_found(disk_id)
            if attached.get("managedBy"):
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    f"Disk {attached['name']} is already attached to VM {attached['managedBy']}.",
                )
            disk_id, disk_name = str(attached["id"]), str(attached["name"])
            size = int(attached["properties"].get("diskSizeGB") or 0)
            sku = str((attached.get("sku") or {}).get("name") or sku)
            plan.attach_data.append(disk_id)
        else:
            raise bad_request(
                f"The value '{item.get('createOption')}' of parameter 'dataDisk.createOption' is "
                "not supported by the emulator (supported: Empty, Attach).",
                target=f"{path}.createOption",
            )
        out.append(
            {
                "lun": lun,
                "name": disk_name,
                "createOption": "Empty" if option == "empty" else "Attach",
                "caching": item.get("caching", "None"),
                "managedDisk": {"storageAccountType": sku, "id": disk_id},
                "diskSizeGB": size,
                "toBeDetached": False,
                "deleteOption": item.get("deleteOption", "Detach"),
            }
        )
    return out


def _apply_plan(emu: Emulator, vm_id: str, plan: _Plan) -> dict[str, Any]:
    source = plan.source
    assert source is not None
    for data in plan.data_disks:
        emu.store.put(str(data["id"]), data)
    for disk_id in plan.attach_data:
        attached = emu.store.get(disk_id)
        if attached is not None:
            attached["managedBy"] = vm_id
            attached["properties"]["diskState"] = "Attached"
    if plan.disk is not None:
        emu.store.put(plan.disk_id, plan.disk)
        set_guest(emu, plan.disk_id, source.guest)
    else:
        disk = emu.store.get(plan.disk_id)
        assert disk is not None
        disk["managedBy"] = vm_id
        disk["properties"]["diskState"] = "Attached"
        disk["properties"]["LastOwnershipUpdateTime"] = emu.now_iso()
    for new_nic in plan.new_nics:
        emu.store.put(str(new_nic["id"]), new_nic)
    for nic_id in plan.attach_nics:
        nic = emu.store.get(nic_id)
        if nic is not None:
            nic["properties"]["virtualMachine"] = {"id": vm_id}
    doc = emu.store.put(vm_id, plan.vm)
    emu.store.meta(vm_id)["vm"] = plan.runtime
    emu.emit("vm.power", vm_id, plan.runtime.power)
    return doc


def _finish_boot(emu: Emulator, vm_id: str, plan: _Plan) -> None:
    doc = emu.store.get(vm_id)
    rt = vm_runtime(emu, vm_id)
    guest = guest_of(emu, vm_id)
    if doc is None or rt is None:
        return
    doc["properties"]["provisioningState"] = "Succeeded"
    if guest is not None and plan.source is not None:
        if plan.source.run_oobe:
            guest.first_boot(rt.trusted_launch)
        else:
            guest.boot()
    set_power(emu, vm_id, "running")


def seed_vm(
    emu: Emulator,
    *,
    subscription: str,
    resource_group: str,
    name: str,
    location: str,
    image_reference: dict[str, Any],
    vm_size: str = "Standard_D4s_v5",
    tags: dict[str, str] | None = None,
    security_type: str | None = "TrustedLaunch",
    nic_delete_option: str = "Delete",
    os_disk_delete_option: str = "Delete",
) -> dict[str, Any]:
    """Create a running VM (with NIC and OS disk) at once, without an LRO or events.

    For scenario seeding (e.g. AVD session hosts). ``image_reference`` is a marketplace
    reference (publisher/offer/sku/version) or ``{"id": <gallery image or version id>}``.
    Call under ``emu.lock``; raises ArmError on bad input like the PUT would.
    """
    vm_id = _id(subscription, resource_group, VM_TYPE, name)
    body = {
        "location": location,
        "tags": tags or {},
        "properties": {
            "hardwareProfile": {"vmSize": vm_size},
            "storageProfile": {
                "imageReference": image_reference,
                "osDisk": {"createOption": "FromImage", "deleteOption": os_disk_delete_option},
            },
            "securityProfile": {"securityType": security_type} if security_type else {},
            "networkProfile": {
                "networkApiVersion": "2020-11-01",
                "networkInterfaceConfigurations": [
                    {
                        "name": "nic",
                        "properties": {"primary": True, "deleteOption": nic_delete_option},
                    }
                ],
            },
        },
    }
    plan = _plan_vm(emu, vm_id, body)
    doc = _apply_plan(emu, vm_id, plan)
    _finish_boot(emu, vm_id, plan)
    return doc


# -- documents ------------------------------------------------------------------------------


def _nic_doc(
    emu: Emulator,
    nic_id: str,
    location: str,
    tags: dict[str, Any],
    ipcfgs: list[dict[str, Any]],
    *,
    vm_id: str | None = None,
    accel: bool = False,
) -> dict[str, Any]:
    counter = int(emu.modules.get("compute.ip", 3)) + 1
    emu.modules["compute.ip"] = counter
    rid = parse_resource_id(nic_id)
    configs = []
    for i, cfg in enumerate(ipcfgs):
        cfg = as_object(cfg, "ipConfigurations")
        cname = as_str(cfg.get("name"), "ipConfigurations.name") or f"ipconfig{i + 1}"
        cprops = as_object(cfg.get("properties"), "ipConfigurations.properties")
        subnet = cprops.get("subnet") or {
            "id": f"/subscriptions/{rid.subscription}/resourceGroups/{rid.resource_group}"
            "/providers/Microsoft.Network/virtualNetworks/emulator-vnet/subnets/default"
        }
        configs.append(
            {
                "name": cname,
                "id": f"{nic_id}/ipConfigurations/{cname}",
                "etag": 'W/"1"',
                "type": "Microsoft.Network/networkInterfaces/ipConfigurations",
                "properties": {
                    "provisioningState": "Succeeded",
                    "privateIPAddress": f"10.0.{counter // 250}.{counter % 250 + 4}",
                    "privateIPAllocationMethod": cprops.get("privateIPAllocationMethod", "Dynamic"),
                    "subnet": subnet,
                    "primary": i == 0,
                    "privateIPAddressVersion": "IPv4",
                    **(
                        {"privateIPAddressPrefixLength": cprops["privateIPAddressPrefixLength"]}
                        if "privateIPAddressPrefixLength" in cprops
                        else {}
                    ),
                    **(
                        {"publicIPAddress": cprops["publicIPAddress"]}
                        if "publicIPAddress" in cprops
                        else {}
                    ),
                },
            }
        )
    props: dict[str, Any] = {
        "provisioningState": "Succeeded",
        "resourceGuid": emu.new_id(),
        "ipConfigurations": configs,
        "dnsSettings": {
            "dnsServers": [],
            "appliedDnsServers": [],
            "internalDomainNameSuffix": "emulator.internal.cloudapp.net",
        },
        "macAddress": "00-0D-3A-"
        + "-".join(f"{(counter >> shift) % 256:02X}" for shift in (16, 8, 0)),
        "enableAcceleratedNetworking": accel,
        "enableIPForwarding": False,
        "disableTcpStateTracking": False,
        "primary": True,
        "vnetEncryptionSupported": False,
        "nicType": "Standard",
        "auxiliaryMode": "None",
        "auxiliarySku": "None",
    }
    if vm_id:
        props["virtualMachine"] = {"id": vm_id}
    return {
        "name": rid.name,
        "id": nic_id,
        "etag": 'W/"1"',
        "type": NIC_TYPE,
        "location": location,
        "tags": dict(tags),
        "properties": props,
    }


def _disk_doc(
    emu: Emulator,
    disk_id: str,
    location: str,
    tags: dict[str, Any],
    *,
    creation: dict[str, Any],
    os_type: str | None,
    hyper_v: str | None,
    size_gb: int,
    sku: str = "Premium_LRS",
    security: dict[str, Any] | None = None,
    snapshot: bool = False,
    incremental: bool = False,
) -> dict[str, Any]:
    rid = parse_resource_id(disk_id)
    now = emu.now_iso()
    props: dict[str, Any] = {
        "creationData": creation,
        "diskSizeGB": size_gb,
        "diskSizeBytes": _size_bytes(size_gb),
        "uniqueId": emu.new_id(),
        "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
        "networkAccessPolicy": "AllowAll",
        "publicNetworkAccess": "Enabled",
        "timeCreated": now,
        "provisioningState": "Updating",
        "diskState": "Unattached",
        "supportedCapabilities": {"acceleratedNetwork": True, "architecture": "x64"},
        "supportsHibernation": True,
    }
    if os_type:
        props["osType"] = os_type
    if hyper_v:
        props["hyperVGeneration"] = hyper_v
    if security:
        props["securityProfile"] = security
    if snapshot:
        props["incremental"] = incremental
    else:
        props["tier"] = "P10" if size_gb <= 128 else "P15"
        props["LastOwnershipUpdateTime"] = now
    tier = "Premium" if sku.startswith("Premium") else "Standard"
    return {
        "name": rid.name,
        "id": disk_id,
        "type": SNAP_TYPE if snapshot else DISK_TYPE,
        "location": location,
        "tags": dict(tags),
        "sku": {"name": sku, "tier": tier},
        "properties": props,
    }


def _instance_view(emu: Emulator, vm: dict[str, Any]) -> dict[str, Any]:
    rt = vm_runtime(emu, str(vm["id"])) or VmRuntime()
    guest = guest_of(emu, str(vm["id"]))
    state = str(vm["properties"].get("provisioningState", "Succeeded"))
    now = emu.now_iso()
    statuses = [
        {
            "code": f"ProvisioningState/{state.lower()}",
            "level": "Error" if state == "Failed" else "Info",
            "displayStatus": f"Provisioning {state.lower()}",
            "time": now,
        }
    ]
    if rt.generalized:
        statuses.append(
            {"code": "OSState/generalized", "level": "Info", "displayStatus": "VM generalized"}
        )
    statuses.append(_power_status(rt.power))
    if rt.power == "deallocated" and emu.store.meta(str(vm["id"])).get("hibernated"):
        statuses.append(
            {
                "code": "HibernationState/Hibernated",
                "level": "Info",
                "displayStatus": "VM hibernated",
            }
        )
    agent_ready = rt.power == "running" and state == "Succeeded"
    agent_status = (
        {
            "code": "ProvisioningState/succeeded",
            "level": "Info",
            "displayStatus": "Ready",
            "message": "GuestAgent is running and processing the extensions.",
            "time": now,
        }
        if agent_ready
        else {
            "code": "ProvisioningState/Unavailable",
            "level": "Warning",
            "displayStatus": "Not Ready",
            "message": "VM status blob is found but not yet populated.",
            "time": now,
        }
    )
    os_disk = vm["properties"]["storageProfile"]["osDisk"]
    return {
        "platformUpdateDomain": 0,
        "platformFaultDomain": 0,
        "computerName": vm["properties"].get("osProfile", {}).get("computerName", vm["name"]),
        "osName": guest.os_name if guest else "Windows",
        "osVersion": guest.os_version if guest else "",
        "vmAgent": {
            "vmAgentVersion": "2.7.41491.1150",
            "statuses": [agent_status],
            "extensionHandlers": [],
        },
        "disks": [
            {
                "name": os_disk["name"],
                "statuses": [
                    {
                        "code": "ProvisioningState/succeeded",
                        "level": "Info",
                        "displayStatus": "Provisioning succeeded",
                        "time": vm["properties"].get("timeCreated", now),
                    }
                ],
            }
        ],
        "extensions": [],
        "hyperVGeneration": rt.hyper_v_generation,
        "isVMInStandbyPool": False,
        "statuses": statuses,
    }


# -- script execution (run commands) --------------------------------------------------------


@dataclass
class Execution:
    """A running script on a VM."""

    vm_id: str
    steps: list[Step]
    timeout: timedelta
    started: datetime
    ctx: ScriptContext
    on_state: Any  # Callable[[Execution], None]: called on every state change
    state: str = "Pending"  # Pending|Running|Succeeded|Failed|TimedOut|Canceled
    ended: datetime | None = None
    index: int = 0
    cancelled: bool = False

    @property
    def exit_code(self) -> int:
        if self.ctx.exit_code is not None:
            return self.ctx.exit_code
        return 0 if self.state in ("Succeeded", "Running", "Pending") else 1

    def output(self) -> str:
        return "\n".join(self.ctx.stdout)

    def error(self) -> str:
        return "\n".join(self.ctx.stderr)


def _start_execution(
    emu: Emulator,
    vm_id: str,
    script: str,
    parameters: dict[str, str],
    timeout_seconds: int,
    on_state: Any,
    *,
    fail_with: str | None = None,
) -> Execution:
    """Run ``script`` on the VM's guest after the agent's dispatch delay; ``fail_with`` makes
    the execution fail at dispatch with that message (a script the agent cannot fetch)."""
    # The guest reaches IMDS for this VM's own identities only.
    ctx = ScriptContext(now=emu.now, imds=lambda url, headers: imds(emu, vm_id, url, headers))
    try:
        steps = parse_script(script, parameters)
        parse_error: ScriptError | str | None = fail_with
    except ScriptError as e:
        steps, parse_error = [], e
    ex = Execution(vm_id, steps, timedelta(seconds=timeout_seconds), emu.now(), ctx, on_state)
    rt = vm_runtime(emu, vm_id)
    if rt is not None:
        rt.executions.append(ex)

    def dispatch() -> None:
        if ex.cancelled:
            return
        ex.state = "Running"
        ex.started = emu.now()
        on_state(ex)
        if parse_error is not None:
            ctx.fail(str(parse_error))
            _end(emu, ex, "Failed")
            return
        _next(emu, ex)

    emu.schedule(emu.latency.get("runcommand.dispatch"), dispatch, f"runcommand:{vm_id}")
    return ex


def _next(emu: Emulator, ex: Execution) -> None:
    while ex.index < len(ex.steps) and not should_run(ex.steps[ex.index], ex.ctx):
        ex.index += 1  # the rest of a try block after its error, or a catch block not needed
    if ex.index >= len(ex.steps):
        _end(emu, ex, "Succeeded")
        return
    step = ex.steps[ex.index]
    delay = (
        timedelta(seconds=step.seconds)
        if step.seconds is not None
        else emu.latency.get(step.latency)
    )
    emu.schedule(delay, lambda: _run_step(emu, ex, step), f"guest:{step.latency}")


def _run_step(emu: Emulator, ex: Execution, step: Step) -> None:
    if ex.cancelled or ex.state not in ("Running",):
        return
    rt = vm_runtime(emu, ex.vm_id)
    guest = guest_of(emu, ex.vm_id)
    if rt is None or guest is None:
        ex.ctx.fail("The virtual machine was deleted while the script was running.")
        _end(emu, ex, "Failed")
        return
    if rt.power != "running":
        ex.ctx.fail(f"The virtual machine stopped ({rt.power}) while the script was running.")
        _end(emu, ex, "Failed")
        return
    if emu.now() - ex.started > ex.timeout:
        ex.ctx.fail(f"The script did not finish within {int(ex.timeout.total_seconds())} s.")
        _end(emu, ex, "TimedOut")
        return
    step.run(guest, ex.ctx)
    guest.history.append(f"{emu.now_iso()} {step.text}")  # step texts carry no secrets
    ex.index += 1
    emu.emit("vm.guest", ex.vm_id, step.latency)
    if ex.ctx.http_posts:
        posts = list(ex.ctx.http_posts)
        ex.ctx.http_posts.clear()
        _post_async(emu, ex, posts)
        return
    _after_step(emu, ex)


def _after_step(emu: Emulator, ex: Execution) -> None:
    ctx = ex.ctx
    settle(ex.steps[ex.index - 1], ctx)  # an error inside ``try`` goes to its ``catch``
    if ctx.exit_code is not None:
        _end(emu, ex, "Succeeded" if ctx.exit_code == 0 else "Failed")
        return
    if ctx.power_request is not None:
        _end(emu, ex, "Succeeded")
        return
    _next(emu, ex)


def _post_async(
    emu: Emulator, ex: Execution, posts: list[tuple[str, str, str, dict[str, str]]]
) -> None:
    """The guest's HTTP POSTs leave the emulator's lock; the script resumes afterwards."""
    emu.work_enter()
    results: list[str] = []

    def worker() -> None:
        try:
            for url, ctype, body, extra in posts:
                if url.startswith(emu.base_url + "/"):  # this emulator (e.g. its topic)
                    status, _, answer = emu.handle(
                        "POST",
                        url[len(emu.base_url) :],
                        Headers({**extra, "Content-Type": ctype}),
                        body.encode(),
                    )
                    text = answer.decode(errors="replace")
                    results.append(
                        f"ok:{status}:{text}"
                        if status < 400
                        else f"err:The remote server returned an error: ({status})."
                    )
                    continue
                req = urllib.request.Request(  # noqa: S310 - loopback only, checked by the guest
                    url,
                    data=body.encode(),
                    headers={**extra, "Content-Type": ctype},
                    method="POST",
                )
                try:
                    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
                        text = resp.read().decode(errors="replace")
                        results.append(f"ok:{resp.status}:{text}")
                except urllib.error.HTTPError as e:
                    results.append(f"err:The remote server returned an error: ({e.code}).")
                except OSError as e:
                    results.append(f"err:Unable to connect to the remote server ({e}).")
        finally:
            emu.schedule(timedelta(0), resume, f"guest-http:{ex.vm_id}")
            emu.work_leave()

    def resume() -> None:
        for r in results:
            kind, _, rest = r.partition(":")
            if kind == "ok":
                status, _, text = rest.partition(":")
                ex.ctx.out(text.strip() or f"StatusCode: {status}")
            else:
                ex.ctx.fail(f"Invoke-RestMethod : {rest}")
                break
        _after_step(emu, ex)

    threading.Thread(target=worker, name="guest-http", daemon=True).start()


def _end(emu: Emulator, ex: Execution, state: str) -> None:
    if ex.state not in ("Pending", "Running"):
        return
    ex.state = state
    ex.ended = emu.now()
    rt = vm_runtime(emu, ex.vm_id)
    guest = guest_of(emu, ex.vm_id)
    if rt is not None:
        if ex in rt.executions:
            rt.executions.remove(ex)
        if ex.ctx.power_request == "stop":
            # Guest-initiated shutdown: the platform sees the VM stopped; no ARM event.
            rt.seq += 1
            set_power(emu, ex.vm_id, "stopped")
        elif ex.ctx.power_request == "restart" and guest is not None:
            guest.boot()
    ex.on_state(ex)


# -- power ------------------------------------------------------------------------------------


def _check_not_busy(doc: dict[str, Any], action: str) -> None:
    state = str(doc["properties"].get("provisioningState"))
    if state in ("Creating", "Deleting"):
        raise ArmError(
            409,
            "OperationNotAllowed",
            f"Operation '{action}' is not allowed on VM '{doc['name']}' since the VM is "
            f"{'being created' if state == 'Creating' else 'marked for deletion'}.",
        )


def _check_startable(doc: dict[str, Any], rt: VmRuntime) -> None:
    if rt.generalized:
        raise operation_not_allowed(
            f"Operation 'start' is not allowed on VM '{doc['name']}' since the VM is generalized."
        )


def _begin_power(
    emu: Emulator,
    vm_id: str,
    rt: VmRuntime,
    transitional: str,
    final: str,
    *,
    reboot: bool = False,
) -> tuple[bool, Callable[[], bool]]:
    """Move a VM towards ``final`` through ``transitional`` (scripts end unless it stays up).

    Returns (already there, the completion to run when the platform is done; it answers
    whether it still applied: a later power change makes it stale)."""
    rt.seq += 1
    seq = rt.seq
    already = rt.power == final and not reboot
    if final != "running" or reboot:
        why = "restarted" if reboot else "stopped"
        for ex in list(rt.executions):
            ex.cancelled = True
            ex.ctx.fail(f"The virtual machine was {why} while the script was running.")
            _end(emu, ex, "Failed")
    if not already:
        set_power(emu, vm_id, transitional)

    def complete() -> bool:
        r = vm_runtime(emu, vm_id)
        if r is None or r.seq != seq:
            return False
        guest = guest_of(emu, vm_id)
        if guest is not None and final == "running" and not already:
            guest.boot()
        set_power(emu, vm_id, final)
        return True

    return already, complete


def start_vm(emu: Emulator, vm_id: str) -> bool:
    """Start a stopped or deallocated VM as the ``start`` action does, for other modules (AVD's
    Start VM on Connect); under the lock. It runs ``vm.start`` later (``vm.power`` listeners
    hear "starting", then "running") and publishes the start action's event then.

    Returns False when the VM is already running or starting; raises ArmError like the action
    (404 missing, 409 being created or deleted, or generalized)."""
    doc = emu.store.get(vm_id)
    if doc is None or str(doc.get("type", "")).lower() != VM_TYPE.lower():
        raise resource_not_found(vm_id)
    vm_id = str(doc["id"])
    rt = vm_runtime(emu, vm_id)
    if rt is None or rt.power in ("running", "starting"):
        return False
    _check_not_busy(doc, "start")
    _check_startable(doc, rt)
    _, complete = _begin_power(emu, vm_id, rt, "starting", "running")

    def done() -> None:
        if complete():
            emu.events.resource_action(vm_id, "start")

    emu.schedule(emu.latency.get("vm.start"), done, f"vm-start:{vm_id}")
    return True


# -- updates (PUT on an existing VM, PATCH) ---------------------------------------------------

# Read-only VM properties: a request may carry them (e.g. a GET body sent back) and Azure
# ignores them.
VM_READ_ONLY = frozenset(
    {
        "provisioningState",
        "vmId",
        "timeCreated",
        "instanceView",
        "storageProfile.osDisk.managedDisk.id",
        "storageProfile.osDisk.osType",
        "storageProfile.imageReference.exactVersion",
        "storageProfile.diskControllerType",
        "osProfile.adminPassword",
    }
)
# Read-only disk and snapshot properties (ignored in a PUT on an existing one or a PATCH).
DISK_READ_ONLY = frozenset(
    {
        "provisioningState",
        "timeCreated",
        "uniqueId",
        "diskState",
        "diskSizeBytes",
        "creationData",
        "LastOwnershipUpdateTime",
        "osType",
        "hyperVGeneration",
    }
)
# Properties fixed at creation (Compute answers 409 PropertyChangeNotAllowed).
VM_IMMUTABLE = (
    ("osProfile", "computerName"),
    ("osProfile", "adminUsername"),
    ("osProfile", "customData"),
    ("storageProfile", "osDisk", "name"),
    ("storageProfile", "osDisk", "createOption"),
)


def _dig(doc: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def _ref_key(ref: Any) -> tuple[str, ...]:
    """An image reference without the read-only exactVersion, for comparison."""
    if not isinstance(ref, dict):
        return ()
    return tuple(
        f"{k.lower()}={str(v).lower()}" for k, v in sorted(ref.items()) if k != "exactVersion"
    )


def _check_vm_patch(doc: dict[str, Any], props: dict[str, Any]) -> None:
    current = doc["properties"]
    for path in VM_IMMUTABLE:
        new = _dig(props, path)
        if new is not None and str(new) != str(_dig(current, path)):
            raise property_change_not_allowed(".".join(path))
    new_ref = _dig(props, ("storageProfile", "imageReference"))
    old_ref = _dig(current, ("storageProfile", "imageReference"))
    if new_ref is not None and _ref_key(new_ref) != _ref_key(old_ref):
        raise property_change_not_allowed("imageReference")
    nics = _dig(props, ("networkProfile", "networkInterfaces"))
    if isinstance(nics, list):
        old = {str(r.get("id", "")).lower() for r in current["networkProfile"]["networkInterfaces"]}
        new_ids = {_norm_id(str(r.get("id", ""))).lower() for r in nics if isinstance(r, dict)}
        if new_ids != old:
            raise bad_request(
                "Adding or removing network interfaces of an existing VM is not modelled by "
                "the emulator.",
                target="properties.networkProfile.networkInterfaces",
            )
        for r in nics:
            if isinstance(r, dict) and r.get("id"):
                r["id"] = next(
                    str(o["id"])
                    for o in current["networkProfile"]["networkInterfaces"]
                    if str(o["id"]).lower() == _norm_id(str(r["id"])).lower()
                )
    data_disks = _dig(props, ("storageProfile", "dataDisks"))
    if isinstance(data_disks, list):
        old_luns = {int(d.get("lun", -1)) for d in current["storageProfile"].get("dataDisks", [])}
        new_luns = {d.get("lun") for d in data_disks if isinstance(d, dict)}
        if new_luns != old_luns:
            raise bad_request(
                "Attaching or detaching data disks of an existing VM is not modelled by the "
                "emulator (data disks are set when the VM is created).",
                target="properties.storageProfile.dataDisks",
            )
        by_lun = {int(d.get("lun", -1)): d for d in current["storageProfile"].get("dataDisks", [])}
        props["storageProfile"]["dataDisks"] = [
            merge_patch(
                json.loads(json.dumps(by_lun[int(d["lun"])])),
                d,
                read_only=frozenset({"managedDisk", "name", "createOption", "diskSizeGB"}),
            )
            for d in data_disks
            if isinstance(d, dict)
        ]


def check_if_match(req: Request, doc: dict[str, Any]) -> None:
    """ARM's optimistic concurrency: ``If-Match`` must name the current etag (or ``*``)."""
    want = req.headers.get("If-Match")
    if want and want.strip() != "*" and want.strip() != str(doc.get("etag", "")):
        raise ArmError(
            412,
            "PreconditionFailed",
            f"The condition specified using HTTP conditional header(s) is not met "
            f"(If-Match {want}, current etag {doc.get('etag')}).",
        )


# -- registration -----------------------------------------------------------------------------


def register(emu: Emulator) -> None:
    emu.latency.register("vm.redeploy", timedelta(minutes=5))  # stop, move, boot
    emu.latency.register("vm.reapply", timedelta(seconds=30))
    emu.latency.register("image.create", timedelta(minutes=2))  # a managed image
    emu.latency.register("disk.access", timedelta(seconds=10))  # grant/revoke a SAS, update

    def vm_or_404(req: Request) -> dict[str, Any]:
        vm_id = VM.format(**_fmt(req))
        doc = emu.store.get(vm_id)
        if doc is None or str(doc.get("type")) != VM_TYPE:
            raise resource_not_found(vm_id)
        return doc

    def _fmt(req: Request) -> dict[str, str]:
        return {k: v for k, v in req.params.items()}

    def vm_view(doc: dict[str, Any], expand: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(json.dumps(doc))
        # Like Azure, never return customData (it may carry secrets such as AVD tokens).
        (out["properties"].get("osProfile") or {}).pop("customData", None)
        if "userdata" not in expand.lower():  # returned only with $expand=userData
            out["properties"].pop("userData", None)
        if "instanceview" in expand.lower():
            out["properties"]["instanceView"] = _instance_view(emu, doc)
        return out

    # -- virtual machines ----------------------------------------------------------------
    @emu.route("PUT", VM, op="Microsoft.Compute/virtualMachines/write")
    def put_vm(req: Request) -> Response:
        body = req.json_object()
        vm_id = VM.format(**_fmt(req))
        existing = emu.store.get(vm_id)
        if existing is not None:
            return _update_vm(req, existing, body)
        plan = _plan_vm(emu, vm_id, body)
        doc = _apply_plan(emu, vm_id, plan)
        rid = parse_resource_id(vm_id)
        source = plan.source
        fail: ArmError | None = None
        if emu.faults.flag(
            "vm_provisioning_failure", vm=rid.name, resource_group=rid.resource_group or ""
        ):
            fail = ArmError(
                200,
                "OSProvisioningTimedOut",
                f"OS Provisioning for VM '{rid.name}' did not finish in the allotted time. The "
                "VM may still finish provisioning successfully. Please check provisioning state "
                "later.",
            )
        elif source is not None and source.provisioning_fails == "not-sysprepped":
            fail = ArmError(
                200,
                "OSProvisioningTimedOut",
                f"OS Provisioning for VM '{rid.name}' did not finish in the allotted time. The "
                "image was declared Generalized but the guest was not generalized with Sysprep.",
            )

        def complete() -> None:
            _finish_boot(emu, vm_id, plan)

        def failed(err: ArmError) -> None:
            d = emu.store.get(vm_id)
            rt = vm_runtime(emu, vm_id)
            if d is not None:
                d["properties"]["provisioningState"] = "Failed"
            if rt is not None:
                set_power(emu, vm_id, "running")

        return emu.begin_lro(
            vm_id,
            duration=emu.latency.get("vm.create"),
            on_complete=complete,
            on_fail=failed,
            fail=fail,
            op=req.op,
            status_code=201,
            body=vm_view(doc, ""),
            publish_event=True,
        )

    def _update_vm(req: Request, doc: dict[str, Any], body: dict[str, Any]) -> Response:
        """PUT on an existing VM and PATCH: tags replaced whole, properties merged (JSON merge
        patch); read-only properties ignored, properties fixed at creation refused."""
        if doc["properties"].get("provisioningState") in ("Creating", "Deleting"):
            raise ArmError(
                409,
                "OperationNotAllowed",
                f"Operation 'update' is not allowed on VM '{doc['name']}' since the VM is "
                f"{doc['properties']['provisioningState'].lower()}.",
            )
        check_if_match(req, doc)
        props = dict(as_object(body.get("properties"), "properties"))
        _check_vm_patch(doc, props)
        tags = dict(as_object(body.get("tags"), "tags")) if "tags" in body else None
        merged = json.loads(json.dumps(doc["properties"]))
        merge_patch(merged, props, read_only=VM_READ_ONLY)
        doc["properties"] = merged
        if tags is not None:
            doc["tags"] = tags
        if body.get("identity") is not None:  # as on create: ids filled in, malformed is 400
            doc["identity"] = vm_identity(emu, body["identity"])
        for key in ("plan", "zones"):
            if body.get(key) is not None:
                doc[key] = body[key]
        doc["etag"] = f'"{int(str(doc.get("etag", "1")).strip(chr(34)) or 1) + 1}"'
        doc["properties"]["provisioningState"] = "Updating"
        vm_id = str(doc["id"])

        def complete() -> None:
            d = emu.store.get(vm_id)
            if d is not None:
                d["properties"]["provisioningState"] = "Succeeded"

        return emu.begin_lro(
            vm_id,
            duration=emu.latency.get("vm.update"),
            on_complete=complete,
            op="Microsoft.Compute/virtualMachines/write",
            status_code=200,
            body=vm_view(doc, ""),
            publish_event=True,
        )

    @emu.route("PATCH", VM, op="Microsoft.Compute/virtualMachines/write")
    def patch_vm(req: Request) -> Response:
        return _update_vm(req, vm_or_404(req), req.json_object())

    @emu.route("GET", VM, op="Microsoft.Compute/virtualMachines/read")
    def get_vm(req: Request) -> Response:
        return Response(200, vm_view(vm_or_404(req), req.query.get("$expand", "")))

    @emu.route(
        "GET", VM + "/instanceView", op="Microsoft.Compute/virtualMachines/instanceView/read"
    )
    def get_instance_view(req: Request) -> Response:
        return Response(200, _instance_view(emu, vm_or_404(req)))

    @emu.route("GET", VMS, op="Microsoft.Compute/virtualMachines/read")
    def list_vms(req: Request) -> Response:
        prefix = RG.format(**_fmt(req))
        expand = req.query.get("$expand", "")
        items = [vm_view(v, expand) for v in emu.store.list(prefix, VM_TYPE)]
        return emu.paged(req, items)

    @emu.route(
        "GET",
        "/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines",
        op="Microsoft.Compute/virtualMachines/read",
    )
    def list_all_vms(req: Request) -> Response:
        items = [
            vm_view(v, "") for v in emu.store.list(f"/subscriptions/{req.params['sub']}", VM_TYPE)
        ]
        return emu.paged(req, items)

    @emu.route(
        "GET",
        "/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/virtualMachines",
        op="Microsoft.Compute/virtualMachines/read",
    )
    def list_vms_by_location(req: Request) -> Response:
        loc = norm_region(req.params["location"])
        items = [
            vm_view(v, "")
            for v in emu.store.list(f"/subscriptions/{req.params['sub']}", VM_TYPE)
            if norm_region(str(v.get("location", ""))) == loc
        ]
        return emu.paged(req, items)

    def power_action(
        req: Request, action: str, transitional: str, final: str, latency: str
    ) -> Response:
        doc = vm_or_404(req)
        _check_not_busy(doc, action)
        vm_id = str(doc["id"])
        rt = vm_runtime(emu, vm_id) or VmRuntime(power="running")
        if action == "start":
            _check_startable(doc, rt)
        reboot = action == "restart"
        if reboot and rt.power != "running":
            raise operation_not_allowed(
                f"Operation 'restart' is not allowed on VM '{doc['name']}' since the VM is "
                f"{rt.power}. {NOT_RUNNING}"
            )
        already, complete = _begin_power(emu, vm_id, rt, transitional, final, reboot=reboot)
        duration = timedelta(seconds=2) if already else emu.latency.get(latency)
        return emu.begin_lro(
            vm_id,
            duration=duration,
            on_complete=complete,
            op=req.op,
            status_code=202,
            publish_event=True,
        )

    @emu.route("POST", VM + "/start", op="Microsoft.Compute/virtualMachines/start/action")
    def start(req: Request) -> Response:
        emu.store.meta(str(vm_or_404(req)["id"]))["hibernated"] = False
        return power_action(req, "start", "starting", "running", "vm.start")

    @emu.route("POST", VM + "/deallocate", op="Microsoft.Compute/virtualMachines/deallocate/action")
    def deallocate(req: Request) -> Response:
        doc = vm_or_404(req)
        hibernate = req.query.get("hibernate", "").lower() == "true"
        caps = doc["properties"].get("additionalCapabilities") or {}
        if hibernate and not caps.get("hibernationEnabled"):
            raise operation_not_allowed(
                f"Hibernation is not enabled on VM '{doc['name']}'. Set "
                "additionalCapabilities.hibernationEnabled to true first."
            )
        emu.store.meta(str(doc["id"]))["hibernated"] = hibernate
        return power_action(req, "deallocate", "deallocating", "deallocated", "vm.deallocate")

    @emu.route("POST", VM + "/powerOff", op="Microsoft.Compute/virtualMachines/powerOff/action")
    def power_off(req: Request) -> Response:
        return power_action(req, "powerOff", "stopping", "stopped", "vm.power_off")

    @emu.route("POST", VM + "/restart", op="Microsoft.Compute/virtualMachines/restart/action")
    def restart(req: Request) -> Response:
        return power_action(req, "restart", "starting", "running", "vm.restart")

    @emu.route("POST", VM + "/redeploy", op="Microsoft.Compute/virtualMachines/redeploy/action")
    def redeploy(req: Request) -> Response:
        """A move to another host: the VM stops, moves and boots (running afterwards)."""
        doc = vm_or_404(req)
        _check_not_busy(doc, "redeploy")
        vm_id = str(doc["id"])
        rt = vm_runtime(emu, vm_id) or VmRuntime(power="running")
        _check_startable(doc, rt)
        _, complete = _begin_power(emu, vm_id, rt, "starting", "running", reboot=True)
        return emu.begin_lro(
            vm_id,
            duration=emu.latency.get("vm.redeploy"),
            on_complete=complete,
            op=req.op,
            status_code=202,
            publish_event=True,
        )

    @emu.route("POST", VM + "/reapply", op="Microsoft.Compute/virtualMachines/reapply/action")
    def reapply(req: Request) -> Response:
        """Reapplies the VM's state (no power change)."""
        doc = vm_or_404(req)
        _check_not_busy(doc, "reapply")
        return emu.begin_lro(
            str(doc["id"]),
            duration=emu.latency.get("vm.reapply"),
            on_complete=None,
            op=req.op,
            status_code=202,
            publish_event=True,
        )

    @emu.route("GET", VM + "/vmSizes", op="Microsoft.Compute/virtualMachines/vmSizes/read")
    def available_sizes(req: Request) -> Response:
        vm_or_404(req)
        return Response(200, {"value": [dict(s) for s in VM_SIZES]})

    @emu.route("POST", VM + "/generalize", op="Microsoft.Compute/virtualMachines/generalize/action")
    def generalize(req: Request) -> Response:
        doc = vm_or_404(req)
        _check_not_busy(doc, "generalize")
        vm_id = str(doc["id"])
        rt = vm_runtime(emu, vm_id) or VmRuntime(power="running")
        guest = guest_of(emu, vm_id)
        if rt.power in ("running", "starting", "stopping", "deallocating"):
            raise operation_not_allowed(
                f"Operation 'generalize' is not allowed on VM '{doc['name']}' since the VM is "
                "running. Please power off explicitly in case you shut down the VM from inside "
                "the guest operating system."
            )
        if guest is not None and not guest.sysprepped and guest.os_type == "Windows":
            raise operation_not_allowed(
                f"Operation 'generalize' is not allowed on VM '{doc['name']}' since the guest "
                "OS has not been generalized. Run Sysprep (/generalize /oobe) inside the VM "
                "before generalizing it."
            )
        rt.generalized = True
        emu.events.resource_action(vm_id, "generalize")
        return Response(200)

    @emu.route("DELETE", VM, op="Microsoft.Compute/virtualMachines/delete")
    def delete_vm(req: Request) -> Response:
        vm_id = VM.format(**_fmt(req))
        doc = emu.store.get(vm_id)
        if doc is None:
            return Response(204)
        force = req.query.get("forcedeletion", "").lower() == "true"
        doc["properties"]["provisioningState"] = "Deleting"
        rt = vm_runtime(emu, vm_id)
        if rt is not None:
            rt.seq += 1
            for ex in list(rt.executions):
                ex.cancelled = True
                ex.ctx.fail("The virtual machine was deleted while the script was running.")
                _end(emu, ex, "Failed")
        duration = emu.latency.get("vm.delete") * (0.3 if force else 1.0)

        def complete() -> None:
            _delete_vm_now(emu, vm_id)

        return emu.begin_lro(
            vm_id,
            duration=duration,
            on_complete=complete,
            op=req.op,
            status_code=202,
            publish_event=True,
        )

    # -- run commands: the action ----------------------------------------------------------
    @emu.route("POST", VM + "/runCommand", op="Microsoft.Compute/virtualMachines/runCommand/action")
    def run_command(req: Request) -> Response:
        doc = vm_or_404(req)
        _check_not_busy(doc, "runCommand")
        body = req.json_object()
        vm_id = str(doc["id"])
        rt = vm_runtime(emu, vm_id) or VmRuntime()
        command_id = str(body.get("commandId", ""))
        guest = guest_of(emu, vm_id)
        expected = "RunShellScript" if guest and guest.os_type == "Linux" else "RunPowerShellScript"
        if command_id.lower() != expected.lower():
            raise bad_request(
                f"The command id '{command_id}' is not supported by the emulator; use "
                f"'{expected}' with a script.",
                target="commandId",
            )
        if rt.power != "running":
            raise operation_not_allowed(
                f"Cannot invoke run command on VM '{doc['name']}' because it is {rt.power}. "
                f"{NOT_RUNNING}"
            )
        if rt.action_run_active:
            raise ArmError(
                409,
                "Conflict",
                "Run command extension execution is in progress. Please wait for completion "
                "before invoking a run command.",
            )
        script_lines = body.get("script") or []
        if not isinstance(script_lines, list) or not all(isinstance(x, str) for x in script_lines):
            raise bad_request("The 'script' must be a list of strings.", target="script")
        params = {
            str(p.get("name")): str(p.get("value", ""))
            for p in as_list(body.get("parameters"), "parameters")
            if isinstance(p, dict) and p.get("name")
        }
        resp, handle = emu.begin_manual_lro(
            vm_id, op=req.op, status_code=202, location_result=True, publish_event=True
        )
        rt.action_run_active = True

        def on_state(ex: Execution) -> None:
            if ex.state in ("Pending", "Running"):
                return
            r = vm_runtime(emu, vm_id)
            if r is not None:
                r.action_run_active = False
            handle.succeed(
                {
                    "value": [
                        {
                            "code": "ComponentStatus/StdOut/succeeded",
                            "level": "Info",
                            "displayStatus": "Provisioning succeeded",
                            "message": ex.output(),
                        },
                        {
                            "code": "ComponentStatus/StdErr/succeeded",
                            "level": "Info",
                            "displayStatus": "Provisioning succeeded",
                            "message": ex.error(),
                        },
                    ]
                }
            )

        _start_execution(
            emu, vm_id, "\n".join(script_lines), params, MAX_RUN_COMMAND_SECONDS, on_state
        )
        return resp

    # -- run commands: the built-in catalogue (VirtualMachineRunCommands_List / _Get) -------
    catalogue_route = (
        "/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/runCommands"
    )

    @emu.route("GET", catalogue_route, op="Microsoft.Compute/locations/runCommands/read")
    def list_builtin_commands(req: Request) -> Response:
        return emu.paged(
            req, [{k: v for k, v in c.items() if k != "script"} for c in BUILTIN_COMMANDS]
        )

    @emu.route(
        "GET", catalogue_route + "/{commandId}", op="Microsoft.Compute/locations/runCommands/read"
    )
    def get_builtin_command(req: Request) -> Response:
        wanted = req.params["commandId"].lower()
        for c in BUILTIN_COMMANDS:
            if str(c["id"]).lower() == wanted:
                return Response(200, dict(c))
        raise ArmError(
            404, "NotFound", f"The run command '{req.params['commandId']}' was not found."
        )

    # -- run commands: managed (child resources) ---------------------------------------------
    rc_route = VM + "/runCommands/{name}"

    def rc_view(doc: dict[str, Any], expand: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(json.dumps(doc))
        if "instanceview" in expand.lower():
            view = emu.store.meta(str(doc["id"])).get("view")
            if isinstance(view, dict):
                out["properties"]["instanceView"] = dict(view)
        return out

    @emu.route("PUT", rc_route, op="Microsoft.Compute/virtualMachines/runCommands/write")
    def put_rc(req: Request) -> Response:
        vm = vm_or_404(req)
        rc_id = f"{vm['id']}/runCommands/{req.params['name']}"
        body = req.json_object()
        props = body.get("properties")
        if not isinstance(props, dict):
            raise bad_request(
                "Required parameter 'properties' is missing (null).", target="properties"
            )
        tags = dict(as_object(body.get("tags"), "tags"))
        existed = emu.store.get(rc_id) is not None
        return apply_rc(req, vm, rc_id, props, body.get("location"), tags, existed)

    @emu.route("PATCH", rc_route, op="Microsoft.Compute/virtualMachines/runCommands/write")
    def patch_rc(req: Request) -> Response:
        """An update re-runs the command with the merged properties (as Azure does)."""
        vm = vm_or_404(req)
        rc_id = f"{vm['id']}/runCommands/{req.params['name']}"
        doc = emu.store.get(rc_id)
        if doc is None:
            raise resource_not_found(rc_id)
        body = req.json_object()
        props = json.loads(json.dumps(doc["properties"]))
        merge_patch(
            props,
            as_object(body.get("properties"), "properties"),
            read_only=frozenset({"provisioningState", "instanceView"}),
        )
        tags = dict(as_object(body.get("tags"), "tags")) if "tags" in body else doc["tags"]
        return apply_rc(req, vm, rc_id, props, doc.get("location"), tags, True)

    def apply_rc(
        req: Request,
        vm: dict[str, Any],
        rc_id: str,
        props: dict[str, Any],
        location: Any,
        tags: dict[str, Any],
        existed: bool,
    ) -> Response:
        _check_not_busy(vm, "runCommands/write")
        vm_id = str(vm["id"])
        src = props.get("source") or {}
        kinds = [
            k for k in ("script", "scriptUri", "commandId") if isinstance(src, dict) and src.get(k)
        ]
        if len(kinds) != 1 or not isinstance(src.get(kinds[0]), str):
            raise bad_request(
                "properties.source needs exactly one of script, scriptUri or commandId.",
                target="properties.source",
            )
        # The emulator has no blob storage and no built-in command library: a scriptUri or a
        # commandId is accepted and its execution fails the way an unreachable script does.
        fail_with = None
        if kinds[0] == "scriptUri":
            fail_with = (
                f"Failed to download the script from '{src['scriptUri']}': the emulator has no "
                "blob storage (use source.script)."
            )
        elif kinds[0] == "commandId":
            fail_with = f"The command id '{src['commandId']}' is not available in the emulator."
        script = str(src.get("script") or "")
        timeout = (
            as_int(props.get("timeoutInSeconds"), "properties.timeoutInSeconds")
            or MAX_RUN_COMMAND_SECONDS
        )
        if timeout <= 0 or timeout > 86400:
            raise bad_request(
                "timeoutInSeconds must be between 1 and 86400.", target="timeoutInSeconds"
            )
        rt = vm_runtime(emu, vm_id) or VmRuntime()
        if rt.power != "running":
            raise operation_not_allowed(
                f"Cannot run command '{parse_resource_id(rc_id).name}' on VM '{vm['name']}' "
                f"because it is {rt.power}. {NOT_RUNNING}"
            )
        public_props = {
            k: v
            for k, v in props.items()
            if k not in ("protectedParameters", "runAsPassword", "instanceView")
        }
        public_props.setdefault("asyncExecution", False)
        public_props.setdefault("treatFailureAsDeploymentFailure", False)
        public_props.setdefault("timeoutInSeconds", timeout)
        public_props.setdefault("parameters", [])
        public_props["provisioningState"] = "Creating" if not existed else "Updating"
        doc = {
            "name": parse_resource_id(rc_id).name,
            "id": rc_id,
            "type": RC_TYPE,
            "location": location or vm["location"],
            "tags": dict(tags),
            "properties": public_props,
        }
        emu.store.put(rc_id, doc)
        meta = emu.store.meta(rc_id)
        old = meta.get("execution")
        if isinstance(old, Execution):
            old.cancelled = True
        meta["view"] = {
            "executionState": "Pending",
            "executionMessage": "",
            "exitCode": 0,
            "output": "",
            "error": "",
            "startTime": None,
            "endTime": None,
            "statuses": [],
        }
        params = {
            str(p.get("name")): str(p.get("value", ""))
            for p in as_list(props.get("parameters"), "properties.parameters")
            + as_list(props.get("protectedParameters"), "properties.protectedParameters")
            if isinstance(p, dict) and p.get("name")
        }
        async_exec = bool(public_props["asyncExecution"])
        treat_failure = bool(public_props["treatFailureAsDeploymentFailure"])
        resp, handle = emu.begin_manual_lro(
            rc_id,
            op=req.op,
            status_code=200 if existed else 201,
            body=rc_view(doc, ""),
            location=str(vm["location"]),
            publish_event=True,
        )

        def on_state(ex: Execution) -> None:
            d = emu.store.get(rc_id)
            if d is None or emu.store.meta(rc_id).get("execution") is not ex:
                return
            view = emu.store.meta(rc_id)["view"]
            view["executionState"] = ex.state
            view["output"] = ex.output()
            view["error"] = ex.error()
            view["exitCode"] = ex.exit_code
            view["startTime"] = iso(ex.started)
            if ex.state == "Running":
                if async_exec:
                    d["properties"]["provisioningState"] = "Succeeded"
                    handle.succeed(None)
                return
            view["endTime"] = iso(ex.ended or emu.now())
            view["executionMessage"] = (
                "Execution completed"
                if ex.state == "Succeeded"
                else f"Execution {ex.state.lower()}"
            )
            failed = ex.state != "Succeeded"
            if failed and treat_failure:
                d["properties"]["provisioningState"] = "Failed"
                handle.fail(
                    ArmError(
                        200,
                        "VMExtensionProvisioningError",
                        f"Run command '{d['name']}' failed with exit code {ex.exit_code}: "
                        f"{ex.error()[:500]}",
                    )
                )
            else:
                d["properties"]["provisioningState"] = "Succeeded"
                handle.succeed(None)

        ex = _start_execution(emu, vm_id, script, params, timeout, on_state, fail_with=fail_with)
        meta["execution"] = ex
        return resp

    @emu.route("GET", rc_route, op="Microsoft.Compute/virtualMachines/runCommands/read")
    def get_rc(req: Request) -> Response:
        vm = vm_or_404(req)
        rc_id = f"{vm['id']}/runCommands/{req.params['name']}"
        doc = emu.store.get(rc_id)
        if doc is None:
            raise resource_not_found(rc_id)
        return Response(200, rc_view(doc, req.query.get("$expand", "")))

    @emu.route("GET", VM + "/runCommands", op="Microsoft.Compute/virtualMachines/runCommands/read")
    def list_rc(req: Request) -> Response:
        vm = vm_or_404(req)
        expand = req.query.get("$expand", "")
        items = [
            rc_view(d, expand) for d in emu.store.list(str(vm["id"]) + "/runCommands", RC_TYPE)
        ]
        return emu.paged(req, items)

    @emu.route("DELETE", rc_route, op="Microsoft.Compute/virtualMachines/runCommands/delete")
    def delete_rc(req: Request) -> Response:
        vm_id = VM.format(**_fmt(req))
        rc_id = f"{vm_id}/runCommands/{req.params['name']}"
        doc = emu.store.get(rc_id)
        if doc is None:
            return Response(204)
        ex = emu.store.meta(rc_id).get("execution")
        if isinstance(ex, Execution) and ex.state in ("Pending", "Running"):
            ex.cancelled = True
            ex.ctx.fail("The run command was deleted while it was running.")
            _end(emu, ex, "Canceled")
        doc["properties"]["provisioningState"] = "Deleting"

        def complete() -> None:
            emu.store.delete(rc_id)

        return emu.begin_lro(
            rc_id,
            duration=emu.latency.get("runcommand.delete"),
            on_complete=complete,
            op=req.op,
            status_code=202,
            location=str(doc.get("location") or "global"),
            publish_event=True,
        )

    # -- managed disks and snapshots ------------------------------------------------------------
    def source_guest(source_id: str) -> tuple[dict[str, Any], GuestState | None]:
        src = emu.store.get(source_id)
        if src is None or str(src.get("type", "")).lower() not in (
            DISK_TYPE.lower(),
            SNAP_TYPE.lower(),
        ):
            raise resource_not_found(source_id)
        if src["properties"].get("provisioningState") not in ("Succeeded", None):
            raise ArmError(
                409,
                "OperationNotAllowed",
                f"The source {source_id} is not ready (provisioningState "
                f"{src['properties'].get('provisioningState')}).",
            )
        return src, guest_of(emu, source_id)

    def put_disk_like(req: Request, snapshot: bool) -> Response:
        rtype = SNAP_TYPE if snapshot else DISK_TYPE
        coll = SNAPSHOTS if snapshot else DISKS
        key = "snapshotName" if snapshot else "diskName"
        rid = f"{coll.format(**_fmt(req))}/{req.params[key]}"
        check_name(req.params[key], kind=rtype, max_length=80, rule=DISK_NAME_RULE)
        body = req.json_object()
        existing = emu.store.get(rid)
        tags = dict(as_object(body.get("tags"), "tags"))
        if existing is not None:
            return update_disk_like(req, existing, body)
        location = body.get("location")
        if not isinstance(location, str) or not location:
            raise ArmError(
                400, "LocationRequired", "The location property is required for this definition."
            )
        props = as_object(body.get("properties"), "properties")
        creation = dict(as_object(props.get("creationData"), "properties.creationData"))
        option = str(creation.get("createOption", "")).lower()
        guest: GuestState | None = None
        os_type = props.get("osType")
        hyper_v = props.get("hyperVGeneration")
        size = as_int(props.get("diskSizeGB"), "properties.diskSizeGB")
        security = as_object(props.get("securityProfile"), "properties.securityProfile") or None
        os_type = as_str(os_type, "properties.osType")
        hyper_v = as_str(hyper_v, "properties.hyperVGeneration")
        sku_name = as_str(as_object(body.get("sku"), "sku").get("name"), "sku.name")
        latency = "snapshot.create" if snapshot else "disk.create"
        if option in ("copy", "copystart"):
            source_id = _norm_id(
                as_str(creation.get("sourceResourceId"), "creationData.sourceResourceId") or ""
            )
            src, g = source_guest(source_id)
            guest = g.copy() if g else None
            sprops = src["properties"]
            os_type = os_type or sprops.get("osType")
            hyper_v = hyper_v or sprops.get("hyperVGeneration")
            size = size or sprops.get("diskSizeGB")
            security = security or sprops.get("securityProfile")
            creation["sourceResourceId"] = str(src["id"])
            creation["sourceUniqueId"] = sprops.get("uniqueId")
            latency = "snapshot.create" if snapshot else "disk.copy"
        elif option == "import":
            # A VHD blob: storage is not modelled, so the content is a blank guest of the
            # declared OS type (nothing the factory builds from).
            uri = as_str(creation.get("sourceUri"), "creationData.sourceUri")
            if not uri:
                raise bad_request(
                    "Required parameter 'creationData.sourceUri' is missing (null).",
                    target="creationData.sourceUri",
                )
            guest = GuestState(os_type=str(os_type or "Windows"), image=uri)
        elif option == "empty" and not snapshot:
            if not size:
                raise bad_request(
                    "Required parameter 'diskSizeGB' is missing (null).", target="diskSizeGB"
                )
        elif option == "fromimage" and not snapshot:
            ref = as_object(
                creation.get("galleryImageReference") or creation.get("imageReference"),
                "creationData.imageReference",
            )
            ref_id = _norm_id(as_str(ref.get("id"), "creationData.imageReference.id") or "")
            gsrc = _resolve_image_id(emu, ref_id, location)
            guest = gsrc.guest
            os_type = os_type or gsrc.os_type
            hyper_v = hyper_v or gsrc.hyper_v
            size = size or gsrc.guest.disk_size_gb
        else:
            allowed = "Copy and Import" if snapshot else "Empty, Copy, Import and FromImage"
            raise bad_request(
                f"The value '{creation.get('createOption')}' of parameter "
                f"'creationData.createOption' is not supported by the emulator "
                f"(supported: {allowed}).",
                target="creationData.createOption",
            )
        doc = _disk_doc(
            emu,
            rid,
            location,
            tags,
            creation=creation,
            os_type=os_type,
            hyper_v=hyper_v,
            size_gb=int(size or 127),
            sku=sku_name or ("Standard_LRS" if snapshot else "Premium_LRS"),
            security=security,
            snapshot=snapshot,
            incremental=bool(props.get("incremental", False)),
        )
        emu.store.put(rid, doc)
        if guest is not None:
            set_guest(emu, rid, guest)

        def complete() -> None:
            d = emu.store.get(rid)
            if d is not None:
                d["properties"]["provisioningState"] = "Succeeded"

        def failed(err: ArmError) -> None:
            d = emu.store.get(rid)
            if d is not None:
                d["properties"]["provisioningState"] = "Failed"

        return emu.begin_lro(
            rid,
            duration=emu.latency.get(latency),
            on_complete=complete,
            on_fail=failed,
            op=req.op,
            status_code=202,
            body=json.loads(json.dumps(doc)),
            publish_event=True,
        )

    def update_disk_like(req: Request, doc: dict[str, Any], body: dict[str, Any]) -> Response:
        """PUT on an existing disk or snapshot, and PATCH: tags replaced whole, properties
        merged; a size can only grow, and only while no running VM holds the disk."""
        snapshot = str(doc["type"]).lower() == SNAP_TYPE.lower()
        check_if_match(req, doc)
        if doc["properties"].get("provisioningState") not in ("Succeeded", None):
            raise ArmError(
                409,
                "OperationNotAllowed",
                f"The operation cannot be performed on '{doc['name']}' while its provisioning "
                f"state is '{doc['properties'].get('provisioningState')}'.",
            )
        props = dict(as_object(body.get("properties"), "properties"))
        creation = props.get("creationData")
        if (
            isinstance(creation, dict)
            and str(creation.get("createOption", "")).lower()
            != str(doc["properties"]["creationData"].get("createOption", "")).lower()
        ):
            raise property_change_not_allowed("creationData.createOption")
        size = as_int(props.get("diskSizeGB"), "properties.diskSizeGB")
        old_size = int(doc["properties"].get("diskSizeGB") or 0)
        if size is not None and size != old_size:
            if size < old_size:
                raise bad_request(
                    f"Disk size reduction is not supported. Current size is {old_size} GB, "
                    f"requested size is {size} GB.",
                    code="BadRequest",
                    target="properties.diskSizeGB",
                )
            owner = str(doc.get("managedBy") or "")
            rt = vm_runtime(emu, owner) if owner else None
            if rt is not None and rt.power not in ("deallocated",):
                raise operation_not_allowed(
                    f"Disk '{doc['name']}' of VM '{parse_resource_id(owner).name}' can be "
                    "resized only while the VM is deallocated."
                )
        merge_patch(doc["properties"], props, read_only=DISK_READ_ONLY)
        if size is not None:
            doc["properties"]["diskSizeBytes"] = _size_bytes(size)
        if "tags" in body:
            doc["tags"] = dict(as_object(body.get("tags"), "tags"))
        sku = as_object(body.get("sku"), "sku")
        if sku.get("name"):
            name = str(sku["name"])
            doc["sku"] = {
                "name": name,
                "tier": "Premium" if name.startswith("Premium") else "Standard",
            }
        doc["properties"]["provisioningState"] = "Updating"
        rid = str(doc["id"])

        def complete() -> None:
            d = emu.store.get(rid)
            if d is not None:
                d["properties"]["provisioningState"] = "Succeeded"

        return emu.begin_lro(
            rid,
            duration=emu.latency.get("disk.access"),
            on_complete=complete,
            op=f"{SNAP_TYPE if snapshot else DISK_TYPE}/write",
            status_code=202,
            body=json.loads(json.dumps(doc)),
            publish_event=True,
        )

    def disk_like_or_404(req: Request, snapshot: bool) -> dict[str, Any]:
        coll = SNAPSHOTS if snapshot else DISKS
        key = "snapshotName" if snapshot else "diskName"
        rid = f"{coll.format(**_fmt(req))}/{req.params[key]}"
        doc = emu.store.get(rid)
        if doc is None:
            raise resource_not_found(rid)
        return doc

    def grant_access(req: Request, snapshot: bool) -> Response:
        """beginGetAccess: a SAS to read (or, for an upload, write) the disk's content."""
        doc = disk_like_or_404(req, snapshot)
        body = req.json_object()
        access = str(body.get("access") or "")
        if access.lower() not in ("read", "write"):
            raise bad_request(
                f"The value '{access}' of parameter 'access' is not valid. Allowed values are "
                "'Read' and 'Write'.",
                target="access",
            )
        seconds = as_int(body.get("durationInSeconds"), "durationInSeconds")
        if not seconds or seconds <= 0:
            raise bad_request(
                "Required parameter 'durationInSeconds' is missing or not positive.",
                target="durationInSeconds",
            )
        owner = str(doc.get("managedBy") or "")
        rt = vm_runtime(emu, owner) if owner else None
        if rt is not None and rt.power != "deallocated":
            raise ArmError(
                409,
                "OperationNotAllowed",
                f"Disk '{doc['name']}' is attached to VM '{owner}'. A SAS can be granted only "
                "when the disk is unattached or the VM is deallocated.",
            )
        rid = str(doc["id"])
        doc["properties"]["diskState"] = "ActiveSAS" if access.lower() == "read" else "ActiveUpload"
        sas = (
            f"https://md-{emu.new_id().replace('-', '')[:12]}.z1.blob.storage.azure.net/"
            f"{emu.new_id().replace('-', '')[:12]}/abcd?sv=2018-03-28&sr=b&"
            f"se={iso(emu.now() + timedelta(seconds=seconds))}&sp={access[0].lower()}&"
            "sig=emulated"
        )
        emu.store.meta(rid)["sas_until"] = emu.now() + timedelta(seconds=seconds)
        return emu.begin_lro(
            rid,
            duration=emu.latency.get("disk.access"),
            on_complete=lambda: {"accessSAS": sas},
            op=req.op,
            status_code=202,
            location_result=True,
            publish_event=True,
        )

    def revoke_access(req: Request, snapshot: bool) -> Response:
        """endGetAccess: the SAS stops working; the disk is back to its attachment state."""
        doc = disk_like_or_404(req, snapshot)
        rid = str(doc["id"])
        emu.store.meta(rid).pop("sas_until", None)

        def complete() -> None:
            d = emu.store.get(rid)
            if d is not None:
                d["properties"]["diskState"] = "Attached" if d.get("managedBy") else "Unattached"

        return emu.begin_lro(
            rid,
            duration=emu.latency.get("disk.access"),
            on_complete=complete,
            op=req.op,
            status_code=202,
            publish_event=True,
        )

    def get_disk_like(req: Request, snapshot: bool) -> Response:
        coll = SNAPSHOTS if snapshot else DISKS
        key = "snapshotName" if snapshot else "diskName"
        rid = f"{coll.format(**_fmt(req))}/{req.params[key]}"
        doc = emu.store.get(rid)
        if doc is None:
            raise resource_not_found(rid)
        return Response(200, doc)

    def delete_disk_like(req: Request, snapshot: bool) -> Response:
        coll = SNAPSHOTS if snapshot else DISKS
        key = "snapshotName" if snapshot else "diskName"
        rid = f"{coll.format(**_fmt(req))}/{req.params[key]}"
        doc = emu.store.get(rid)
        if doc is None:
            return Response(204)
        if doc.get("managedBy"):
            raise ArmError(
                409,
                "OperationNotAllowed",
                f"Disk {doc['name']} is attached to VM {doc['managedBy']}.",
            )
        doc["properties"]["provisioningState"] = "Deleting"

        def complete() -> None:
            emu.store.delete(rid)

        return emu.begin_lro(
            rid,
            duration=emu.latency.get("snapshot.delete" if snapshot else "disk.delete"),
            on_complete=complete,
            op=req.op,
            status_code=202,
            publish_event=True,
        )

    def bind(snap: bool) -> None:
        t = SNAP_TYPE if snap else DISK_TYPE
        coll = SNAPSHOTS if snap else DISKS
        item = coll + ("/{snapshotName}" if snap else "/{diskName}")
        emu.route("PUT", item, op=f"{t}/write")(lambda req: put_disk_like(req, snap))
        emu.route("GET", item, op=f"{t}/read")(lambda req: get_disk_like(req, snap))
        emu.route("DELETE", item, op=f"{t}/delete")(lambda req: delete_disk_like(req, snap))
        emu.route("PATCH", item, op=f"{t}/write")(
            lambda req: update_disk_like(req, disk_like_or_404(req, snap), req.json_object())
        )
        emu.route("POST", item + "/beginGetAccess", op=f"{t}/beginGetAccess/action")(
            lambda req: grant_access(req, snap)
        )
        emu.route("POST", item + "/endGetAccess", op=f"{t}/endGetAccess/action")(
            lambda req: revoke_access(req, snap)
        )
        emu.route("GET", coll, op=f"{t}/read")(
            lambda req: emu.paged(req, emu.store.list(RG.format(**_fmt(req)), t))
        )
        emu.route("GET", "/subscriptions/{sub}/providers/" + t, op=f"{t}/read")(
            lambda req: emu.paged(req, emu.store.list(f"/subscriptions/{req.params['sub']}", t))
        )

    bind(False)
    bind(True)

    # -- managed images (Microsoft.Compute/images: the older way to capture a VM) ---------------
    image_route = IMAGES + "/{image}"

    def image_or_404(req: Request) -> dict[str, Any]:
        rid = image_route.format(**_fmt(req))
        doc = emu.store.get(rid)
        if doc is None or str(doc.get("type", "")).lower() != MANAGED_IMAGE_TYPE.lower():
            raise resource_not_found(rid)
        return doc

    @emu.route("PUT", image_route, op="Microsoft.Compute/images/write")
    def put_image(req: Request) -> Response:
        rid = image_route.format(**_fmt(req))
        check_name(req.params["image"], kind=MANAGED_IMAGE_TYPE, max_length=80, rule=DISK_NAME_RULE)
        body = req.json_object()
        existing = emu.store.get(rid)
        if existing is not None:
            if "tags" in body:
                existing["tags"] = dict(as_object(body.get("tags"), "tags"))
            return Response(200, existing)
        location = as_str(body.get("location"), "location")
        if not location:
            raise ArmError(
                400, "LocationRequired", "The location property is required for this definition."
            )
        props = as_object(body.get("properties"), "properties")
        doc, guest = _managed_image(emu, rid, location, props)
        doc["tags"] = dict(as_object(body.get("tags"), "tags"))
        emu.store.put(rid, doc)
        set_guest(emu, rid, guest)

        def complete() -> None:
            d = emu.store.get(rid)
            if d is not None:
                d["properties"]["provisioningState"] = "Succeeded"

        return emu.begin_lro(
            rid,
            duration=emu.latency.get("image.create"),
            on_complete=complete,
            op=req.op,
            status_code=201,
            body=json.loads(json.dumps(doc)),
            publish_event=True,
        )

    @emu.route("PATCH", image_route, op="Microsoft.Compute/images/write")
    def patch_image(req: Request) -> Response:
        doc = image_or_404(req)
        body = req.json_object()
        if "tags" in body:
            doc["tags"] = dict(as_object(body.get("tags"), "tags"))
        props = as_object(body.get("properties"), "properties")
        if "hyperVGeneration" in props and props["hyperVGeneration"] != doc["properties"].get(
            "hyperVGeneration"
        ):
            raise property_change_not_allowed("hyperVGeneration")
        return Response(200, doc)

    @emu.route("GET", image_route, op="Microsoft.Compute/images/read")
    def get_image(req: Request) -> Response:
        return Response(200, image_or_404(req))

    @emu.route("GET", IMAGES, op="Microsoft.Compute/images/read")
    def list_images(req: Request) -> Response:
        return emu.paged(req, emu.store.list(RG.format(**_fmt(req)), MANAGED_IMAGE_TYPE))

    @emu.route(
        "GET",
        "/subscriptions/{sub}/providers/Microsoft.Compute/images",
        op="Microsoft.Compute/images/read",
    )
    def list_all_images(req: Request) -> Response:
        return emu.paged(
            req, emu.store.list(f"/subscriptions/{req.params['sub']}", MANAGED_IMAGE_TYPE)
        )

    @emu.route("DELETE", image_route, op="Microsoft.Compute/images/delete")
    def delete_image(req: Request) -> Response:
        rid = image_route.format(**_fmt(req))
        if emu.store.get(rid) is None:
            return Response(204)

        def complete() -> None:
            emu.store.delete(rid)

        return emu.begin_lro(
            rid,
            duration=emu.latency.get("disk.delete"),
            on_complete=complete,
            op=req.op,
            status_code=202,
            publish_event=True,
        )

    # -- network interfaces (minimal) -------------------------------------------------------------
    nic_route = NICS + "/{nic}"

    @emu.route("PUT", nic_route, op="Microsoft.Network/networkInterfaces/write")
    def put_nic(req: Request) -> Response:
        body = req.json_object()
        nic_id = nic_route.format(**_fmt(req))
        existing = emu.store.get(nic_id)
        if existing is not None:
            if "tags" in body:
                existing["tags"] = dict(as_object(body.get("tags"), "tags"))
            emu.events.resource_write(nic_id)
            return Response(200, existing)
        location = body.get("location")
        if not isinstance(location, str) or not location:
            raise ArmError(
                400, "LocationRequired", "The location property is required for this definition."
            )
        props = as_object(body.get("properties"), "properties")
        ipcfgs = as_list(props.get("ipConfigurations"), "properties.ipConfigurations")
        if not ipcfgs:
            raise bad_request(
                "Network interface must have at least one IP configuration.",
                code="NetworkInterfaceMustHaveAtLeastOneIpConfiguration",
            )
        doc = _nic_doc(
            emu,
            nic_id,
            location,
            dict(as_object(body.get("tags"), "tags")),
            ipcfgs,
            accel=bool(props.get("enableAcceleratedNetworking", False)),
        )
        emu.store.put(nic_id, doc)
        emu.events.resource_write(nic_id)
        return Response(201, doc, {"Azure-AsyncOperation": f"{emu.base_url}{nic_id}"})

    @emu.route("PATCH", nic_route, op="Microsoft.Network/networkInterfaces/write")
    def patch_nic(req: Request) -> Response:
        """Network's PATCH is UpdateTags: the tags are replaced whole (sync 200)."""
        nic_id = nic_route.format(**_fmt(req))
        doc = emu.store.get(nic_id)
        if doc is None:
            raise resource_not_found(nic_id)
        body = req.json_object()
        doc["tags"] = dict(as_object(body.get("tags"), "tags"))
        emu.events.resource_write(nic_id)
        return Response(200, doc)

    @emu.route("GET", nic_route, op="Microsoft.Network/networkInterfaces/read")
    def get_nic(req: Request) -> Response:
        nic_id = nic_route.format(**_fmt(req))
        doc = emu.store.get(nic_id)
        if doc is None:
            raise resource_not_found(nic_id)
        return Response(200, doc)

    @emu.route("GET", NICS, op="Microsoft.Network/networkInterfaces/read")
    def list_nics(req: Request) -> Response:
        return emu.paged(req, emu.store.list(RG.format(**_fmt(req)), NIC_TYPE))

    @emu.route("DELETE", nic_route, op="Microsoft.Network/networkInterfaces/delete")
    def delete_nic(req: Request) -> Response:
        nic_id = nic_route.format(**_fmt(req))
        doc = emu.store.get(nic_id)
        if doc is None:
            return Response(204)
        vm_ref = (doc["properties"].get("virtualMachine") or {}).get("id")
        if vm_ref:
            raise ArmError(
                400,
                "NicInUse",
                f"Network Interface {doc['id']} is used by existing resource {vm_ref}. In "
                "order to delete the network interface, it must be dissociated from the "
                "resource. To learn more, see aka.ms/deletenic.",
            )

        def complete() -> None:
            emu.store.delete(nic_id)

        return emu.begin_lro(
            nic_id,
            duration=emu.latency.get("nic.delete"),
            on_complete=complete,
            op=req.op,
            status_code=202,
            publish_event=True,
        )

    emu.add_report_section("compute", lambda: _compute_report(emu))


def _resolve_image_id(emu: Emulator, ref_id: str, location: str) -> _Source:
    """A disk's FromImage reference: a platform image id or a gallery image (version) id."""
    parts = [p for p in ref_id.split("/") if p]
    low = [p.lower() for p in parts]
    if "publishers" in low and "versions" in low and "artifacttypes" in low:
        i = low.index("publishers")
        pub, offer, sku, version = parts[i + 1], parts[i + 5], parts[i + 7], parts[i + 9]
        iv = find_image(emu, location, pub, offer, sku, version)
        if iv is None:
            raise ArmError(404, "NotFound", "Artifact: VMImage was not found.")
        return _Source(iv.new_guest(), iv.os_type, iv.hyper_v_generation, None, {}, None, True)
    return _resolve_gallery(emu, ref_id, location)


def _managed_image(
    emu: Emulator, rid: str, location: str, props: dict[str, Any]
) -> tuple[dict[str, Any], GuestState]:
    """A managed image document and its captured guest, from ``sourceVirtualMachine`` (a
    generalized, stopped VM) or ``storageProfile.osDisk`` (a managed disk or snapshot)."""
    source_vm = as_str(
        as_object(props.get("sourceVirtualMachine"), "properties.sourceVirtualMachine").get("id"),
        "properties.sourceVirtualMachine.id",
    )
    storage_in = as_object(props.get("storageProfile"), "properties.storageProfile")
    os_in = as_object(storage_in.get("osDisk"), "properties.storageProfile.osDisk")
    hyper_v = as_str(props.get("hyperVGeneration"), "properties.hyperVGeneration")
    if source_vm:
        vm_id = _norm_id(source_vm)
        vm = emu.store.get(vm_id)
        rt = vm_runtime(emu, vm_id)
        guest = guest_of(emu, vm_id)
        if vm is None or rt is None or guest is None:
            raise resource_not_found(vm_id)
        if not rt.generalized:
            raise ArmError(
                409,
                "OperationNotAllowed",
                f"The operation 'Create Image' cannot be performed on VM '{vm['name']}' because "
                "the VM has not been generalized. Generalize the VM first.",
            )
        vm_disk = vm["properties"]["storageProfile"]["osDisk"]
        os_disk: dict[str, Any] = {
            "osType": guest.os_type,
            "osState": "Generalized",
            "managedDisk": {"id": rt.os_disk_id},
            "caching": vm_disk.get("caching", "ReadWrite"),
            "storageAccountType": (vm_disk.get("managedDisk") or {}).get(
                "storageAccountType", "Premium_LRS"
            ),
            "diskSizeGB": vm_disk.get("diskSizeGB", guest.disk_size_gb),
        }
        hyper_v = hyper_v or rt.hyper_v_generation
        source_block: dict[str, Any] = {"sourceVirtualMachine": {"id": str(vm["id"])}}
    else:
        ref_key = next((k for k in ("managedDisk", "snapshot") if os_in.get(k)), None)
        if ref_key is None:
            raise bad_request(
                "The image needs a source: properties.sourceVirtualMachine.id or "
                "properties.storageProfile.osDisk.managedDisk.id / snapshot.id (VHD blobs are "
                "not modelled).",
                target="properties.storageProfile.osDisk",
            )
        src_id = _norm_id(
            as_str(as_object(os_in[ref_key], ref_key).get("id"), f"osDisk.{ref_key}.id") or ""
        )
        src = emu.store.get(src_id)
        if src is None:
            raise resource_not_found(src_id)
        g = guest_of(emu, src_id)
        guest = g if g is not None else GuestState()
        os_disk = {
            "osType": os_in.get("osType") or src["properties"].get("osType") or guest.os_type,
            "osState": os_in.get("osState", "Generalized"),
            ref_key: {"id": str(src["id"])},
            "caching": os_in.get("caching", "ReadWrite"),
            "storageAccountType": os_in.get("storageAccountType", "Standard_LRS"),
            "diskSizeGB": src["properties"].get("diskSizeGB", guest.disk_size_gb),
        }
        hyper_v = hyper_v or str(src["properties"].get("hyperVGeneration") or "V1")
        source_block = {}
    doc = {
        "name": parse_resource_id(rid).name,
        "id": rid,
        "type": MANAGED_IMAGE_TYPE,
        "location": location,
        "properties": {
            **source_block,
            "storageProfile": {
                "osDisk": os_disk,
                "dataDisks": [],
                "zoneResilient": bool(storage_in.get("zoneResilient", False)),
            },
            "provisioningState": "Creating",
            "hyperVGeneration": hyper_v,
        },
    }
    return doc, guest.copy()


def _resolve_managed_image(emu: Emulator, doc: dict[str, Any]) -> _Source:
    props = doc["properties"]
    os_disk = props["storageProfile"]["osDisk"]
    stored = guest_of(emu, str(doc["id"]))
    guest = stored.copy() if stored is not None else GuestState()
    generalized = str(os_disk.get("osState", "Generalized")) == "Generalized"
    return _Source(
        guest=guest,
        os_type=str(os_disk.get("osType") or guest.os_type),
        hyper_v=str(props.get("hyperVGeneration", "V1")),
        image_reference={"id": str(doc["id"])},
        creation_data={"createOption": "FromImage", "imageReference": {"id": str(doc["id"])}},
        attach_disk_id=None,
        run_oobe=generalized,
    )


def _delete_vm_now(emu: Emulator, vm_id: str) -> None:
    doc = emu.store.get(vm_id)
    if doc is None:
        return
    props = doc["properties"]
    for ref in props.get("networkProfile", {}).get("networkInterfaces", []):
        nic_id = str(ref.get("id", ""))
        nic = emu.store.get(nic_id)
        if nic is None:
            continue
        option = str((ref.get("properties") or {}).get("deleteOption", "Detach")).lower()
        if option == "delete":
            emu.store.delete(nic_id)
        else:
            nic["properties"].pop("virtualMachine", None)
    os_disk = props.get("storageProfile", {}).get("osDisk", {})
    disk_id = str((os_disk.get("managedDisk") or {}).get("id", ""))
    disk = emu.store.get(disk_id) if disk_id else None
    if disk is not None:
        if str(os_disk.get("deleteOption", "Detach")).lower() == "delete":
            emu.store.delete(disk_id)
        else:
            disk.pop("managedBy", None)
            disk["properties"]["diskState"] = "Unattached"
            disk["properties"]["LastOwnershipUpdateTime"] = emu.now_iso()
    for data in props.get("storageProfile", {}).get("dataDisks", []):
        data_id = str((data.get("managedDisk") or {}).get("id", ""))
        data_disk = emu.store.get(data_id) if data_id else None
        if data_disk is None:
            continue
        if str(data.get("deleteOption", "Detach")).lower() == "delete":
            emu.store.delete(data_id)
        else:
            data_disk.pop("managedBy", None)
            data_disk["properties"]["diskState"] = "Unattached"
    for child in emu.store.list(vm_id + "/runCommands"):
        emu.store.delete(str(child["id"]))
    emu.store.delete(vm_id)
    emu.emit("vm.power", str(doc["id"]), "deleted")


def _compute_report(emu: Emulator) -> dict[str, Any]:
    vms = emu.store.list("/subscriptions", VM_TYPE)
    problems: list[str] = []
    for vm in vms:
        rt = vm_runtime(emu, str(vm["id"]))
        if rt is None:
            problems.append(f"{vm['id']}: no runtime state")
            continue
        if not emu.store.exists(rt.os_disk_id):
            problems.append(f"{vm['id']}: OS disk {rt.os_disk_id} is missing")
    for disk in emu.store.list("/subscriptions", DISK_TYPE):
        owner = disk.get("managedBy")
        if owner and not emu.store.exists(str(owner)):
            problems.append(f"{disk['id']}: managedBy {owner} does not exist")
    for nic in emu.store.list("/subscriptions", NIC_TYPE):
        ref = (nic["properties"].get("virtualMachine") or {}).get("id")
        if ref and not emu.store.exists(str(ref)):
            problems.append(f"{nic['id']}: attached to missing VM {ref}")
    power: dict[str, int] = {}
    for vm in vms:
        rt = vm_runtime(emu, str(vm["id"]))
        if rt is not None:
            power[rt.power] = power.get(rt.power, 0) + 1
    return {"virtualMachines": len(vms), "powerStates": power, "consistencyProblems": problems}
