"""Azure Virtual Desktop gateway: host pools and the image their ``vmTemplate`` deploys.

Typed functions over ``DesktopVirtualizationMgmtClient.host_pools``. A host pool's
``properties.vmTemplate`` is JSON *text* (``imageType``, ``customImageId`` or the marketplace
fields, ``vmSize`` ...); what it means is decided in ``shared.domain.lifecycle``
(``template_image`` / ``template_with_image``). A host pool named without its resource group
is looked up among the subscription's host pools. Host pool updates are synchronous PATCHes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from azure.mgmt.desktopvirtualization import DesktopVirtualizationMgmtClient
from azure.mgmt.desktopvirtualization.models import HostPool, HostPoolPatch

from shared.azure.clients import avd_client
from shared.azure.errors import absent_as_none, azure_call
from shared.domain.resources import HOST_POOL_TYPE, ResourceId
from shared.errors import ConflictError, NotFoundError
from shared.settings import Settings

__all__ = ["HOST_POOL_TYPE", "HostPoolTemplate", "get_host_pool", "set_host_pool_template"]

_MAX_LISTED: Final = 5000


@dataclass(frozen=True)
class HostPoolTemplate:
    """A host pool's id and its ``vmTemplate`` text (None when it has none)."""

    id: str
    name: str
    vm_template: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "vm_template": self.vm_template}


def _client(settings: Settings, subscription_id: str | None) -> DesktopVirtualizationMgmtClient:
    if subscription_id and subscription_id.lower() == settings.subscription_id.lower():
        subscription_id = None
    return avd_client(settings, subscription_id)


def _view(found: HostPool, fallback_id: str) -> HostPoolTemplate:
    hid = found.id or fallback_id
    return HostPoolTemplate(
        id=hid, name=found.name or hid.rsplit("/", 1)[-1], vm_template=found.vm_template
    )


def get_host_pool(settings: Settings, host_pool: str) -> HostPoolTemplate:
    """The host pool named by ``host_pool`` (a hostPools id, or a name unique in the
    subscription); NotFoundError when there is none, ConflictError when a name is ambiguous."""
    if host_pool.startswith("/"):
        arm = ResourceId.parse(host_pool, "host_pool", HOST_POOL_TYPE)
        client = _client(settings, arm.subscription_id)
        found = absent_as_none(
            f"get host pool {arm.name}",
            lambda: client.host_pools.get(arm.resource_group, arm.name),
        )
        if found is None:
            raise NotFoundError(f"host pool {host_pool} does not exist")
        return _view(found, str(arm))
    client = _client(settings, None)
    with azure_call(f"list host pools to find {host_pool}"):
        matches = []
        for index, pool in enumerate(client.host_pools.list()):
            if index >= _MAX_LISTED:
                break
            if (pool.name or "").lower() == host_pool.lower():
                matches.append(pool)
    if not matches:
        raise NotFoundError(
            f"no host pool named {host_pool} in subscription {settings.subscription_id}"
        )
    if len(matches) > 1:
        raise ConflictError(
            f"{len(matches)} host pools are named {host_pool}: name it by resource id in the "
            "catalogue"
        )
    return _view(matches[0], matches[0].id or host_pool)


def set_host_pool_template(settings: Settings, host_pool_id: str, vm_template: str) -> None:
    """PATCH the host pool's ``vmTemplate`` (nothing else changes)."""
    arm = ResourceId.parse(host_pool_id, "host_pool_id", HOST_POOL_TYPE)
    client = _client(settings, arm.subscription_id)
    with azure_call(f"update vmTemplate of host pool {arm.name}"):
        client.host_pools.update(
            arm.resource_group, arm.name, HostPoolPatch(vm_template=vm_template)
        )
