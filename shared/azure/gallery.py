"""Compute Gallery gateway: galleries, image definitions, image versions and replication.

Typed functions over the gallery operations of ``ComputeManagementClient``. As in
:mod:`shared.azure.compute`, every ``begin_*`` passes ``polling=False`` (the request is sent,
nothing waits), reads return frozen dataclasses, and 404 is ``exists=False`` where absence is an
answer. Region names in replication answers are normalised (``"West Europe"`` ->
``"westeurope"``) so they compare with the plan's target regions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from azure.mgmt.compute import models

from shared.azure.compute import ResponseHook, client_for, send_delete, text_of
from shared.azure.errors import absent_as_none, azure_call
from shared.azure.models import (
    GalleryState,
    ImageDefinitionSpec,
    ImageDefinitionState,
    ImageVersionSpec,
    ImageVersionState,
    RegionReplication,
    resource_id,
)
from shared.domain.resources import (
    GALLERY_VERSION_TYPE,
    TAG_BASE_IMAGE_VERSION,
    ResourceId,
    tag_value,
)
from shared.settings import Settings

GALLERY_TYPE: Final = "Microsoft.Compute/galleries"
IMAGE_TYPE: Final = "Microsoft.Compute/galleries/images"
VERSION_TYPE: Final = GALLERY_VERSION_TYPE

__all__ = [
    "GALLERY_TYPE",
    "IMAGE_TYPE",
    "VERSION_TYPE",
    "RegionFlags",
    "VersionLifecycle",
    "base_versions_built",
    "begin_create_gallery",
    "begin_create_image_definition",
    "begin_create_image_version",
    "begin_delete_image_version",
    "begin_update_image_definition_tags",
    "begin_update_version_lifecycle",
    "gallery_id",
    "get_gallery",
    "get_image_definition",
    "get_image_version",
    "get_version_lifecycle",
    "image_definition_id",
    "image_version_id",
    "list_image_versions",
    "list_version_lifecycles",
    "normalise_region",
]


def normalise_region(name: str) -> str:
    """``"West Europe"`` / ``"westeurope"`` -> ``"westeurope"``."""
    return "".join(name.split()).lower()


def gallery_id(settings: Settings, resource_group: str, gallery: str) -> str:
    return resource_id(settings.subscription_id, resource_group, GALLERY_TYPE, gallery)


def image_definition_id(settings: Settings, resource_group: str, gallery: str, image: str) -> str:
    return resource_id(settings.subscription_id, resource_group, IMAGE_TYPE, gallery, image)


def image_version_id(
    settings: Settings, resource_group: str, gallery: str, image: str, version: str
) -> str:
    return resource_id(
        settings.subscription_id, resource_group, VERSION_TYPE, gallery, image, version
    )


# ---- galleries --------------------------------------------------------------------------


def get_gallery(settings: Settings, resource_group: str, gallery: str) -> GalleryState:
    client = client_for(settings)
    found = absent_as_none(
        f"get gallery {gallery}", lambda: client.galleries.get(resource_group, gallery)
    )
    gid = gallery_id(settings, resource_group, gallery)
    if found is None:
        return GalleryState(id=gid, exists=False)
    state = found.properties.provisioning_state if found.properties else None
    return GalleryState(id=found.id or gid, exists=True, provisioning_state=text_of(state))


def begin_create_gallery(
    settings: Settings,
    resource_group: str,
    gallery: str,
    location: str,
    tags: Mapping[str, str],
) -> str:
    body = {
        "location": location,
        "tags": dict(tags),
        "properties": {"description": "AVD images built by avd-image-factory"},
    }
    client = client_for(settings)
    with azure_call(f"create gallery {gallery}"):
        client.galleries.begin_create_or_update(
            resource_group, gallery, models.Gallery(body), polling=False
        )
    return gallery_id(settings, resource_group, gallery)


# ---- image definitions ------------------------------------------------------------------


def _definition_state(
    settings: Settings, found: models.GalleryImage | None, rg: str, gallery: str, image: str
) -> ImageDefinitionState:
    iid = image_definition_id(settings, rg, gallery, image)
    if found is None:
        return ImageDefinitionState(id=iid, exists=False)
    props = found.properties
    security = None
    for feature in (props.features if props else None) or []:
        if (feature.name or "").lower() == "securitytype":
            security = feature.value
    return ImageDefinitionState(
        id=found.id or iid,
        exists=True,
        provisioning_state=text_of(props.provisioning_state) if props else None,
        tags=dict(found.tags or {}),
        security_type=security,
        hyper_v_generation=text_of(props.hyper_v_generation) if props else None,
        os_type=text_of(props.os_type) if props else None,
    )


def get_image_definition(
    settings: Settings, resource_group: str, gallery: str, image: str
) -> ImageDefinitionState:
    client = client_for(settings)
    found = absent_as_none(
        f"get image definition {gallery}/{image}",
        lambda: client.gallery_images.get(resource_group, gallery, image),
    )
    return _definition_state(settings, found, resource_group, gallery, image)


def begin_create_image_definition(settings: Settings, spec: ImageDefinitionSpec) -> str:
    properties: dict[str, Any] = {
        "osType": spec.os_type,
        "osState": "Generalized",
        "hyperVGeneration": spec.hyper_v_generation,
        "identifier": {"publisher": spec.publisher, "offer": spec.offer, "sku": spec.sku},
    }
    if spec.description:
        properties["description"] = spec.description
    if spec.security_type:
        properties["features"] = [{"name": "SecurityType", "value": spec.security_type}]
    body = {"location": spec.location, "tags": dict(spec.tags), "properties": properties}
    client = client_for(settings)
    with azure_call(f"create image definition {spec.gallery}/{spec.name}"):
        client.gallery_images.begin_create_or_update(
            spec.resource_group, spec.gallery, spec.name, models.GalleryImage(body), polling=False
        )
    return image_definition_id(settings, spec.resource_group, spec.gallery, spec.name)


def begin_update_image_definition_tags(
    settings: Settings,
    resource_group: str,
    gallery: str,
    image: str,
    tags: Mapping[str, str],
) -> None:
    """Send the PATCH of the definition's tags (the whole tag set: PATCH replaces ``tags``).

    The update is not waited for; the next read shows the state.
    """
    client = client_for(settings)
    with azure_call(f"update tags of image definition {gallery}/{image}"):
        client.gallery_images.begin_update(
            resource_group,
            gallery,
            image,
            models.GalleryImageUpdate({"tags": dict(tags)}),
            polling=False,
        )


# ---- image versions ---------------------------------------------------------------------


def _version_state(found: models.GalleryImageVersion, fallback_id: str) -> ImageVersionState:
    props = found.properties
    regions: dict[str, RegionReplication] = {}
    aggregated = None
    if props is not None and props.replication_status is not None:
        aggregated = text_of(props.replication_status.aggregated_state)
        for item in props.replication_status.summary or []:
            if not item.region:
                continue
            regions[normalise_region(item.region)] = RegionReplication(
                state=text_of(item.state) or "Unknown",
                progress=item.progress,
                details=item.details,
            )
    publishing = props.publishing_profile if props else None
    end_of_life: datetime | None = publishing.end_of_life_date if publishing else None
    safety = props.safety_profile if props else None
    return ImageVersionState(
        id=found.id or fallback_id,
        name=found.name or fallback_id.rsplit("/", 1)[-1],
        exists=True,
        provisioning_state=text_of(props.provisioning_state) if props else None,
        aggregated_state=aggregated,
        regions=regions,
        exclude_from_latest=publishing.exclude_from_latest if publishing else None,
        end_of_life_date=end_of_life,
        tags=dict(found.tags or {}),
        block_deletion_before_end_of_life=bool(
            safety is not None and safety.block_deletion_before_end_of_life
        ),
    )


def get_image_version(settings: Settings, version: str) -> ImageVersionState:
    """A gallery version with its replication status per region."""
    arm = ResourceId.parse(version, "version_id", VERSION_TYPE)
    gallery, image, name = arm.names
    client = client_for(settings, arm.subscription_id)
    found = absent_as_none(
        f"get image version {gallery}/{image}/{name}",
        lambda: client.gallery_image_versions.get(
            arm.resource_group, gallery, image, name, expand="ReplicationStatus"
        ),
    )
    if found is None:
        return ImageVersionState(id=str(arm), name=name, exists=False)
    return _version_state(found, str(arm))


def list_image_versions(
    settings: Settings, resource_group: str, gallery: str, image: str
) -> list[ImageVersionState]:
    """Every version of an image definition (empty when the definition does not exist)."""
    client = client_for(settings)
    iid = image_definition_id(settings, resource_group, gallery, image)

    def fetch() -> list[ImageVersionState]:
        return [
            _version_state(v, f"{iid}/versions/{v.name}")
            for v in client.gallery_image_versions.list_by_gallery_image(
                resource_group, gallery, image
            )
        ]

    return absent_as_none(f"list versions of {gallery}/{image}", fetch) or []


def _version_body(spec: ImageVersionSpec) -> dict[str, Any]:
    regions = [
        {
            "name": r.name,
            "regionalReplicaCount": r.replica_count,
            "storageAccountType": r.storage_account_type,
            "excludeFromLatest": True,
        }
        for r in spec.target_regions
    ]
    # The version's own region must be among the target regions.
    if not any(
        normalise_region(r.name) == normalise_region(spec.location) for r in spec.target_regions
    ):
        regions.insert(
            0,
            {
                "name": spec.location,
                "regionalReplicaCount": spec.replica_count,
                "storageAccountType": spec.storage_account_type,
                "excludeFromLatest": True,
            },
        )
    return {
        "location": spec.location,
        "tags": dict(spec.tags),
        "properties": {
            "publishingProfile": {
                "targetRegions": regions,
                "replicaCount": spec.replica_count,
                "excludeFromLatest": True,
                "storageAccountType": spec.storage_account_type,
                "endOfLifeDate": spec.end_of_life.isoformat(),
            },
            "storageProfile": {"source": {"virtualMachineId": spec.source_vm_id}},
            "safetyProfile": {
                "allowDeletionOfReplicatedLocations": False,
                # From api 2026-03-03 new versions block deletion before end of life by
                # default; a staged version that fails validation must stay removable.
                "blockDeletionBeforeEndOfLife": False,
            },
        },
    }


def begin_create_image_version(
    settings: Settings, spec: ImageVersionSpec, *, hook: ResponseHook | None = None
) -> str:
    """Send the version PUT (capture + replication start; nothing waits). Returns its id.

    ``hook`` sees the raw answer (e.g. an ``OperationMonitor`` keeping the operation URL).
    """
    client = client_for(settings)
    with azure_call(f"create image version {spec.gallery}/{spec.image_definition}/{spec.version}"):
        client.gallery_image_versions.begin_create_or_update(
            spec.resource_group,
            spec.gallery,
            spec.image_definition,
            spec.version,
            models.GalleryImageVersion(_version_body(spec)),
            polling=False,
            raw_response_hook=hook,
        )
    return image_version_id(
        settings, spec.resource_group, spec.gallery, spec.image_definition, spec.version
    )


def begin_delete_image_version(settings: Settings, version: str) -> bool:
    """Start deleting a gallery version (its replicas go with it); False when it was absent.

    Callers decide *whether* it may go (see ``versions.why_build_may_not_delete``).
    """
    arm = ResourceId.parse(version, "resource_id", VERSION_TYPE)
    gallery, image, name = arm.names
    client = client_for(settings, arm.subscription_id)

    def start(hook: ResponseHook) -> None:
        client.gallery_image_versions.begin_delete(
            arm.resource_group, gallery, image, name, polling=False, raw_response_hook=hook
        )

    return send_delete(f"delete image version {gallery}/{image}/{name}", start)


def base_versions_built(
    settings: Settings,
    resource_group: str,
    gallery: str,
    image: str,
) -> list[str]:
    """The base (marketplace) versions recorded on an image definition's gallery versions."""
    found: list[str] = []
    for version in list_image_versions(settings, resource_group, gallery, image):
        base = tag_value(version.tags, TAG_BASE_IMAGE_VERSION)
        if base:
            found.append(base)
    return found


# ---- lifecycle: tags and excludeFromLatest ----------------------------------------------


@dataclass(frozen=True)
class RegionFlags:
    """One target region of a version as its publishing profile states it."""

    name: str
    replica_count: int | None
    storage_account_type: str | None
    exclude_from_latest: bool | None  # None: the version's global flag applies

    def effective(self, global_flag: bool) -> bool:
        return global_flag if self.exclude_from_latest is None else self.exclude_from_latest


@dataclass(frozen=True)
class VersionLifecycle:
    """What the lifecycle reads of a gallery version: tags, provisioning, latest flags."""

    id: str
    name: str
    exists: bool
    provisioning_state: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    exclude_from_latest: bool = False
    target_regions: tuple[RegionFlags, ...] = ()

    def excluded_by_region(self) -> dict[str, bool]:
        """Effective ``excludeFromLatest`` per target region (the region's flag wins)."""
        return {r.name: r.effective(self.exclude_from_latest) for r in self.target_regions}

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "exists": self.exists,
            "provisioning_state": self.provisioning_state,
            "tags": dict(self.tags),
            "exclude_from_latest": self.exclude_from_latest,
            "excluded_by_region": self.excluded_by_region(),
            "target_regions": [
                {
                    "name": r.name,
                    "replica_count": r.replica_count,
                    "storage_account_type": r.storage_account_type,
                    "exclude_from_latest": r.exclude_from_latest,
                }
                for r in self.target_regions
            ],
        }


def _lifecycle_of(found: models.GalleryImageVersion, fallback_id: str) -> VersionLifecycle:
    props = found.properties
    publishing = props.publishing_profile if props else None
    regions = tuple(
        RegionFlags(
            name=normalise_region(t.name or ""),
            replica_count=t.regional_replica_count,
            storage_account_type=text_of(t.storage_account_type),
            exclude_from_latest=t.exclude_from_latest,
        )
        for t in ((publishing.target_regions if publishing else None) or [])
        if t.name
    )
    return VersionLifecycle(
        id=found.id or fallback_id,
        name=found.name or fallback_id.rsplit("/", 1)[-1],
        exists=True,
        provisioning_state=text_of(props.provisioning_state) if props else None,
        tags=dict(found.tags or {}),
        exclude_from_latest=bool(publishing.exclude_from_latest) if publishing else False,
        target_regions=regions,
    )


def get_version_lifecycle(settings: Settings, version: str) -> VersionLifecycle:
    """A version's tags, provisioning state and ``excludeFromLatest`` flags (exists=False: 404)."""
    arm = ResourceId.parse(version, "version_id", VERSION_TYPE)
    gallery, image, name = arm.names
    client = client_for(settings, arm.subscription_id)
    found = absent_as_none(
        f"get image version {gallery}/{image}/{name}",
        lambda: client.gallery_image_versions.get(arm.resource_group, gallery, image, name),
    )
    if found is None:
        return VersionLifecycle(id=str(arm), name=name, exists=False)
    return _lifecycle_of(found, str(arm))


def list_version_lifecycles(
    settings: Settings, resource_group: str, gallery: str, image: str
) -> list[VersionLifecycle]:
    """Every version of a definition with its lifecycle view (empty: no such definition)."""
    client = client_for(settings)
    iid = image_definition_id(settings, resource_group, gallery, image)

    def fetch() -> list[VersionLifecycle]:
        return [
            _lifecycle_of(v, f"{iid}/versions/{v.name}")
            for v in client.gallery_image_versions.list_by_gallery_image(
                resource_group, gallery, image
            )
        ]

    return absent_as_none(f"list versions of {gallery}/{image}", fetch) or []


def begin_update_version_lifecycle(
    settings: Settings,
    version: str,
    tags: Mapping[str, str],
    exclude_from_latest: bool,
    target_regions: tuple[RegionFlags, ...],
) -> None:
    """One PATCH: the whole tag set and ``excludeFromLatest``, globally and in every target
    region (a region's own flag wins over the global one, so each is set explicitly). The
    regions are sent as read, with only the flag changed, so no replica is added or removed.
    Nothing waits; the version is ``Updating`` until Azure has applied it.
    """
    arm = ResourceId.parse(version, "version_id", VERSION_TYPE)
    gallery, image, name = arm.names
    regions = [
        {
            "name": r.name,
            **({"regionalReplicaCount": r.replica_count} if r.replica_count else {}),
            **({"storageAccountType": r.storage_account_type} if r.storage_account_type else {}),
            "excludeFromLatest": exclude_from_latest,
        }
        for r in target_regions
    ]
    profile: dict[str, Any] = {"excludeFromLatest": exclude_from_latest}
    if regions:
        profile["targetRegions"] = regions
    body = {"tags": dict(tags), "properties": {"publishingProfile": profile}}
    client = client_for(settings, arm.subscription_id)
    with azure_call(f"update lifecycle of image version {gallery}/{image}/{name}"):
        client.gallery_image_versions.begin_update(
            arm.resource_group,
            gallery,
            image,
            name,
            models.GalleryImageVersionUpdate(body),
            polling=False,
        )
