"""Typed values the Azure gateways return (frozen dataclasses), and building ARM resource ids.

Gateways translate SDK models into these so the rest of the app never touches SDK types; the
activities turn them into plain dicts with :meth:`to_dict`. Ids are *parsed* by the domain's
:class:`shared.domain.resources.ResourceId`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal


def resource_id(subscription_id: str, resource_group: str, resource_type: str, *names: str) -> str:
    """Build an ARM id: ``resource_id(s, rg, "Microsoft.Compute/galleries/images", g, i)``."""
    namespace, *types = resource_type.split("/")
    if len(types) != len(names) or not names:
        raise ValueError(f"{resource_type} needs {len(types)} names, got {len(names)}")
    path = "/".join(f"{t}/{n}" for t, n in zip(types, names, strict=True))
    group = f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
    return f"{group}/providers/{namespace}/{path}"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


class _AsDict:
    def to_dict(self) -> dict[str, Any]:
        return {name: _plain(getattr(self, name)) for name in self.__dataclass_fields__}  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ResourceState(_AsDict):
    """Whether a resource exists and its ARM provisioning state."""

    id: str
    exists: bool
    provisioning_state: str | None = None
    error: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VmState(_AsDict):
    """A VM's model and instance view, reduced to what a build decides on."""

    id: str
    exists: bool
    provisioning_state: str | None = None
    power_state: str | None = None
    security_type: str | None = None
    os_disk_id: str | None = None
    error: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    location: str | None = None
    generalized: bool = False


@dataclass(frozen=True)
class RunCommandState(_AsDict):
    """A managed run command's execution (instance view)."""

    id: str
    exists: bool
    state: str
    provisioning_state: str | None = None
    exit_code: int | None = None
    output: str = ""
    error: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    script: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegionReplication(_AsDict):
    """Replication of one gallery version to one region."""

    state: str
    progress: int | None = None
    details: str | None = None


@dataclass(frozen=True)
class ImageVersionState(_AsDict):
    """A gallery image version: provisioning, replication per region, tags."""

    id: str
    name: str
    exists: bool
    provisioning_state: str | None = None
    aggregated_state: str | None = None
    regions: Mapping[str, RegionReplication] = field(default_factory=dict)
    exclude_from_latest: bool | None = None
    end_of_life_date: datetime | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    block_deletion_before_end_of_life: bool = False


@dataclass(frozen=True)
class GalleryState(_AsDict):
    id: str
    exists: bool
    provisioning_state: str | None = None


@dataclass(frozen=True)
class ImageDefinitionState(_AsDict):
    """A gallery image definition (the "image" a version belongs to)."""

    id: str
    exists: bool
    provisioning_state: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    security_type: str | None = None
    hyper_v_generation: str | None = None
    os_type: str | None = None
    etag: str | None = None


@dataclass(frozen=True)
class TaggedResource(_AsDict):
    """A resource found by listing: its id, ARM type and tags."""

    id: str
    type: str
    tags: Mapping[str, str] = field(default_factory=dict)


# ---- inputs the gateways take ------------------------------------------------------------


@dataclass(frozen=True)
class MarketplaceSource:
    publisher: str
    offer: str
    sku: str
    version: str
    kind: Literal["marketplace"] = "marketplace"


@dataclass(frozen=True)
class GallerySource:
    image_version_id: str
    kind: Literal["gallery_version"] = "gallery_version"


@dataclass(frozen=True)
class AttachSource:
    os_disk_id: str
    kind: Literal["attach"] = "attach"


VmSource = MarketplaceSource | GallerySource | AttachSource


@dataclass(frozen=True)
class VmSpec:
    """Everything needed to create a build VM; the admin password never leaves the gateway call."""

    resource_group: str
    name: str
    location: str
    size: str
    computer_name: str
    nic_name: str
    subnet_id: str
    os_disk_name: str
    source: VmSource
    tags: Mapping[str, str]
    nic_tags: Mapping[str, str] = field(default_factory=dict)
    admin_username: str = "factoryadmin"
    admin_password: str = field(default="", repr=False)
    os_type: str = "Windows"
    os_disk_storage_type: str = "StandardSSD_LRS"
    identity_id: str | None = None  # a user-assigned managed identity for the VM


@dataclass(frozen=True)
class TargetRegionSpec:
    name: str
    replica_count: int = 1
    storage_account_type: str = "Standard_LRS"


@dataclass(frozen=True)
class ImageVersionSpec:
    """A staged gallery version captured from a generalized VM."""

    resource_group: str
    gallery: str
    image_definition: str
    version: str
    location: str
    source_vm_id: str
    target_regions: tuple[TargetRegionSpec, ...]
    end_of_life: datetime
    tags: Mapping[str, str]
    replica_count: int = 1
    storage_account_type: str = "Standard_LRS"


@dataclass(frozen=True)
class ImageDefinitionSpec:
    resource_group: str
    gallery: str
    name: str
    location: str
    publisher: str
    offer: str
    sku: str
    os_type: str = "Windows"
    hyper_v_generation: str = "V2"
    security_type: str | None = "TrustedLaunchSupported"
    description: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
