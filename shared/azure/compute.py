"""Compute gateway: VMs, managed run commands, disks, snapshots, marketplace images, NICs.

Typed functions over ``ComputeManagementClient`` (from :mod:`shared.azure.clients`). Rules:
every ``begin_*`` is called with ``polling=False`` so the SDK sends the initial request and
returns without polling (the poller's ``result()`` is never called: a later ``get_*`` checks the
state); reads return frozen dataclasses from :mod:`shared.azure.models`; a 404 where absence is
an answer becomes ``exists=False``; every other Azure failure is mapped by
:mod:`shared.azure.errors`. Network interfaces are reached through the compute client's own
pipeline (:func:`arm_nic_request`), so no ``azure-mgmt-network`` dependency is needed.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any, Final

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.pipeline import PipelineResponse
from azure.core.rest import HttpRequest, HttpResponse
from azure.mgmt.compute import ComputeManagementClient, models
from azure.mgmt.core.exceptions import ARMErrorFormat

from shared.azure.clients import compute_client
from shared.azure.errors import absent_as_none, azure_call
from shared.azure.models import (
    AttachSource,
    GallerySource,
    MarketplaceSource,
    ResourceState,
    RunCommandState,
    TaggedResource,
    VmSpec,
    VmState,
    resource_id,
)
from shared.domain.naming import build_resource_names
from shared.domain.resources import DISK_TYPE as DISK_TYPE
from shared.domain.resources import NIC_TYPE as NIC_TYPE
from shared.domain.resources import SNAPSHOT_TYPE as SNAPSHOT_TYPE
from shared.domain.resources import TAG_BUILD_ID, TAG_IMAGE, ResourceId, tag_value
from shared.domain.resources import VM_TYPE as VM_TYPE
from shared.errors import InputError, PermanentError
from shared.settings import Settings

NETWORK_API_VERSION: Final = "2024-05-01"
# The API version the VM uses to create its NIC from networkInterfaceConfigurations.
VM_NETWORK_API_VERSION: Final = "2022-11-01"

RUN_STATES: Final = frozenset({"Pending", "Running", "Succeeded", "Failed", "TimedOut", "Canceled"})


def text_of(value: object) -> str | None:
    """An SDK string-or-enum value as plain text."""
    if value is None:
        return None
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def client_for(settings: Settings, subscription_id: str | None = None) -> ComputeManagementClient:
    """The cached compute client for these settings (and another subscription, if given)."""
    if subscription_id and subscription_id.lower() == settings.subscription_id.lower():
        subscription_id = None
    return compute_client(settings, subscription_id)


# ---- virtual machines -------------------------------------------------------------------


def vm_id(settings: Settings, resource_group: str, name: str) -> str:
    return resource_id(settings.subscription_id, resource_group, VM_TYPE, name)


def _vm_body(spec: VmSpec) -> dict[str, Any]:
    os_disk: dict[str, Any] = {
        "name": spec.os_disk_name,
        "osType": spec.os_type,
        "caching": "ReadWrite",
        "deleteOption": "Delete",
        "managedDisk": {"storageAccountType": spec.os_disk_storage_type},
    }
    storage: dict[str, Any] = {"osDisk": os_disk}
    properties: dict[str, Any] = {
        "hardwareProfile": {"vmSize": spec.size},
        "storageProfile": storage,
        # Standard security, on purpose: a Trusted Launch build VM turns BitLocker on, and
        # sysprep fails with BitLocker on (seed 001). The gallery *definition* is
        # "TrustedLaunchSupported", so hosts built from the image can still use Trusted Launch.
        "securityProfile": {"securityType": "Standard"},
        "networkProfile": {
            "networkApiVersion": VM_NETWORK_API_VERSION,
            "networkInterfaceConfigurations": [
                {
                    "name": spec.nic_name,
                    "tags": dict(spec.nic_tags or spec.tags),
                    "properties": {
                        "primary": True,
                        "deleteOption": "Delete",
                        "ipConfigurations": [
                            {
                                "name": "ipconfig1",
                                "properties": {"primary": True, "subnet": {"id": spec.subnet_id}},
                            }
                        ],
                    },
                }
            ],
        },
        "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
    }
    source = spec.source
    if isinstance(source, AttachSource):
        os_disk["createOption"] = "Attach"
        os_disk["managedDisk"] = {"id": source.os_disk_id}
        os_disk.pop("name")  # an attached disk keeps its own name
        # Kept when the VM is deleted: a VM whose provisioning failed is deleted and created
        # again on the same disk; the disk is tagged and the clean-up deletes it.
        os_disk["deleteOption"] = "Detach"
    else:
        os_disk["createOption"] = "FromImage"
        if isinstance(source, MarketplaceSource):
            storage["imageReference"] = {
                "publisher": source.publisher,
                "offer": source.offer,
                "sku": source.sku,
                "version": source.version,
            }
        elif isinstance(source, GallerySource):
            storage["imageReference"] = {"id": source.image_version_id}
        properties["osProfile"] = {
            "computerName": spec.computer_name,
            "adminUsername": spec.admin_username,
            "adminPassword": spec.admin_password,
            "windowsConfiguration": {"provisionVMAgent": True, "enableAutomaticUpdates": False},
        }
    body: dict[str, Any] = {
        "location": spec.location,
        "tags": dict(spec.tags),
        "properties": properties,
    }
    if spec.identity_id:
        # The build VM's own identity: it publishes "sysprep finished" with a token from IMDS
        # (role EventGrid Data Sender on the app's topic), never with a key.
        body["identity"] = {
            "type": "UserAssigned",
            "userAssignedIdentities": {spec.identity_id: {}},
        }
    return body


def begin_create_vm(settings: Settings, spec: VmSpec) -> str:
    """Send the VM PUT (the create starts; nothing waits for it). Returns the VM id."""
    if not isinstance(spec.source, AttachSource) and not spec.admin_password:
        raise PermanentError(f"create VM {spec.name}: an admin password is required")
    client = client_for(settings)
    with azure_call(f"create VM {spec.name}"):
        client.virtual_machines.begin_create_or_update(
            spec.resource_group, spec.name, models.VirtualMachine(_vm_body(spec)), polling=False
        )
    return vm_id(settings, spec.resource_group, spec.name)


def _vm_error(statuses: Iterable[models.InstanceViewStatus]) -> str | None:
    errors = [
        f"{s.code}: {s.message}" if s.message else str(s.code)
        for s in statuses
        if (text_of(s.level) or "").lower() == "error"
    ]
    return "; ".join(errors) or None


def get_vm(settings: Settings, vm: str) -> VmState:
    """The VM's provisioning and power state (``exists=False`` when there is none)."""
    arm = ResourceId.parse(vm, "vm_id", VM_TYPE)
    client = client_for(settings, arm.subscription_id)
    found = absent_as_none(
        f"get VM {arm.name}",
        lambda: client.virtual_machines.get(arm.resource_group, arm.name, expand="instanceView"),
    )
    if found is None:
        return VmState(id=str(arm), exists=False)
    props = found.properties
    if props is None:
        return VmState(
            id=found.id or str(arm),
            exists=True,
            tags=dict(found.tags or {}),
            location=found.location,
        )
    statuses = list((props.instance_view.statuses if props.instance_view else None) or [])
    power = next(
        (s.code for s in statuses if s.code and s.code.lower().startswith("powerstate/")), None
    )
    security = text_of(props.security_profile.security_type) if props.security_profile else None
    os_disk = props.storage_profile.os_disk if props.storage_profile else None
    disk_id = os_disk.managed_disk.id if os_disk is not None and os_disk.managed_disk else None
    return VmState(
        id=found.id or str(arm),
        exists=True,
        provisioning_state=props.provisioning_state,
        power_state=power,
        security_type=security or "Standard",
        os_disk_id=disk_id,
        error=_vm_error(statuses),
        tags=dict(found.tags or {}),
        location=found.location,
        generalized=any((s.code or "").lower() == "osstate/generalized" for s in statuses),
    )


def begin_deallocate_vm(settings: Settings, vm: str) -> None:
    arm = ResourceId.parse(vm, "vm_id", VM_TYPE)
    client = client_for(settings, arm.subscription_id)
    with azure_call(f"deallocate VM {arm.name}"):
        client.virtual_machines.begin_deallocate(arm.resource_group, arm.name, polling=False)


def generalize_vm(settings: Settings, vm: str) -> None:
    """Mark a deallocated, sysprepped VM generalized (a synchronous POST)."""
    arm = ResourceId.parse(vm, "vm_id", VM_TYPE)
    client = client_for(settings, arm.subscription_id)
    with azure_call(f"generalize VM {arm.name}"):
        client.virtual_machines.generalize(arm.resource_group, arm.name)


# ---- run commands -----------------------------------------------------------------------


def run_command_id(vm: str, name: str) -> str:
    return f"{vm.rstrip('/')}/runCommands/{name}"


def _run_state(execution: str | None, provisioning: str | None) -> str:
    if execution:
        for known in RUN_STATES:
            if known.lower() == execution.lower():
                return known
    if (provisioning or "").lower() == "failed":
        return "Failed"
    if (provisioning or "").lower() == "canceled":
        return "Canceled"
    return "Pending"


def get_run_command(settings: Settings, vm: str, name: str) -> RunCommandState:
    """A managed run command with its instance view (``exists=False`` when there is none)."""
    arm = ResourceId.parse(vm, "vm_id", VM_TYPE)
    client = client_for(settings, arm.subscription_id)
    found = absent_as_none(
        f"get run command {name} on {arm.name}",
        lambda: client.virtual_machine_run_commands.get_by_virtual_machine(
            arm.resource_group, arm.name, name, expand="instanceView"
        ),
    )
    if found is None:
        return RunCommandState(id=run_command_id(str(arm), name), exists=False, state="Pending")
    props = found.properties
    view = props.instance_view if props else None
    script = (props.source.script if props and props.source else None) or ""
    provisioning = props.provisioning_state if props else None
    return RunCommandState(
        id=found.id or run_command_id(str(arm), name),
        exists=True,
        state=_run_state(text_of(view.execution_state) if view else None, provisioning),
        provisioning_state=provisioning,
        exit_code=view.exit_code if view else None,
        output=(view.output if view else None) or "",
        error=(view.error if view else None) or "",
        start_time=view.start_time if view else None,
        end_time=view.end_time if view else None,
        script=tuple(script.split("\n")) if script else (),
    )


def begin_run_command(
    settings: Settings,
    vm: str,
    name: str,
    script: list[str] | tuple[str, ...],
    timeout_seconds: int,
    location: str,
) -> str:
    """PUT a managed run command (it starts running; nothing waits). Returns its id."""
    arm = ResourceId.parse(vm, "vm_id", VM_TYPE)
    client = client_for(settings, arm.subscription_id)
    body = {
        "location": location,
        "properties": {
            "source": {"script": "\n".join(script)},
            "asyncExecution": False,
            "treatFailureAsDeploymentFailure": False,
            "timeoutInSeconds": timeout_seconds,
        },
    }
    with azure_call(f"start run command {name} on {arm.name}"):
        client.virtual_machine_run_commands.begin_create_or_update(
            arm.resource_group, arm.name, name, models.VirtualMachineRunCommand(body), polling=False
        )
    return run_command_id(str(arm), name)


# ---- disks and snapshots ----------------------------------------------------------------


def disk_id(settings: Settings, resource_group: str, name: str) -> str:
    return resource_id(settings.subscription_id, resource_group, DISK_TYPE, name)


def snapshot_id(settings: Settings, resource_group: str, name: str) -> str:
    return resource_id(settings.subscription_id, resource_group, SNAPSHOT_TYPE, name)


def begin_create_snapshot(
    settings: Settings,
    resource_group: str,
    name: str,
    location: str,
    source_disk_id: str,
    tags: Mapping[str, str],
    *,
    hook: ResponseHook | None = None,
) -> str:
    """Start a full snapshot of a managed disk (or a copy of a snapshot). Returns its id.

    ``hook`` sees the raw answer (e.g. an :class:`OperationMonitor`)."""
    source = ResourceId.parse(source_disk_id, "source_disk_id")
    if not (source.is_type(DISK_TYPE) or source.is_type(SNAPSHOT_TYPE)):
        raise InputError.single(
            "source_disk_id", f"expected a managed disk or snapshot id, got a {source.type} id"
        )
    body = {
        "location": location,
        "tags": dict(tags),
        "sku": {"name": "Standard_LRS"},
        "properties": {
            "creationData": {"createOption": "Copy", "sourceResourceId": source_disk_id},
            "incremental": False,
        },
    }
    client = client_for(settings)
    with azure_call(f"create snapshot {name}"):
        client.snapshots.begin_create_or_update(
            resource_group, name, models.Snapshot(body), polling=False, raw_response_hook=hook
        )
    return snapshot_id(settings, resource_group, name)


def begin_create_disk_from_snapshot(
    settings: Settings,
    resource_group: str,
    name: str,
    location: str,
    source_snapshot_id: str,
    tags: Mapping[str, str],
    storage_account_type: str = "StandardSSD_LRS",
    *,
    hook: ResponseHook | None = None,
) -> str:
    """Start a managed disk copied from a snapshot (OS type and generation come with it)."""
    ResourceId.parse(source_snapshot_id, "snapshot_id", SNAPSHOT_TYPE)
    body = {
        "location": location,
        "tags": dict(tags),
        "sku": {"name": storage_account_type},
        "properties": {
            "creationData": {"createOption": "Copy", "sourceResourceId": source_snapshot_id},
        },
    }
    client = client_for(settings)
    with azure_call(f"create disk {name}"):
        client.disks.begin_create_or_update(
            resource_group, name, models.Disk(body), polling=False, raw_response_hook=hook
        )
    return disk_id(settings, resource_group, name)


# ---- network interfaces (generic ARM GET/DELETE, this one type only) --------------------


def arm_nic_request(
    settings: Settings, method: str, path: str, subscription_id: str | None = None
) -> HttpResponse:
    """GET or DELETE a ``Microsoft.Network/networkInterfaces`` URL through the compute pipeline.

    Raises the SDK's ``ResourceNotFoundError`` for 404 (callers decide what absence means) and
    ``HttpResponseError`` for other failures, like the generated operations do.
    """
    if method not in ("GET", "DELETE"):
        raise ValueError(f"arm_nic_request supports GET and DELETE, not {method}")
    if "/providers/microsoft.network/networkinterfaces" not in path.lower():
        raise ValueError("arm_nic_request only reaches Microsoft.Network/networkInterfaces")
    separator = "&" if "?" in path else "?"
    url = path if "api-version=" in path else f"{path}{separator}api-version={NETWORK_API_VERSION}"
    client = client_for(settings, subscription_id)
    response = client.send_request(HttpRequest(method, url, headers={"Accept": "application/json"}))
    response.read()
    if response.status_code == 404:
        raise ResourceNotFoundError(response=response, error_format=ARMErrorFormat)
    if response.status_code >= 400:
        raise HttpResponseError(response=response, error_format=ARMErrorFormat)
    return response


def _nic_state(settings: Settings, arm: ResourceId) -> ResourceState:
    response = absent_as_none(
        f"get NIC {arm.name}",
        lambda: arm_nic_request(settings, "GET", str(arm), arm.subscription_id),
    )
    if response is None:
        return ResourceState(id=str(arm), exists=False)
    body = json_body(response)
    props = body.get("properties") or {}
    return ResourceState(
        id=str(arm),
        exists=True,
        provisioning_state=props.get("provisioningState"),
        tags=dict(body.get("tags") or {}),
    )


def list_nics(settings: Settings, resource_group: str) -> list[TaggedResource]:
    path: str | None = (
        f"/subscriptions/{settings.subscription_id}/resourceGroups/{resource_group}"
        f"/providers/{NIC_TYPE}"
    )
    found: list[TaggedResource] = []
    pages = 0
    while path and pages < 100:
        pages += 1
        with azure_call(f"list NICs in {resource_group}"):
            response = arm_nic_request(settings, "GET", path)
        body = json_body(response)
        for item in body.get("value") or []:
            found.append(
                TaggedResource(
                    id=str(item.get("id")),
                    type=str(item.get("type") or NIC_TYPE),
                    tags=dict(item.get("tags") or {}),
                )
            )
        path = body.get("nextLink")
    return found


# ---- any build resource -----------------------------------------------------------------


def get_resource_state(settings: Settings, resource: str) -> ResourceState:
    """Whether a VM, disk, snapshot or NIC exists, and its provisioning state."""
    arm = ResourceId.parse(resource, "resource_id")
    client = client_for(settings, arm.subscription_id)
    if arm.is_type(NIC_TYPE):
        return _nic_state(settings, arm)
    if arm.is_type(VM_TYPE):
        vm = get_vm(settings, resource)
        return ResourceState(
            id=vm.id,
            exists=vm.exists,
            provisioning_state=vm.provisioning_state,
            error=vm.error,
            tags=vm.tags,
        )
    what = f"get {arm.type} {arm.name}"
    found: models.Disk | models.Snapshot | None
    if arm.is_type(DISK_TYPE):
        found = absent_as_none(what, lambda: client.disks.get(arm.resource_group, arm.name))
    elif arm.is_type(SNAPSHOT_TYPE):
        found = absent_as_none(what, lambda: client.snapshots.get(arm.resource_group, arm.name))
    else:
        raise InputError.single(
            "resource_id", f"{arm.type} is not a build resource type this app checks"
        )
    if found is None:
        return ResourceState(id=str(arm), exists=False)
    state = found.properties.provisioning_state if found.properties else None
    return ResourceState(
        id=str(arm), exists=True, provisioning_state=state, tags=dict(found.tags or {})
    )


DELETABLE_TYPES: Final = (VM_TYPE, DISK_TYPE, SNAPSHOT_TYPE, NIC_TYPE)


ResponseHook = Callable[[PipelineResponse[Any, Any]], None]


def send_delete(what: str, start: Callable[[ResponseHook], int | None]) -> bool:
    """Send one DELETE; False when the resource was already absent.

    ``start(hook)`` sends it, passing ``hook`` as the SDK's ``raw_response_hook`` (or returning
    the status itself). Absent means a 404, or ARM's 204 No Content to a DELETE of something
    that is not there.
    """
    statuses: list[int] = []

    def record(response: PipelineResponse[Any, Any]) -> None:
        statuses.append(response.http_response.status_code)

    def send() -> bool:
        status = start(record)
        if status is not None:
            statuses.append(status)
        return True

    if absent_as_none(what, send) is None:
        return False
    return not statuses or statuses[-1] != 204


def begin_delete_resource(settings: Settings, resource: str) -> bool:
    """Start deleting a build VM, disk, snapshot or NIC; False when it was already absent."""
    arm = ResourceId.parse(resource, "resource_id")
    if not any(arm.is_type(t) for t in DELETABLE_TYPES):
        raise InputError.single(
            "resource_id",
            f"{arm.type} cannot be deleted here (only {', '.join(DELETABLE_TYPES)})",
        )
    client = client_for(settings, arm.subscription_id)
    group, name = arm.resource_group, arm.name

    def start(hook: ResponseHook) -> int | None:
        if arm.is_type(NIC_TYPE):
            return arm_nic_request(settings, "DELETE", str(arm), arm.subscription_id).status_code
        if arm.is_type(VM_TYPE):
            client.virtual_machines.begin_delete(group, name, polling=False, raw_response_hook=hook)
        elif arm.is_type(DISK_TYPE):
            client.disks.begin_delete(group, name, polling=False, raw_response_hook=hook)
        else:
            client.snapshots.begin_delete(group, name, polling=False, raw_response_hook=hook)
        return None

    return send_delete(f"delete {arm.type} {name}", start)


def list_group_resources(settings: Settings, resource_group: str) -> list[TaggedResource]:
    """Every VM, managed disk, snapshot and NIC in a resource group, with its tags."""
    client = client_for(settings)
    found: list[TaggedResource] = []
    with azure_call(f"list resources in {resource_group}"):
        for vm in client.virtual_machines.list(resource_group):
            found.append(TaggedResource(str(vm.id), VM_TYPE, dict(vm.tags or {})))
        for disk in client.disks.list_by_resource_group(resource_group):
            found.append(TaggedResource(str(disk.id), DISK_TYPE, dict(disk.tags or {})))
        for snap in client.snapshots.list_by_resource_group(resource_group):
            found.append(TaggedResource(str(snap.id), SNAPSHOT_TYPE, dict(snap.tags or {})))
    found.extend(list_nics(settings, resource_group))
    return found


def _name_of(resource: TaggedResource) -> str:
    return resource.id.rstrip("/").rsplit("/", 1)[-1].lower()


def build_resources(
    settings: Settings, resource_group: str, build_id: str, image: str | None = None
) -> list[TaggedResource]:
    """The VMs, disks, snapshots and NICs of one build.

    Those tagged ``imagefactory:build-id`` = ``build_id``; and, untagged, only a NIC or OS disk
    with the *exact* name this build gave what Azure creates without tags
    (:meth:`BuildResourceNames.created_untagged` for ``image``, else for the image named on the
    build's tagged resources; with neither, tagged resources only). Never a name prefix: a
    user's ``vm-golden`` is not a build's.
    """
    listed = list_group_resources(settings, resource_group)
    tagged = [r for r in listed if tag_value(r.tags, TAG_BUILD_ID) == build_id]
    image = image or next((i for r in tagged if (i := tag_value(r.tags, TAG_IMAGE))), None)
    if not image:
        return tagged
    expected = {
        rtype.lower(): names
        for rtype, names in build_resource_names(image, build_id).created_untagged().items()
    }
    return [
        r
        for r in listed
        if tag_value(r.tags, TAG_BUILD_ID) == build_id
        or (
            tag_value(r.tags, TAG_BUILD_ID) is None
            and _name_of(r) in expected.get(r.type.lower(), frozenset())
        )
    ]


def build_ids_with_resources(settings: Settings, resource_group: str) -> set[str]:
    """Every build id that tagged resources left in the group (names are never read)."""
    return {
        found
        for resource in list_group_resources(settings, resource_group)
        if (found := tag_value(resource.tags, TAG_BUILD_ID))
    }


# ---- marketplace ------------------------------------------------------------------------


def _version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return ()


def marketplace_versions(
    settings: Settings, location: str, publisher: str, offer: str, sku: str
) -> list[str]:
    """Every published version of a marketplace image in a region (numeric versions only)."""
    client = client_for(settings)
    with azure_call(f"list marketplace versions of {publisher}/{offer}/{sku} in {location}"):
        listed = client.virtual_machine_images.list(location, publisher, offer, sku)
    return [str(item.name) for item in listed if item.name and _version_key(str(item.name))]


def latest_marketplace_version(
    settings: Settings, location: str, publisher: str, offer: str, sku: str
) -> str | None:
    """The newest marketplace version by numeric ordering (``None`` when there is none).

    The list is fetched whole rather than with ``$top``/``$orderby``: ARM orders by name as
    text, so ``9.0.1`` would sort above ``10.0.0``.
    """
    versions = marketplace_versions(settings, location, publisher, offer, sku)
    return max(versions, key=_version_key, default=None)


def json_body(response: HttpResponse) -> dict[str, Any]:
    """A response body as a JSON object (empty for an empty body)."""
    text = response.text()
    if not text:
        return {}
    parsed = json.loads(text)
    return parsed if isinstance(parsed, dict) else {}


# ---- long-running operations: the error of a failed one ---------------------------------


class OperationMonitor:
    """A ``raw_response_hook`` that keeps the operation-status URL of a ``begin_*`` call.

    ARM answers a long-running PUT/POST/DELETE with ``Azure-AsyncOperation`` (or ``Location``);
    the operation's ``error`` (code and message) is only there, never on the resource, so a
    caller that does not poll the SDK's poller keeps the URL to read the error later.
    """

    def __init__(self) -> None:
        self.url: str | None = None

    def __call__(self, response: PipelineResponse[Any, Any]) -> None:
        headers = response.http_response.headers
        found = headers.get("Azure-AsyncOperation") or headers.get("Location")
        if found and self.url is None:
            self.url = str(found)


PUBLIC_ARM_ENDPOINT: Final = "https://management.azure.com"


def _same_endpoint(settings: Settings, url: str) -> bool:
    """The URL is on the ARM endpoint this app talks to (its token goes nowhere else)."""
    wanted = urllib.parse.urlsplit(settings.arm_endpoint or PUBLIC_ARM_ENDPOINT)
    found = urllib.parse.urlsplit(url)
    return (found.scheme, found.netloc.lower()) == (wanted.scheme, wanted.netloc.lower())


def operation_error(settings: Settings, url: str | None) -> str | None:
    """``"Code: message"`` of a failed (or cancelled) operation; None while it runs or succeeded.

    Reads ARM's operation status (``{"status": "Failed", "error": {"code", "message"}}``) through
    the compute pipeline. An ``operationResults`` (Location) URL answers a failed operation with
    the error status and the same error body. Azure's words are kept as they are.
    """
    if not url or not _same_endpoint(settings, url):
        return None
    client = client_for(settings)
    with azure_call("read the operation status"):
        response = client.send_request(
            HttpRequest("GET", url, headers={"Accept": "application/json"})
        )
        response.read()
    try:
        body = json_body(response)
    except ValueError:
        body = {}
    status = str(body.get("status") or "")
    if response.status_code < 400 and status not in ("Failed", "Canceled"):
        return None
    found = body.get("error")
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    code = str(error.get("code") or status or response.status_code)
    message = str(error.get("message") or "").strip()
    return f"{code}: {message}" if message else code
