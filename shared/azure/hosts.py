"""Session host gateway: host pools, registration tokens, session hosts, session host VMs.

Typed functions over ``DesktopVirtualizationMgmtClient`` (api 2024-04-03) and, for the session
host VMs, ``ComputeManagementClient`` (both from :mod:`shared.azure.clients`): the host pool
(its ``vmTemplate`` and registration token), session hosts (get, list, drain, delete), a
session host VM created from an exact gallery version id with the pool's settings, and the
failed-connection signal of a pool. Same rules as :mod:`shared.azure.compute`: ``begin_*`` with
``polling=False``, absence as an answer, every other failure mapped by
:mod:`shared.azure.errors`. The registration token never leaves this module except inside the
VM's ``customData`` (ARM never returns it).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.mgmt.compute import models as compute_models
from azure.mgmt.core.exceptions import ARMErrorFormat
from azure.mgmt.desktopvirtualization import models as avd_models

from shared.azure import compute
from shared.azure.clients import avd_client
from shared.azure.errors import absent_as_none, azure_call
from shared.domain.resources import HOST_POOL_TYPE, ResourceId
from shared.errors import PermanentError
from shared.settings import Settings

WORKSPACE_TYPE = "Microsoft.OperationalInsights/workspaces"
LOG_ANALYTICS_API_VERSION = "2020-08-01"


def _client(settings: Settings, subscription_id: str | None) -> Any:
    if subscription_id and subscription_id.lower() == settings.subscription_id.lower():
        subscription_id = None
    return avd_client(settings, subscription_id)


def _pool(pool_id: str) -> ResourceId:
    return ResourceId.parse(pool_id, "host_pool_id", HOST_POOL_TYPE)


# ---- host pools -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostPoolState:
    id: str
    exists: bool
    location: str | None = None
    vm_template: Mapping[str, Any] = field(default_factory=dict)
    token_expires: datetime | None = None
    host_pool_type: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


def _template(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def get_host_pool(settings: Settings, pool_id: str) -> HostPoolState:
    """The host pool: location, parsed ``vmTemplate``, the current token's expiry."""
    arm = _pool(pool_id)
    client = _client(settings, arm.subscription_id)
    found = absent_as_none(
        f"get host pool {arm.name}", lambda: client.host_pools.get(arm.resource_group, arm.name)
    )
    if found is None:
        return HostPoolState(id=str(arm), exists=False)
    info = found.registration_info
    return HostPoolState(
        id=found.id or str(arm),
        exists=True,
        location=found.location,
        vm_template=_template(found.vm_template),
        token_expires=info.expiration_time if info is not None else None,
        host_pool_type=str(found.host_pool_type) if found.host_pool_type else None,
        tags=dict(found.tags or {}),
    )


def renew_registration_token(settings: Settings, pool_id: str, expires: datetime) -> None:
    """Issue a new registration token valid until ``expires`` (1 hour to 30 days ahead)."""
    arm = _pool(pool_id)
    client = _client(settings, arm.subscription_id)
    patch = avd_models.HostPoolPatch(
        registration_info=avd_models.RegistrationInfoPatch(
            expiration_time=expires,
            registration_token_operation="Update",  # noqa: S106 - an operation name
        )
    )
    with azure_call(f"renew the registration token of {arm.name}"):
        client.host_pools.update(arm.resource_group, arm.name, patch)


def _registration_token(settings: Settings, pool_id: str) -> str:
    arm = _pool(pool_id)
    client = _client(settings, arm.subscription_id)
    with azure_call(f"retrieve the registration token of {arm.name}"):
        info = client.host_pools.retrieve_registration_token(arm.resource_group, arm.name)
    token = info.token if info is not None else None
    if not token:
        raise PermanentError(f"host pool {arm.name} has no valid registration token")
    return str(token)


def update_pool(
    settings: Settings,
    pool_id: str,
    *,
    image_version_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> HostPoolState:
    """Point the pool's ``vmTemplate`` at an exact gallery version (new hosts use it from
    now) and/or merge ``tags`` into the pool's tags, in one PATCH after one read."""
    current = get_host_pool(settings, pool_id)
    if not current.exists:
        raise PermanentError(f"host pool {pool_id} does not exist")
    patch = avd_models.HostPoolPatch()
    template = dict(current.vm_template)
    if image_version_id is not None:
        template.update(imageType="CustomImage", customImageId=image_version_id)
        for stale in (
            "galleryImageOffer",
            "galleryImagePublisher",
            "galleryImageSKU",
            "galleryItemId",
        ):
            template.pop(stale, None)
        patch.vm_template = json.dumps(template, separators=(",", ":"))
    merged = dict(current.tags)
    if tags:
        lowered = {k.lower() for k in tags}
        merged = {k: v for k, v in merged.items() if k.lower() not in lowered}
        merged.update(tags)
        patch.tags = merged
    arm = _pool(pool_id)
    client = _client(settings, arm.subscription_id)
    with azure_call(f"update host pool {arm.name}"):
        client.host_pools.update(arm.resource_group, arm.name, patch)
    return HostPoolState(
        id=current.id,
        exists=True,
        location=current.location,
        vm_template=template,
        token_expires=current.token_expires,
        host_pool_type=current.host_pool_type,
        tags=merged,
    )


# ---- session hosts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionHostState:
    name: str  # the session host's own name (last segment)
    vm_id: str
    status: str | None
    allow_new_session: bool | None
    health_checks: tuple[dict[str, Any], ...] = ()


def _health_checks(host: Any) -> tuple[dict[str, Any], ...]:
    out = []
    for report in host.session_host_health_check_results or []:
        details = report.additional_failure_details
        out.append(
            {
                "healthCheckName": str(report.health_check_name or ""),
                "healthCheckResult": str(report.health_check_result or ""),
                "additionalFailureDetails": {
                    "message": details.message if details is not None else None,
                    "errorCode": details.error_code if details is not None else None,
                },
            }
        )
    return tuple(out)


def list_session_hosts(settings: Settings, pool_id: str) -> list[SessionHostState]:
    """Every session host of a pool with its status, drain mode and health checks."""
    arm = _pool(pool_id)
    client = _client(settings, arm.subscription_id)
    found: list[SessionHostState] = []
    with azure_call(f"list the session hosts of {arm.name}"):
        for host in client.session_hosts.list(arm.resource_group, arm.name):
            found.append(
                SessionHostState(
                    name=str(host.name or "").rsplit("/", 1)[-1],
                    vm_id=str(host.resource_id or ""),
                    status=str(host.status) if host.status else None,
                    allow_new_session=host.allow_new_session,
                    health_checks=_health_checks(host),
                )
            )
    return found


def set_drain(settings: Settings, pool_id: str, host_name: str, allow_new_session: bool) -> None:
    """Drain mode on (``allow_new_session=False``) or off."""
    arm = _pool(pool_id)
    client = _client(settings, arm.subscription_id)
    with azure_call(f"update session host {host_name}"):
        client.session_hosts.update(
            arm.resource_group,
            arm.name,
            host_name,
            session_host=avd_models.SessionHostPatch(allow_new_session=allow_new_session),
        )


def delete_session_host(settings: Settings, pool_id: str, host_name: str) -> bool:
    """Remove a session host from its pool (sessions forced off); False when it was gone."""
    arm = _pool(pool_id)
    client = _client(settings, arm.subscription_id)
    done = absent_as_none(
        f"delete session host {host_name}",
        lambda: (
            client.session_hosts.delete(arm.resource_group, arm.name, host_name, force=True) or True
        ),
    )
    return bool(done)


# ---- session host VMs -------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionHostVmSpec:
    pool_id: str
    resource_group: str
    name: str
    location: str
    image_version_id: str  # the exact gallery version: never "latest"
    subnet_id: str
    admin_username: str
    admin_password: str
    vm_size: str = "Standard_D4s_v5"
    security_type: str = "TrustedLaunch"
    os_disk_type: str = "Premium_LRS"
    tags: Mapping[str, str] = field(default_factory=dict)


def template_settings(template: Mapping[str, Any]) -> dict[str, str]:
    """What a new session host takes from the pool's ``vmTemplate`` (size, disk, security)."""
    size = template.get("vmSize")
    size_id = size.get("id") if isinstance(size, Mapping) else size
    out: dict[str, str] = {}
    if isinstance(size_id, str) and size_id:
        out["vm_size"] = size_id
    if isinstance(template.get("osDiskType"), str):
        out["os_disk_type"] = str(template["osDiskType"])
    if isinstance(template.get("securityType"), str):
        out["security_type"] = str(template["securityType"])
    if isinstance(template.get("subnetId"), str):
        out["subnet_id"] = str(template["subnetId"])
    return out


def create_session_host_vm(settings: Settings, spec: SessionHostVmSpec) -> str:
    """Send the VM PUT for a session host that registers itself in ``spec.pool_id``.

    The host pool's registration token goes into ``customData`` (the agent reads it at first
    boot); ARM never returns customData, and nothing here logs it.
    """
    if "/versions/" not in spec.image_version_id.lower():
        raise PermanentError(f"{spec.image_version_id} is not an exact gallery version id")
    token = _registration_token(settings, spec.pool_id)
    custom = base64.b64encode(
        json.dumps({"avdRegistrationToken": token, "hostPool": spec.pool_id}).encode()
    ).decode()
    body: dict[str, Any] = {
        "location": spec.location,
        "tags": dict(spec.tags),
        "properties": {
            "hardwareProfile": {"vmSize": spec.vm_size},
            "storageProfile": {
                "imageReference": {"id": spec.image_version_id},
                "osDisk": {
                    "name": f"{spec.name}-osdisk",
                    "createOption": "FromImage",
                    "deleteOption": "Delete",
                    "caching": "ReadWrite",
                    "managedDisk": {"storageAccountType": spec.os_disk_type},
                },
            },
            "securityProfile": _security(spec.security_type),
            "osProfile": {
                "computerName": spec.name,
                "adminUsername": spec.admin_username,
                "adminPassword": spec.admin_password,
                "customData": custom,
                "windowsConfiguration": {"provisionVMAgent": True},
            },
            "networkProfile": {
                "networkApiVersion": compute.VM_NETWORK_API_VERSION,
                "networkInterfaceConfigurations": [
                    {
                        "name": f"{spec.name}-nic",
                        "tags": dict(spec.tags),
                        "properties": {
                            "primary": True,
                            "deleteOption": "Delete",
                            "ipConfigurations": [
                                {
                                    "name": "ipconfig1",
                                    "properties": {"subnet": {"id": spec.subnet_id}},
                                }
                            ],
                        },
                    }
                ],
            },
            "licenseType": "Windows_Client",
        },
    }
    client = compute.client_for(settings)
    with azure_call(f"create session host VM {spec.name}"):
        client.virtual_machines.begin_create_or_update(
            spec.resource_group,
            spec.name,
            compute_models.VirtualMachine(body),
            polling=False,
        )
    return compute.vm_id(settings, spec.resource_group, spec.name)


def _security(security_type: str) -> dict[str, Any]:
    if security_type.lower() == "trustedlaunch":
        return {
            "securityType": "TrustedLaunch",
            "uefiSettings": {"secureBootEnabled": True, "vTpmEnabled": True},
        }
    return {"securityType": security_type}


# ---- connections (the Log Analytics signal) -------------------------------------------------


@dataclass(frozen=True)
class ConnectionCounts:
    connections: int
    failed: int


def connection_counts(
    settings: Settings, pool_id: str, since: datetime, until: datetime
) -> ConnectionCounts | None:
    """Connections to a pool and how many failed in ``[since, until)``; None without a workspace.

    AVD's management API keeps no connection history: in Azure the signal is the
    ``WVDConnections`` table of the Log Analytics workspace the host pool's diagnostic settings
    send to, read with the workspace query API through ARM
    (``POST {workspace id}/api/query?api-version=2020-08-01``; the workspace's resource id in
    ``LOG_ANALYTICS_WORKSPACE_ID``). The emulator serves the same route from its simulated
    users' connections (docs/validation.md).
    """
    workspace = os.environ.get("LOG_ANALYTICS_WORKSPACE_ID", "").strip()
    if not workspace:
        return None
    arm = _pool(pool_id)
    ws = ResourceId.parse(workspace, "LOG_ANALYTICS_WORKSPACE_ID", WORKSPACE_TYPE)
    query = (
        "WVDConnections "
        f"| where _ResourceId =~ '{str(arm).lower()}' "
        "| where State in ('Connected', 'Failed') "
        "| summarize Connections = dcount(CorrelationId), "
        "Failed = dcountif(CorrelationId, State == 'Failed')"
    )
    body = {"query": query, "timespan": f"{since.isoformat()}/{until.isoformat()}"}
    client = compute.client_for(settings, ws.subscription_id)
    request = HttpRequest(
        "POST", f"{ws}/api/query?api-version={LOG_ANALYTICS_API_VERSION}", json=body
    )
    with azure_call(f"query the connections of {arm.name}"):
        response = client.send_request(request)
        response.read()
        if response.status_code >= 400:
            raise HttpResponseError(response=response, error_format=ARMErrorFormat)
    table = (compute.json_body(response).get("tables") or [{}])[0]
    columns = [str(c.get("name")) for c in table.get("columns") or []]
    row = (table.get("rows") or [[0, 0]])[0]
    values = dict(zip(columns, row, strict=False))
    return ConnectionCounts(int(values.get("Connections") or 0), int(values.get("Failed") or 0))
