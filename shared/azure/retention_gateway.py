"""Retention gateway: what the retention job reads and changes in Azure, one SDK call each.

Gallery versions with their storage footprint (listed whole per image definition), the
deprecation PATCH (end of life, exclude from latest, tags), host pools' ``vmTemplate`` and their
session hosts, the image references of the VMs in a resource group, and tagged resources with
their creation time and power state (leftovers). Like the other gateways: ``polling=False`` on
every ``begin_*``, frozen results, 404 as absence where absence is an answer, every other
failure mapped by :mod:`shared.azure.errors`. Deleting a version or a resource reuses
``gallery.begin_delete_image_version`` and ``compute.begin_delete_resource``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from azure.mgmt.compute import models

from shared.azure.clients import avd_client
from shared.azure.compute import client_for, list_nics, text_of
from shared.azure.errors import absent_as_none, azure_call
from shared.azure.gallery import image_definition_id, normalise_region
from shared.domain.resources import (
    DISK_TYPE,
    HOST_POOL_TYPE,
    SNAPSHOT_TYPE,
    TAG_PREFIX,
    VM_TYPE,
    ResourceId,
    parse_resource_id,
)
from shared.settings import Settings

# Gallery image or version ids anywhere in a text (a host pool's vmTemplate JSON, an input).
GALLERY_IMAGE_REF: Final = re.compile(
    r"/subscriptions/[^/\"'\s]+/resourceGroups/[^/\"'\s]+/providers/Microsoft\.Compute"
    r"/galleries/[^/\"'\s]+/images/[^/\"'\s]+(?:/versions/[^/\"'\s]+)?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class RegionCopy:
    name: str
    replicas: int
    storage_account_type: str | None = None
    exclude_from_latest: bool | None = None


@dataclass(frozen=True)
class GalleryVersion:
    """A gallery version as retention needs it."""

    id: str
    name: str
    tags: Mapping[str, str]
    provisioning_state: str | None
    end_of_life: datetime | None
    block_deletion_before_end_of_life: bool
    exclude_from_latest: bool
    regions: tuple[RegionCopy, ...]
    size_gb: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "tags": dict(self.tags),
            "provisioning_state": self.provisioning_state,
            "end_of_life": self.end_of_life.isoformat() if self.end_of_life else None,
            "block_deletion_before_end_of_life": self.block_deletion_before_end_of_life,
            "exclude_from_latest": self.exclude_from_latest,
            "regions": [
                {
                    "name": r.name,
                    "replicas": r.replicas,
                    "storage_account_type": r.storage_account_type,
                    "exclude_from_latest": r.exclude_from_latest,
                }
                for r in self.regions
            ],
            "size_gb": self.size_gb,
        }


def _size_gb(props: models.GalleryImageVersionProperties | None) -> float:
    storage = props.storage_profile if props else None
    if storage is None:
        return 0.0
    total = 0.0
    if storage.os_disk_image is not None and storage.os_disk_image.size_in_gb:
        total += float(storage.os_disk_image.size_in_gb)
    for disk in storage.data_disk_images or []:
        total += float(disk.size_in_gb or 0)
    return total


def _gallery_version(found: models.GalleryImageVersion, fallback_id: str) -> GalleryVersion:
    props = found.properties
    publishing = props.publishing_profile if props else None
    default_replicas = (publishing.replica_count if publishing else None) or 1
    regions = tuple(
        RegionCopy(
            name=normalise_region(t.name or ""),
            replicas=t.regional_replica_count or default_replicas,
            storage_account_type=text_of(t.storage_account_type),
            exclude_from_latest=t.exclude_from_latest,
        )
        for t in (publishing.target_regions if publishing else None) or []
        if t.name
    )
    safety = props.safety_profile if props else None
    return GalleryVersion(
        id=found.id or fallback_id,
        name=found.name or fallback_id.rsplit("/", 1)[-1],
        tags=dict(found.tags or {}),
        provisioning_state=text_of(props.provisioning_state) if props else None,
        end_of_life=publishing.end_of_life_date if publishing else None,
        block_deletion_before_end_of_life=bool(
            safety is not None and safety.block_deletion_before_end_of_life
        ),
        exclude_from_latest=bool(publishing.exclude_from_latest) if publishing else False,
        regions=regions,
        size_gb=_size_gb(props),
    )


def list_versions(
    settings: Settings, resource_group: str, gallery: str, image: str
) -> list[GalleryVersion] | None:
    """Every version of an image definition; None when the definition does not exist."""
    client = client_for(settings)
    iid = image_definition_id(settings, resource_group, gallery, image)

    def fetch() -> list[GalleryVersion]:
        return [
            _gallery_version(v, f"{iid}/versions/{v.name}")
            for v in client.gallery_image_versions.list_by_gallery_image(
                resource_group, gallery, image
            )
        ]

    return absent_as_none(f"list versions of {gallery}/{image}", fetch)


def get_version(settings: Settings, version_id: str) -> GalleryVersion | None:
    """One version (None when absent)."""
    arm = ResourceId.parse(version_id, "version_id", "Microsoft.Compute/galleries/images/versions")
    gallery, image, name = arm.names
    client = client_for(settings, arm.subscription_id)
    found = absent_as_none(
        f"get image version {gallery}/{image}/{name}",
        lambda: client.gallery_image_versions.get(arm.resource_group, gallery, image, name),
    )
    return None if found is None else _gallery_version(found, str(arm))


def begin_deprecate_version(
    settings: Settings,
    version: GalleryVersion,
    end_of_life: datetime,
    tags: Mapping[str, str],
) -> None:
    """PATCH a version: end of life, excluded from latest globally *and* in every region (a
    region's own flag wins over the global one), and the whole tag set (PATCH replaces tags).
    The replica counts are sent unchanged, so nothing replicates again."""
    arm = ResourceId.parse(version.id, "version_id", "Microsoft.Compute/galleries/images/versions")
    gallery, image, name = arm.names
    regions = [
        {
            "name": r.name,
            "regionalReplicaCount": r.replicas,
            **({"storageAccountType": r.storage_account_type} if r.storage_account_type else {}),
            "excludeFromLatest": True,
        }
        for r in version.regions
    ]
    publishing: dict[str, Any] = {
        "endOfLifeDate": end_of_life.isoformat(),
        "excludeFromLatest": True,
    }
    if regions:
        publishing["targetRegions"] = regions
    body = {"tags": dict(tags), "properties": {"publishingProfile": publishing}}
    client = client_for(settings, arm.subscription_id)
    with azure_call(f"deprecate image version {gallery}/{image}/{name}"):
        client.gallery_image_versions.begin_update(
            arm.resource_group,
            gallery,
            image,
            name,
            models.GalleryImageVersionUpdate(body),
            polling=False,
        )


# ---- usage: host pools, session hosts, VMs ----------------------------------------------


@dataclass(frozen=True)
class HostPoolUsage:
    id: str
    exists: bool
    template_refs: tuple[str, ...] = ()


def gallery_refs(text: str | None) -> tuple[str, ...]:
    """Every gallery image or version id mentioned in ``text`` (e.g. a vmTemplate)."""
    return tuple(dict.fromkeys(m.group(0) for m in GALLERY_IMAGE_REF.finditer(text or "")))


def get_host_pool(settings: Settings, host_pool: str) -> HostPoolUsage:
    """A host pool by resource id, or by name in the factory's subscription (one list)."""
    arm = parse_resource_id(host_pool) if host_pool.startswith("/") else None
    if arm is not None and arm.is_type(HOST_POOL_TYPE):
        client = avd_client(settings, _other(settings, arm.subscription_id))
        found = absent_as_none(
            f"get host pool {arm.name}", lambda: client.host_pools.get(arm.resource_group, arm.name)
        )
        if found is None:
            return HostPoolUsage(id=str(arm), exists=False)
        return HostPoolUsage(
            id=found.id or str(arm), exists=True, template_refs=gallery_refs(found.vm_template)
        )
    client = avd_client(settings)
    with azure_call(f"list host pools to find {host_pool}"):
        pools = list(client.host_pools.list())
    for pool in pools:
        if (pool.name or "").lower() == host_pool.lower() and pool.id:
            return HostPoolUsage(
                id=pool.id, exists=True, template_refs=gallery_refs(pool.vm_template)
            )
    return HostPoolUsage(id=host_pool, exists=False)


def _other(settings: Settings, subscription_id: str) -> str | None:
    return None if subscription_id.lower() == settings.subscription_id.lower() else subscription_id


def session_host_vms(settings: Settings, host_pool_id: str) -> list[str] | None:
    """The VM resource ids of a host pool's session hosts (None when the pool is gone)."""
    arm = ResourceId.parse(host_pool_id, "host_pool_id", HOST_POOL_TYPE)
    client = avd_client(settings, _other(settings, arm.subscription_id))

    def fetch() -> list[str]:
        return [
            str(h.resource_id)
            for h in client.session_hosts.list(arm.resource_group, arm.name)
            if h.resource_id
        ]

    return absent_as_none(f"list session hosts of {arm.name}", fetch)


@dataclass(frozen=True)
class VmImage:
    """A VM, the gallery image it was created from and its exact version, tags, age, power."""

    id: str
    image_id: str | None
    exact_version: str | None
    tags: Mapping[str, str] = field(default_factory=dict)
    created: datetime | None = None
    power_state: str | None = None


def list_vms(settings: Settings, subscription_id: str, resource_group: str) -> list[VmImage]:
    """Every VM of a resource group with its image reference and power state (one paged list
    with the instance view); empty when the group does not exist."""
    client = client_for(settings, subscription_id)

    def fetch() -> list[VmImage]:
        found: list[VmImage] = []
        for vm in client.virtual_machines.list(resource_group, expand="instanceView"):
            props = vm.properties
            ref = props.storage_profile.image_reference if props and props.storage_profile else None
            statuses = (
                props.instance_view.statuses if props and props.instance_view else None
            ) or []
            power = next(
                (s.code for s in statuses if (s.code or "").lower().startswith("powerstate/")),
                None,
            )
            found.append(
                VmImage(
                    id=str(vm.id),
                    image_id=ref.id if ref is not None else None,
                    exact_version=ref.exact_version if ref is not None else None,
                    tags=dict(vm.tags or {}),
                    created=props.time_created if props else None,
                    power_state=power,
                )
            )
        return found

    return absent_as_none(f"list VMs in {resource_group}", fetch) or []


@dataclass(frozen=True)
class TaggedLeftover:
    id: str
    type: str
    tags: Mapping[str, str]
    created: datetime | None = None
    power_state: str | None = None


def _factory_tagged(tags: Mapping[str, str] | None) -> bool:
    return any(k.lower().startswith(TAG_PREFIX) for k in (tags or {}))


def list_tagged_disks_and_snapshots(
    settings: Settings, subscription_id: str, resource_group: str
) -> list[TaggedLeftover]:
    """Disks and snapshots of a group carrying any ``imagefactory:`` tag, with creation time."""
    client = client_for(settings, subscription_id)

    def fetch() -> list[TaggedLeftover]:
        out: list[TaggedLeftover] = []
        for disk in client.disks.list_by_resource_group(resource_group):
            if _factory_tagged(disk.tags):
                created = disk.properties.time_created if disk.properties else None
                out.append(TaggedLeftover(str(disk.id), DISK_TYPE, dict(disk.tags or {}), created))
        for snap in client.snapshots.list_by_resource_group(resource_group):
            if _factory_tagged(snap.tags):
                created = snap.properties.time_created if snap.properties else None
                out.append(
                    TaggedLeftover(str(snap.id), SNAPSHOT_TYPE, dict(snap.tags or {}), created)
                )
        return out

    return absent_as_none(f"list disks and snapshots in {resource_group}", fetch) or []


def list_tagged_nics(settings: Settings, resource_group: str) -> list[TaggedLeftover]:
    """NICs of a group (factory subscription) carrying any ``imagefactory:`` tag."""
    found = absent_as_none(
        f"list NICs in {resource_group}", lambda: list_nics(settings, resource_group)
    )
    return [
        TaggedLeftover(r.id, r.type, dict(r.tags)) for r in found or [] if _factory_tagged(r.tags)
    ]


def tagged_vms(vms: Iterable[VmImage]) -> list[TaggedLeftover]:
    return [
        TaggedLeftover(v.id, VM_TYPE, dict(v.tags), v.created, v.power_state)
        for v in vms
        if _factory_tagged(v.tags)
    ]


def orchestration_refs(payloads: Iterable[Any]) -> tuple[str, ...]:
    """Gallery image/version ids named anywhere in orchestration inputs or statuses."""
    found: dict[str, None] = {}
    for payload in payloads:
        text = payload if isinstance(payload, str) else json.dumps(payload, default=str)
        for ref in gallery_refs(text):
            found[ref] = None
    return tuple(found)
