"""Compute Gallery: galleries, image definitions and image versions, replicated over host time.

Serves ``GalleriesOperations``, ``GalleryImagesOperations`` and ``GalleryImageVersionsOperations``
of azure-mgmt-compute (api-version 2026-03-03 and older). An image version is captured from a
generalized (or, for Specialized definitions, any) VM, from a managed disk or snapshot, or from
another gallery version; the captured guest OS (:mod:`emulator.guest`) is kept beside the version
(``store.meta(version_id)["guest"]``) so VMs created from it carry the same apps and state.

Replication runs per target region in host time: the source region finishes with the capture
(``gallery.version.create``), every other region ``gallery.replication.per_region`` later; a
``multiplier`` fault of kind ``replication_slow`` stretches a region and a ``flag`` fault of kind
``replication_fails`` makes it fail (match keys: ``region``, ``gallery``, ``image``, ``version``).
``$expand=ReplicationStatus`` reports each region's state and progress; the create operation
(and ``provisioningState``) ends when every region has. Regions whose replication completed are
listed in ``store.meta(version_id)["regions_ready"]`` (read by the compute module).

Public helpers for other modules: :func:`guest_state_for_version`, :func:`latest_version`,
:func:`effective_exclude_from_latest`, :func:`replicated_to`, :func:`seed_image_version`.
"""

from __future__ import annotations

import calendar
import copy
import functools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from emulator.arm import (
    ArmError,
    Request,
    Response,
    bad_request,
    check_name,
    merge_patch,
    parent_not_found,
    resource_not_found,
)
from emulator.core import Emulator, ScheduledItem
from emulator.events import iso
from emulator.guest import GuestState, marketplace_guest
from emulator.lro import OperationHandle
from emulator.scenario import Scenario, TargetRegionSpec, VersionSeed
from emulator.store import parse_resource_id

GALLERY_TYPE = "Microsoft.Compute/galleries"
IMAGE_TYPE = "Microsoft.Compute/galleries/images"
VERSION_TYPE = "Microsoft.Compute/galleries/images/versions"
VM_TYPE = "Microsoft.Compute/virtualMachines"
DISK_TYPE = "Microsoft.Compute/disks"
SNAPSHOT_TYPE = "Microsoft.Compute/snapshots"
MANAGED_IMAGE_TYPE = "Microsoft.Compute/images"
SHARING_PERMISSIONS = {"private": "Private", "groups": "Groups", "community": "Community"}

GALLERIES_SUB = "/subscriptions/{sub}/providers/Microsoft.Compute/galleries"
GALLERIES = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries"
GALLERY = GALLERIES + "/{gallery}"
IMAGES = GALLERY + "/images"
IMAGE = IMAGES + "/{image}"
VERSIONS = IMAGE + "/versions"
VERSION = VERSIONS + "/{version}"

# api-versions of the GalleryRP the SDKs send (azure-mgmt-compute 39 sends 2026-03-03).
API_VERSIONS = {
    "2019-12-01",
    "2020-09-30",
    "2021-07-01",
    "2021-10-01",
    "2022-01-03",
    "2022-03-03",
    "2022-08-03",
    "2023-07-03",
    "2024-03-03",
    "2025-03-03",
    "2026-03-03",
}
# From this api-version on, new versions default to end of life +6 months and
# safetyProfile.blockDeletionBeforeEndOfLife = true.
EOL_DEFAULT_API = "2026-03-03"

SECURITY_TYPES = {
    "standard": "Standard",
    "trustedlaunch": "TrustedLaunch",
    "trustedlaunchsupported": "TrustedLaunchSupported",
    "confidentialvm": "ConfidentialVM",
    "confidentialvmsupported": "ConfidentialVMSupported",
    "trustedlaunchandconfidentialvmsupported": "TrustedLaunchAndConfidentialVmSupported",
}
STORAGE_TYPES = {
    "standard_lrs": "Standard_LRS",
    "standard_zrs": "Standard_ZRS",
    "premium_lrs": "Premium_LRS",
    "premiumv2_lrs": "PremiumV2_LRS",
}
MAX_REPLICAS = 100
INT32_MAX = 2**31 - 1

GALLERY_NAME_RULE = (
    "The gallery name can contain only English letters, numbers, underscores and periods; it "
    "cannot begin or end with a period and can be up to 80 characters long."
)
IMAGE_NAME_RULE = (
    "The image definition name can contain only English letters, numbers, hyphens, underscores "
    "and periods; it must begin and end with a letter or number and can be up to 80 "
    "characters long."
)

REGION_NAMES = {
    "westeurope": "West Europe",
    "northeurope": "North Europe",
    "eastus": "East US",
    "eastus2": "East US 2",
    "westus": "West US",
    "westus2": "West US 2",
    "westus3": "West US 3",
    "centralus": "Central US",
    "southcentralus": "South Central US",
    "northcentralus": "North Central US",
    "uksouth": "UK South",
    "ukwest": "UK West",
    "francecentral": "France Central",
    "germanywestcentral": "Germany West Central",
    "swedencentral": "Sweden Central",
    "switzerlandnorth": "Switzerland North",
    "norwayeast": "Norway East",
    "eastasia": "East Asia",
    "southeastasia": "Southeast Asia",
    "japaneast": "Japan East",
    "australiaeast": "Australia East",
    "canadacentral": "Canada Central",
    "brazilsouth": "Brazil South",
    "centralindia": "Central India",
}


def norm_region(name: str) -> str:
    """``"West Europe"`` -> ``"westeurope"``."""
    return "".join(str(name).split()).lower()


def display_region(name: str) -> str:
    """The display name Azure answers with (``"westeurope"`` -> ``"West Europe"``)."""
    return REGION_NAMES.get(norm_region(name), str(name))


def version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else -1 for p in name.split("."))


def _add_months(t: datetime, months: int) -> datetime:
    month = t.month - 1 + months
    year = t.year + month // 12
    month = month % 12 + 1
    day = min(t.day, calendar.monthrange(year, month)[1])
    return t.replace(year=year, month=month, day=day)


def _parse_time(value: Any, target: str) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise bad_request(
            f"The value of parameter '{target}' must be an ISO 8601 date-time.", target=target
        )
    text = value.strip()
    try:
        t = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise bad_request(
            f"The value '{value}' of parameter '{target}' is not a valid ISO 8601 date-time.",
            target=target,
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC)


def _tags(body: dict[str, Any], target: str = "tags") -> dict[str, str]:
    raw = body.get("tags")
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise bad_request("The tags must be an object of string values.", target=target)
    if len(raw) > 50:
        raise bad_request("A resource can have at most 50 tags.", target=target)
    return {str(k): str(v) for k, v in raw.items()}


def _location(body: dict[str, Any]) -> str:
    loc = body.get("location")
    if not isinstance(loc, str) or not loc.strip():
        raise ArmError(
            400, "LocationRequired", "The location property is required for this definition."
        )
    return norm_region(loc)


def _properties(body: dict[str, Any], required: bool = True) -> dict[str, Any]:
    props = body.get("properties")
    if props is None and not required:
        return {}
    if not isinstance(props, dict):
        raise bad_request("Required parameter 'properties' is missing (null).", target="properties")
    return props


def _property_change(path: str) -> ArmError:
    return ArmError(
        409, "PropertyChangeNotAllowed", f"Changing property '{path}' is not allowed.", target=path
    )


def _known_regions(emu: Emulator) -> set[str]:
    return {norm_region(r) for r in emu.scenario.regions}


def _check_region(emu: Emulator, region: str, target: str) -> str:
    r = norm_region(region)
    known = _known_regions(emu)
    if known and r not in known:
        raise bad_request(
            f"The region '{region}' is not available for resource type "
            f"'{VERSION_TYPE}'. Available regions: {', '.join(sorted(known))}.",
            code="LocationNotAvailableForResourceType",
            target=target,
        )
    return r


def security_type_of(image: dict[str, Any]) -> str:
    """The SecurityType feature of an image definition (``Standard`` when absent)."""
    for f in image.get("properties", {}).get("features") or []:
        if str(f.get("name", "")).lower() == "securitytype":
            return SECURITY_TYPES.get(str(f.get("value", "")).lower(), str(f.get("value")))
    return "Standard"


# -- replication runtime (emulator-private, beside the version document) -------------------


@dataclass
class RegionReplication:
    region: str  # normalised
    start: datetime
    due: datetime
    fails: bool = False
    state: str = "Replicating"  # Replicating | Completed | Failed
    failed_progress: int = 0
    details: str = ""

    def progress(self, now: datetime) -> int:
        if self.state == "Completed":
            return 100
        if self.state == "Failed":
            return self.failed_progress
        total = (self.due - self.start).total_seconds()
        if now <= self.start or total <= 0:
            return 0
        return max(0, min(99, int(100 * (now - self.start).total_seconds() / total)))


@dataclass
class VersionRuntime:
    """Replication per region, the running operation and what the version was made from."""

    source_field: str
    source_id: str
    regions: dict[str, RegionReplication] = field(default_factory=dict)
    handle: OperationHandle | None = None
    items: list[ScheduledItem] = field(default_factory=list)
    phase: str = "create"  # create | update | idle | delete


def _runtime(emu: Emulator, version_id: str) -> VersionRuntime | None:
    rt = emu.store.meta(version_id).get("gallery")
    return rt if isinstance(rt, VersionRuntime) else None


def _ready_set(emu: Emulator, version_id: str) -> set[str]:
    meta = emu.store.meta(version_id)
    ready = meta.get("regions_ready")
    if not isinstance(ready, set):
        ready = set()
        meta["regions_ready"] = ready
    return ready


def guest_state_for_version(emu: Emulator, version_id: str) -> GuestState | None:
    """A copy of the guest OS captured into a gallery image version (None: unknown/absent)."""
    doc = emu.store.get(version_id)
    if doc is None or str(doc.get("type", "")).lower() != VERSION_TYPE.lower():
        return None
    g = emu.store.meta(version_id).get("guest")
    return g.copy() if isinstance(g, GuestState) else None


def effective_exclude_from_latest(version: dict[str, Any], location: str) -> bool:
    """``excludeFromLatest`` of a version in one region: the region's own flag wins over the
    publishing profile's."""
    profile = version.get("properties", {}).get("publishingProfile", {}) or {}
    for t in profile.get("targetRegions") or []:
        if norm_region(str(t.get("name", ""))) == norm_region(location):
            flag = t.get("excludeFromLatest")
            if flag is not None:
                return bool(flag)
    return bool(profile.get("excludeFromLatest", False))


def replicated_to(emu: Emulator, version: dict[str, Any], location: str) -> bool:
    """Whether a version serves ``location``: its replication there completed (the regions in
    ``store.meta(version_id)["regions_ready"]``) or, for a version this module did not record,
    the region is one of its target regions (any region when it lists none)."""
    loc = norm_region(location)
    ready = emu.store.meta(str(version["id"])).get("regions_ready")
    if isinstance(ready, set | frozenset | list):
        return loc in {norm_region(str(r)) for r in ready}
    targets = version.get("properties", {}).get("publishingProfile", {}).get("targetRegions")
    if not targets:
        return True
    return loc in {norm_region(str(t.get("name", ""))) for t in targets}


def latest_version(emu: Emulator, image_id: str, location: str) -> dict[str, Any] | None:
    """The version an image-definition reference resolves to in ``location``: the highest
    Succeeded version replicated there and not excluded from latest (region flag wins)."""
    loc = norm_region(location)
    best: dict[str, Any] | None = None
    for v in emu.store.list(image_id.rstrip("/") + "/versions", VERSION_TYPE):
        props = v.get("properties", {})
        if props.get("provisioningState") != "Succeeded":
            continue
        if not replicated_to(emu, v, loc):
            continue
        if effective_exclude_from_latest(v, loc):
            continue
        if best is None or version_key(str(v["name"])) > version_key(str(best["name"])):
            best = v
    return best


# -- views --------------------------------------------------------------------------------


def _gallery_id(p: dict[str, str]) -> str:
    return GALLERY.format(**p)


def _image_id(p: dict[str, str]) -> str:
    return IMAGE.format(**p)


def _version_id(p: dict[str, str]) -> str:
    return VERSION.format(**p)


def _replication_status(emu: Emulator, doc: dict[str, Any]) -> dict[str, Any]:
    rt = _runtime(emu, str(doc["id"]))
    now = emu.now()
    summary: list[dict[str, Any]] = []
    states: list[str] = []
    targets = doc["properties"].get("publishingProfile", {}).get("targetRegions") or []
    for t in targets:
        region = norm_region(str(t.get("name", "")))
        rep = rt.regions.get(region) if rt else None
        if rep is None:
            state, progress, details = "Completed", 100, ""
        else:
            state, progress, details = rep.state, rep.progress(now), rep.details
        states.append(state)
        summary.append(
            {
                "region": display_region(region),
                "state": state,
                "details": details,
                "progress": progress,
            }
        )
    if any(s == "Failed" for s in states):
        aggregated = "Failed"
    elif all(s == "Completed" for s in states):
        aggregated = "Completed"
    else:
        aggregated = "InProgress"
    return {"aggregatedState": aggregated, "summary": summary}


def _version_view(emu: Emulator, doc: dict[str, Any], expand: bool) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    profile = out["properties"].setdefault("publishingProfile", {})
    glob_exclude = bool(profile.get("excludeFromLatest", False))
    glob_storage = profile.get("storageAccountType", "Standard_LRS")
    glob_count = profile.get("replicaCount", 1)
    regions = []
    for t in profile.get("targetRegions") or []:
        r = dict(t)
        r["name"] = display_region(str(t.get("name", "")))
        r.setdefault("regionalReplicaCount", glob_count)
        if r.get("regionalReplicaCount") is None:
            r["regionalReplicaCount"] = glob_count
        if not r.get("storageAccountType"):
            r["storageAccountType"] = glob_storage
        if r.get("excludeFromLatest") is None:
            r["excludeFromLatest"] = glob_exclude
        regions.append(r)
    profile["targetRegions"] = regions
    profile["excludeFromLatest"] = glob_exclude
    if expand:
        out["properties"]["replicationStatus"] = _replication_status(emu, doc)
    return out


# -- shared and community galleries (the consumer side of sharing) -------------------------


def visible_shared_galleries(
    emu: Emulator, caller_sub: str, community: bool
) -> list[dict[str, Any]]:
    """Galleries a caller sees as shared galleries (its own, or shared with its subscription or
    tenant through ``Groups``) or as community galleries (``EnableCommunity`` done)."""
    out = []
    sub = caller_sub.lower()
    for g in emu.store.list("/subscriptions", GALLERY_TYPE):
        sharing = g.get("properties", {}).get("sharingProfile") or {}
        permission = str(sharing.get("permissions", "Private"))
        if community:
            if permission == "Community" and (sharing.get("communityGalleryInfo") or {}).get(
                "publicNames"
            ):
                out.append(g)
            continue
        own = (parse_resource_id(str(g["id"])).subscription or "").lower() == sub
        ids = {str(i).lower() for grp in sharing.get("groups") or [] for i in grp.get("ids") or []}
        if own or (permission == "Groups" and (sub in ids or emu.tenant_id.lower() in ids)):
            out.append(g)
    return out


def shared_gallery_named(
    emu: Emulator, caller_sub: str, name: str, community: bool
) -> dict[str, Any] | None:
    """The gallery behind ``/SharedGalleries/{uniqueName}`` or ``/CommunityGalleries/{public}``
    for this caller, or None."""
    low = name.lower()
    for g in visible_shared_galleries(emu, caller_sub, community):
        props = g.get("properties", {})
        if community:
            names = ((props.get("sharingProfile") or {}).get("communityGalleryInfo") or {}).get(
                "publicNames"
            ) or []
            if low in {str(n).lower() for n in names}:
                return g
        elif str((props.get("identifier") or {}).get("uniqueName", "")).lower() == low:
            return g
    return None


def _shared_base(g: dict[str, Any], community: bool) -> str:
    props = g["properties"]
    if community:
        public = props["sharingProfile"]["communityGalleryInfo"]["publicNames"][0]
        return f"/CommunityGalleries/{public}"
    return f"/SharedGalleries/{props['identifier']['uniqueName']}"


def _register_shared_views(emu: Emulator) -> None:
    """SharedGalleries / SharedGalleryImages / SharedGalleryImageVersions (List, Get) and the
    CommunityGallery* Gets: read-only views of galleries shared with the caller."""
    loc_base = "/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}"
    for community, coll in ((False, "sharedGalleries"), (True, "communityGalleries")):
        kind = "CommunityGallery" if community else "SharedGallery"
        op = f"Microsoft.Compute/locations/{coll}/read"
        gal_route = f"{loc_base}/{coll}/{{galleryName}}"
        img_route = gal_route + "/images/{imageName}"
        ver_route = img_route + "/versions/{versionName}"

        def gallery_of(req: Request, community: bool = community) -> dict[str, Any]:
            g = shared_gallery_named(emu, req.params["sub"], req.params["galleryName"], community)
            if g is None:
                raise ArmError(
                    404,
                    "NotFound",
                    f"The gallery '{req.params['galleryName']}' is not shared with the "
                    "subscription or does not exist.",
                )
            return g

        def gallery_view(
            req: Request, g: dict[str, Any], community: bool = community, kind: str = kind
        ) -> dict[str, Any]:
            base = _shared_base(g, community)
            out: dict[str, Any] = {
                "name": base.rsplit("/", 1)[1],
                "location": norm_region(req.params["location"]),
                "identifier": {"uniqueId": base},
                "properties": {"artifactTags": {}},
            }
            if community:
                info = g["properties"]["sharingProfile"]["communityGalleryInfo"]
                out["type"] = "Microsoft.Compute/Locations/CommunityGallery"
                out["properties"]["communityMetadata"] = {
                    k: info.get(k)
                    for k in ("publisherUri", "publisherContact", "eula", "publicNames")
                }
                out["properties"]["disclaimer"] = info.get("eula", "")
            return out

        def image_view(
            req: Request, g: dict[str, Any], img: dict[str, Any], community: bool = community
        ) -> dict[str, Any]:
            p = img["properties"]
            props = {
                k: copy.deepcopy(p[k])
                for k in (
                    "osType",
                    "osState",
                    "endOfLifeDate",
                    "identifier",
                    "recommended",
                    "disallowed",
                    "hyperVGeneration",
                    "features",
                    "purchasePlan",
                    "architecture",
                    "privacyStatementUri",
                    "eula",
                )
                if k in p
            }
            props["artifactTags"] = {}
            return {
                "name": img["name"],
                "location": norm_region(req.params["location"]),
                "identifier": {"uniqueId": f"{_shared_base(g, community)}/Images/{img['name']}"},
                "properties": props,
            }

        def version_view(
            req: Request,
            g: dict[str, Any],
            img: dict[str, Any],
            v: dict[str, Any],
            community: bool = community,
        ) -> dict[str, Any]:
            p = v["properties"]
            profile = p.get("publishingProfile", {})
            os_image = p.get("storageProfile", {}).get("osDiskImage", {})
            return {
                "name": v["name"],
                "location": norm_region(req.params["location"]),
                "identifier": {
                    "uniqueId": f"{_shared_base(g, community)}/Images/{img['name']}"
                    f"/Versions/{v['name']}"
                },
                "properties": {
                    "publishedDate": profile.get("publishedDate"),
                    "endOfLifeDate": profile.get("endOfLifeDate"),
                    "excludeFromLatest": bool(profile.get("excludeFromLatest", False)),
                    "storageProfile": {
                        "osDiskImage": {
                            "diskSizeGB": os_image.get("sizeInGB"),
                            "hostCaching": os_image.get("hostCaching", "ReadWrite"),
                        },
                        "dataDiskImages": [
                            {
                                "lun": d.get("lun"),
                                "diskSizeGB": d.get("sizeInGB"),
                                "hostCaching": d.get("hostCaching"),
                            }
                            for d in p.get("storageProfile", {}).get("dataDiskImages", [])
                        ],
                    },
                    "artifactTags": {},
                },
            }

        def image_or_404(req: Request, g: dict[str, Any]) -> dict[str, Any]:
            img = emu.store.get(f"{g['id']}/images/{req.params['imageName']}")
            if img is None:
                raise ArmError(
                    404, "NotFound", f"The image '{req.params['imageName']}' was not found."
                )
            return img

        def versions(req: Request, img: dict[str, Any]) -> list[dict[str, Any]]:
            return [
                v
                for v in emu.store.list(f"{img['id']}/versions", VERSION_TYPE)
                if v["properties"].get("provisioningState") == "Succeeded"
                and replicated_to(emu, v, req.params["location"])
            ]

        if not community:

            @emu.route("GET", f"{loc_base}/{coll}", op=op)
            def list_shared(req: Request, gallery_view: Any = gallery_view) -> Response:
                items = [
                    gallery_view(req, g)
                    for g in visible_shared_galleries(emu, req.params["sub"], False)
                ]
                return emu.paged(req, items)

            @emu.route("GET", gal_route + "/images", op=op)
            def list_images(
                req: Request, gallery_of: Any = gallery_of, image_view: Any = image_view
            ) -> Response:
                g = gallery_of(req)
                items = [
                    image_view(req, g, i) for i in emu.store.list(f"{g['id']}/images", IMAGE_TYPE)
                ]
                return emu.paged(req, items)

        else:

            @emu.route("GET", gal_route + "/images", op=op)
            def list_community_images(
                req: Request, gallery_of: Any = gallery_of, image_view: Any = image_view
            ) -> Response:
                g = gallery_of(req)
                items = [
                    image_view(req, g, i) for i in emu.store.list(f"{g['id']}/images", IMAGE_TYPE)
                ]
                return emu.paged(req, items)

        @emu.route("GET", gal_route, op=op)
        def get_gallery(
            req: Request, gallery_of: Any = gallery_of, gallery_view: Any = gallery_view
        ) -> Response:
            return Response(200, gallery_view(req, gallery_of(req)))

        @emu.route("GET", img_route, op=op)
        def get_image(
            req: Request,
            gallery_of: Any = gallery_of,
            image_view: Any = image_view,
            image_or_404: Any = image_or_404,
        ) -> Response:
            g = gallery_of(req)
            return Response(200, image_view(req, g, image_or_404(req, g)))

        @emu.route("GET", img_route + "/versions", op=op)
        def list_versions(
            req: Request,
            gallery_of: Any = gallery_of,
            version_view: Any = version_view,
            image_or_404: Any = image_or_404,
            versions: Any = versions,
        ) -> Response:
            g = gallery_of(req)
            img = image_or_404(req, g)
            return emu.paged(req, [version_view(req, g, img, v) for v in versions(req, img)])

        @emu.route("GET", ver_route, op=op)
        def get_version(
            req: Request,
            gallery_of: Any = gallery_of,
            version_view: Any = version_view,
            image_or_404: Any = image_or_404,
            versions: Any = versions,
        ) -> Response:
            g = gallery_of(req)
            img = image_or_404(req, g)
            for v in versions(req, img):
                if v["name"] == req.params["versionName"]:
                    return Response(200, version_view(req, g, img, v))
            raise ArmError(
                404, "NotFound", f"The version '{req.params['versionName']}' was not found."
            )


# -- registration ---------------------------------------------------------------------------


def register(emu: Emulator) -> None:
    emu.latency.register("gallery.image.update", timedelta(seconds=10))
    emu.latency.register("gallery.update", timedelta(seconds=10))
    _register_shared_views(emu)

    def fmt(req: Request) -> dict[str, str]:
        return dict(req.params)

    # -- galleries -----------------------------------------------------------------------
    @emu.route("PUT", GALLERY, op="Microsoft.Compute/galleries/write", api_versions=API_VERSIONS)
    def put_gallery(req: Request) -> Response:
        name = req.params["gallery"]
        check_name(
            name,
            kind=GALLERY_TYPE,
            pattern=r"[A-Za-z0-9_]([A-Za-z0-9_.]*[A-Za-z0-9_])?",
            rule=GALLERY_NAME_RULE,
        )
        body = req.json_object()
        location = _location(body)
        tags = _tags(body)
        props = _properties(body, required=False)
        description = props.get("description")
        if description is not None and not isinstance(description, str):
            raise bad_request("The description must be a string.", target="properties.description")
        gid = _gallery_id(fmt(req))
        existing = emu.store.get(gid)
        if existing is not None:
            if norm_region(str(existing.get("location", ""))) != location:
                raise _location_conflict(existing, location)
            existing["tags"] = tags
            if "description" in props:
                existing["properties"]["description"] = description
            _apply_gallery_options(existing, props)
            return _gallery_update_lro(req, existing)
        doc: dict[str, Any] = {
            "id": gid,
            "name": name,
            "type": GALLERY_TYPE,
            "location": location,
            "tags": tags,
            "properties": {
                "identifier": {"uniqueName": f"{req.params['sub']}-{name.upper()}"},
                "provisioningState": "Creating",
            },
        }
        if description is not None:
            doc["properties"]["description"] = description
        _apply_gallery_options(doc, props)
        emu.store.put(gid, doc)
        return _simple_lro(req, gid, "gallery.create", 201)

    def _apply_gallery_options(doc: dict[str, Any], props: dict[str, Any]) -> None:
        """``sharingProfile`` (permissions, community info; groups change through ``share``)
        and ``softDeletePolicy``, on create and update."""
        sharing = props.get("sharingProfile")
        if isinstance(sharing, dict):
            cur = doc["properties"].setdefault("sharingProfile", {"permissions": "Private"})
            if "permissions" in sharing:
                raw = str(sharing.get("permissions") or "")
                perm = SHARING_PERMISSIONS.get(raw.lower())
                if perm is None:
                    raise bad_request(
                        f"The value '{raw}' of sharingProfile.permissions is not valid. Allowed "
                        "values are 'Private', 'Groups' and 'Community'.",
                        target="properties.sharingProfile.permissions",
                    )
                cur["permissions"] = perm
            info = sharing.get("communityGalleryInfo")
            if isinstance(info, dict):
                kept = {
                    k: v
                    for k, v in info.items()
                    if k not in ("publicNames", "communityGalleryEnabled")
                }
                merge_patch(cur.setdefault("communityGalleryInfo", {}), kept)
        elif sharing is not None:
            raise bad_request(
                "sharingProfile must be an object.", target="properties.sharingProfile"
            )
        soft = props.get("softDeletePolicy")
        if isinstance(soft, dict):
            doc["properties"]["softDeletePolicy"] = {
                "isSoftDeleteEnabled": bool(soft.get("isSoftDeleteEnabled", False))
            }

    def _location_conflict(existing: dict[str, Any], location: str) -> ArmError:
        rid = parse_resource_id(str(existing["id"]))
        return ArmError(
            409,
            "InvalidResourceLocation",
            f"The resource '{existing['name']}' already exists in location "
            f"'{existing.get('location')}' in resource group '{rid.resource_group}'. A resource "
            f"with the same name cannot be created in location '{location}'. Please select a new "
            "resource name.",
        )

    def _simple_lro(req: Request, rid: str, latency: str, status: int) -> Response:
        """Creating/Updating -> Succeeded (or Failed on an injected fault) after ``latency``."""

        def done() -> None:
            d = emu.store.get(rid)
            if d is not None:
                d["properties"]["provisioningState"] = "Succeeded"

        def failed(err: ArmError) -> None:
            d = emu.store.get(rid)
            if d is not None:
                d["properties"]["provisioningState"] = "Failed"

        doc = emu.store.get(rid)
        return emu.begin_lro(
            rid,
            duration=emu.latency.get(latency),
            on_complete=done,
            on_fail=failed,
            op=req.op,
            status_code=status,
            body=copy.deepcopy(doc),
            publish_event=True,
        )

    def _gallery_update_lro(req: Request, doc: dict[str, Any]) -> Response:
        if doc["properties"].get("provisioningState") in ("Deleting",):
            raise _busy(doc, "Deleting")
        doc["properties"]["provisioningState"] = "Updating"
        return _simple_lro(req, str(doc["id"]), "gallery.update", 200)

    @emu.route("PATCH", GALLERY, op="Microsoft.Compute/galleries/write", api_versions=API_VERSIONS)
    def patch_gallery(req: Request) -> Response:
        gid = _gallery_id(fmt(req))
        doc = emu.store.get(gid)
        if doc is None:
            raise resource_not_found(gid)
        body = req.json_object()
        if "tags" in body:
            doc["tags"] = _tags(body)
        props = _properties(body, required=False)
        if "description" in props:
            doc["properties"]["description"] = props["description"]
        _apply_gallery_options(doc, props)
        return _gallery_update_lro(req, doc)

    @emu.route(
        "POST",
        GALLERY + "/share",
        op="Microsoft.Compute/galleries/share/action",
        api_versions=API_VERSIONS,
    )
    def share_gallery(req: Request) -> Response:
        """GallerySharingProfile_Update: Add/Remove groups, Reset, EnableCommunity."""
        gid = _gallery_id(fmt(req))
        doc = emu.store.get(gid)
        if doc is None:
            raise resource_not_found(gid)
        body = req.json_object()
        op = str(body.get("operationType") or "")
        groups = body.get("groups") or []
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            raise bad_request("groups must be a list of objects.", target="groups")
        sharing = doc["properties"].setdefault("sharingProfile", {"permissions": "Private"})
        perm = str(sharing.get("permissions", "Private"))
        current: dict[str, list[str]] = {
            str(g.get("type")): [str(i) for i in g.get("ids") or []]
            for g in sharing.get("groups") or []
        }
        if op.lower() in ("add", "remove"):
            if perm != "Groups":
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    f"The gallery '{doc['name']}' has sharing permission '{perm}'; set "
                    "sharingProfile.permissions to 'Groups' before adding or removing groups.",
                )
            for g in groups:
                kind = str(g.get("type") or "")
                if kind not in ("Subscriptions", "AADTenants"):
                    raise bad_request(
                        f"The group type '{kind}' is not valid. Allowed values are "
                        "'Subscriptions' and 'AADTenants'.",
                        target="groups.type",
                    )
                ids = [str(i) for i in g.get("ids") or []]
                have = current.setdefault(kind, [])
                if op.lower() == "add":
                    have.extend(i for i in ids if i.lower() not in {h.lower() for h in have})
                else:
                    current[kind] = [h for h in have if h.lower() not in {i.lower() for i in ids}]
        elif op.lower() == "reset":
            current = {}
            sharing["permissions"] = "Private"
            sharing.pop("communityGalleryInfo", None)
        elif op.lower() == "enablecommunity":
            info = sharing.get("communityGalleryInfo") or {}
            if perm != "Community" or not info.get("publicNamePrefix"):
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    f"The gallery '{doc['name']}' needs sharingProfile.permissions 'Community' "
                    "and communityGalleryInfo (publisherUri, publisherContact, eula, "
                    "publicNamePrefix) before it can be shared with the community.",
                )
            info["communityGalleryEnabled"] = True
            info["publicNames"] = [f"{info['publicNamePrefix']}-{emu.new_id()}"]
        else:
            raise bad_request(
                f"The value '{op}' of operationType is not valid. Allowed values are 'Add', "
                "'Remove', 'Reset' and 'EnableCommunity'.",
                target="operationType",
            )
        sharing["groups"] = [{"type": k, "ids": v} for k, v in current.items() if v]
        result = {"operationType": op, "groups": copy.deepcopy(sharing["groups"])}
        return emu.begin_lro(
            gid,
            duration=emu.latency.get("gallery.update"),
            on_complete=lambda: result,
            op=req.op,
            status_code=202,
            location_result=True,
            publish_event=True,
        )

    @emu.route("GET", GALLERY, op="Microsoft.Compute/galleries/read", api_versions=API_VERSIONS)
    def get_gallery(req: Request) -> Response:
        gid = _gallery_id(fmt(req))
        doc = emu.store.get(gid)
        if doc is None:
            raise resource_not_found(gid)
        return Response(200, copy.deepcopy(doc))

    @emu.route("GET", GALLERIES, op="Microsoft.Compute/galleries/read", api_versions=API_VERSIONS)
    def list_galleries(req: Request) -> Response:
        prefix = GALLERIES.format(**fmt(req)).rsplit("/providers", 1)[0]
        items = [copy.deepcopy(g) for g in emu.store.list(prefix, GALLERY_TYPE)]
        return emu.paged(req, items)

    @emu.route(
        "GET", GALLERIES_SUB, op="Microsoft.Compute/galleries/read", api_versions=API_VERSIONS
    )
    def list_galleries_sub(req: Request) -> Response:
        items = [
            copy.deepcopy(g)
            for g in emu.store.list(f"/subscriptions/{req.params['sub']}", GALLERY_TYPE)
        ]
        return emu.paged(req, items)

    @emu.route(
        "DELETE", GALLERY, op="Microsoft.Compute/galleries/delete", api_versions=API_VERSIONS
    )
    def delete_gallery(req: Request) -> Response:
        gid = _gallery_id(fmt(req))
        doc = emu.store.get(gid)
        if doc is None:
            return Response(204)
        if emu.store.list(gid + "/images", IMAGE_TYPE):
            raise _nested()
        return _delete_lro(req, doc, "gallery.delete")

    def _nested() -> ArmError:
        return ArmError(
            409,
            "CannotDeleteResource",
            "Can not delete resource before nested resources are deleted.",
        )

    def _delete_lro(req: Request, doc: dict[str, Any], latency: str) -> Response:
        rid = str(doc["id"])
        doc["properties"]["provisioningState"] = "Deleting"

        def done() -> None:
            emu.store.delete(rid)

        def failed(err: ArmError) -> None:
            d = emu.store.get(rid)
            if d is not None:
                d["properties"]["provisioningState"] = "Failed"

        return emu.begin_lro(
            rid,
            duration=emu.latency.get(latency),
            on_complete=done,
            on_fail=failed,
            op=req.op,
            status_code=202,
            publish_event=True,
        )

    def _busy(doc: dict[str, Any], state: str) -> ArmError:
        return ArmError(
            409,
            "OperationNotAllowed",
            f"The operation is not allowed on '{doc['name']}' while its provisioning state is "
            f"'{state}'. Retry after the current operation completes.",
        )

    # -- image definitions ---------------------------------------------------------------
    def _image_properties(props: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
        """Validated image definition properties (PUT semantics)."""
        out: dict[str, Any] = {}
        os_type = str(props.get("osType") or "")
        if os_type.lower() not in ("windows", "linux"):
            raise bad_request(
                f"The value '{props.get('osType')}' of parameter 'osType' is invalid. Allowed "
                "values are 'Windows' and 'Linux'.",
                target="properties.osType",
            )
        out["osType"] = "Windows" if os_type.lower() == "windows" else "Linux"
        os_state = str(props.get("osState") or "")
        if os_state.lower() not in ("generalized", "specialized"):
            raise bad_request(
                f"The value '{props.get('osState')}' of parameter 'osState' is invalid. Allowed "
                "values are 'Generalized' and 'Specialized'.",
                target="properties.osState",
            )
        out["osState"] = os_state.capitalize()
        hv = str(props.get("hyperVGeneration") or "V1").upper()
        if hv not in ("V1", "V2"):
            raise bad_request(
                f"The value '{props.get('hyperVGeneration')}' of parameter 'hyperVGeneration' is "
                "invalid. Allowed values are 'V1' and 'V2'.",
                target="properties.hyperVGeneration",
            )
        out["hyperVGeneration"] = hv
        arch = str(props.get("architecture") or "x64")
        if arch.lower() not in ("x64", "arm64"):
            raise bad_request(
                f"The value '{arch}' of parameter 'architecture' is invalid. Allowed values are "
                "'x64' and 'Arm64'.",
                target="properties.architecture",
            )
        out["architecture"] = "x64" if arch.lower() == "x64" else "Arm64"
        ident = props.get("identifier")
        if not isinstance(ident, dict):
            raise bad_request(
                "Required parameter 'identifier' is missing (null).", target="properties.identifier"
            )
        clean_ident = {}
        for key in ("publisher", "offer", "sku"):
            value = ident.get(key)
            if not isinstance(value, str) or not value.strip():
                raise bad_request(
                    f"Required parameter 'identifier.{key}' is missing (null).",
                    target=f"properties.identifier.{key}",
                )
            if len(value) > 128:
                raise bad_request(
                    f"The value of 'identifier.{key}' can be up to 128 characters long.",
                    target=f"properties.identifier.{key}",
                )
            clean_ident[key] = value
        out["identifier"] = clean_ident
        features = props.get("features")
        if features is not None:
            if not isinstance(features, list):
                raise bad_request("The features must be a list.", target="properties.features")
            clean: list[dict[str, Any]] = []
            for i, f in enumerate(features):
                if not isinstance(f, dict) or not isinstance(f.get("name"), str):
                    raise bad_request(
                        "Each feature needs a 'name' and a 'value'.",
                        target=f"properties.features[{i}]",
                    )
                item = {"name": f["name"], "value": str(f.get("value", ""))}
                if f["name"].lower() == "securitytype":
                    st = SECURITY_TYPES.get(item["value"].lower())
                    if st is None:
                        raise bad_request(
                            f"The value '{item['value']}' of feature 'SecurityType' is invalid. "
                            f"Allowed values are {', '.join(sorted(SECURITY_TYPES.values()))}.",
                            target=f"properties.features[{i}].value",
                        )
                    item["value"] = st
                    if st != "Standard" and hv != "V2":
                        raise bad_request(
                            f"The feature SecurityType '{st}' requires hyperVGeneration 'V2'; the "
                            f"image definition is '{hv}'.",
                            code="InvalidParameter",
                            target="properties.hyperVGeneration",
                        )
                if f.get("startsAtVersion"):
                    item["startsAtVersion"] = str(f["startsAtVersion"])
                clean.append(item)
            out["features"] = clean
        for key in ("description", "eula", "privacyStatementUri", "releaseNoteUri"):
            if props.get(key) is not None:
                if not isinstance(props[key], str):
                    raise bad_request(f"The {key} must be a string.", target=f"properties.{key}")
                out[key] = props[key]
        if props.get("endOfLifeDate") is not None:
            out["endOfLifeDate"] = iso(
                _parse_time(props["endOfLifeDate"], "properties.endOfLifeDate")
            )
        for key in ("recommended", "disallowed", "purchasePlan", "allowUpdateImage"):
            if props.get(key) is not None:
                out[key] = props[key]
        if existing is not None:
            old = existing["properties"]
            for key in ("osType", "osState", "hyperVGeneration", "architecture"):
                if str(old.get(key, "")).lower() != str(out[key]).lower():
                    raise _property_change(f"galleryImage.properties.{key}")
            for key in ("publisher", "offer", "sku"):
                if old["identifier"][key] != out["identifier"][key]:
                    raise _property_change(f"galleryImage.properties.identifier.{key}")
            if security_type_of(existing) != security_type_of({"properties": out}):
                raise _property_change("galleryImage.properties.features")
        return out

    @emu.route(
        "PUT", IMAGE, op="Microsoft.Compute/galleries/images/write", api_versions=API_VERSIONS
    )
    def put_image(req: Request) -> Response:
        name = req.params["image"]
        check_name(
            name,
            kind=IMAGE_TYPE,
            pattern=r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?",
            rule=IMAGE_NAME_RULE,
        )
        p = fmt(req)
        gid = _gallery_id(p)
        iid = _image_id(p)
        gallery = emu.store.get(gid)
        if gallery is None:
            raise parent_not_found(iid)
        body = req.json_object()
        location = _location(body)
        if location != norm_region(str(gallery.get("location", ""))):
            raise bad_request(
                f"The image definition location '{location}' must be the same as the location "
                f"'{gallery.get('location')}' of its gallery '{gallery['name']}'.",
                target="location",
            )
        tags = _tags(body)
        existing = emu.store.get(iid)
        props = _image_properties(_properties(body), existing)
        for other in emu.store.list(gid + "/images", IMAGE_TYPE):
            if existing is not None and other is existing:
                continue
            oi = other["properties"]["identifier"]
            if all(oi[k].lower() == props["identifier"][k].lower() for k in oi):
                raise ArmError(
                    409,
                    "Conflict",
                    f"An image definition with publisher '{oi['publisher']}', offer "
                    f"'{oi['offer']}' and sku '{oi['sku']}' already exists in gallery "
                    f"'{gallery['name']}' ('{other['name']}'). The identifier must be unique "
                    "within a gallery.",
                )
        if existing is not None:
            if existing["properties"].get("provisioningState") == "Deleting":
                raise _busy(existing, "Deleting")
            existing["tags"] = tags
            existing["properties"] = {**props, "provisioningState": "Updating"}
            return _simple_lro(req, iid, "gallery.image.update", 200)
        doc = {
            "id": iid,
            "name": name,
            "type": IMAGE_TYPE,
            "location": location,
            "tags": tags,
            "properties": {**props, "provisioningState": "Creating"},
        }
        emu.store.put(iid, doc)
        return _simple_lro(req, iid, "gallery.image.create", 201)

    @emu.route(
        "PATCH", IMAGE, op="Microsoft.Compute/galleries/images/write", api_versions=API_VERSIONS
    )
    def patch_image(req: Request) -> Response:
        iid = _image_id(fmt(req))
        doc = emu.store.get(iid)
        if doc is None:
            raise resource_not_found(iid)
        if doc["properties"].get("provisioningState") == "Deleting":
            raise _busy(doc, "Deleting")
        body = req.json_object()
        if "tags" in body:
            doc["tags"] = _tags(body)
        props = _properties(body, required=False)
        if props:
            merged = merge_patch(
                copy.deepcopy(doc["properties"]),
                props,
                read_only=frozenset({"provisioningState"}),
            )
            merged.pop("provisioningState", None)
            doc["properties"] = _image_properties(merged, doc)
        doc["properties"]["provisioningState"] = "Updating"
        return _simple_lro(req, iid, "gallery.image.update", 200)

    @emu.route(
        "GET", IMAGE, op="Microsoft.Compute/galleries/images/read", api_versions=API_VERSIONS
    )
    def get_image(req: Request) -> Response:
        iid = _image_id(fmt(req))
        doc = emu.store.get(iid)
        if doc is None:
            raise resource_not_found(iid)
        return Response(200, copy.deepcopy(doc))

    @emu.route(
        "GET", IMAGES, op="Microsoft.Compute/galleries/images/read", api_versions=API_VERSIONS
    )
    def list_images(req: Request) -> Response:
        gid = _gallery_id(fmt(req))
        if not emu.store.exists(gid):
            raise resource_not_found(gid)
        items = [copy.deepcopy(i) for i in emu.store.list(gid + "/images", IMAGE_TYPE)]
        return emu.paged(req, items)

    @emu.route(
        "DELETE", IMAGE, op="Microsoft.Compute/galleries/images/delete", api_versions=API_VERSIONS
    )
    def delete_image(req: Request) -> Response:
        iid = _image_id(fmt(req))
        doc = emu.store.get(iid)
        if doc is None:
            return Response(204)
        if emu.store.list(iid + "/versions", VERSION_TYPE):
            raise _nested()
        return _delete_lro(req, doc, "gallery.image.delete")

    # -- image versions ------------------------------------------------------------------
    vop = "Microsoft.Compute/galleries/images/versions"

    @emu.route("PUT", VERSION, op=f"{vop}/write", api_versions=API_VERSIONS)
    def put_version(req: Request) -> Response:
        p = fmt(req)
        name = p["version"]
        _check_version_name(name)
        iid = _image_id(p)
        vid = _version_id(p)
        image = emu.store.get(iid)
        if image is None:
            raise parent_not_found(vid)
        body = req.json_object()
        location = _location(body)
        if location != norm_region(str(image.get("location", ""))):
            raise bad_request(
                f"The gallery image version location '{location}' must be the same as the "
                f"location '{image.get('location')}' of its gallery image '{image['name']}'.",
                target="location",
            )
        tags = _tags(body)
        props = _properties(body)
        existing = emu.store.get(vid)
        source_field, source_id = _source_of(props)
        if existing is not None:
            rt = _runtime(emu, vid)
            if rt is not None and (
                rt.source_field != source_field or rt.source_id.lower() != source_id.lower()
            ):
                raise _property_change(
                    f"galleryImageVersion.properties.storageProfile.{source_field}"
                )
            return _update_version(req, existing, props, tags, replace=True)
        capture = _capture(image, source_field, source_id, location)
        _request_disk_images(props, capture.storage_profile, location)
        src_doc = emu.store.get(source_id) or {}
        if str(src_doc.get("type", "")).lower() == VM_TYPE.lower():
            # A VM's data disks are captured with it.
            capture.storage_profile["dataDiskImages"] = [
                {
                    "lun": d.get("lun"),
                    "hostCaching": d.get("caching", "None"),
                    "sizeInGB": d.get("diskSizeGB"),
                }
                for d in src_doc["properties"]["storageProfile"].get("dataDisks", [])
            ]
        profile = _publishing_profile(req, props.get("publishingProfile"), location, None)
        safety = _safety_profile(req, props.get("safetyProfile"), None)
        if not profile.get("endOfLifeDate") and req.api_version >= EOL_DEFAULT_API:
            profile["endOfLifeDate"] = iso(_add_months(emu.now(), 6))
        doc: dict[str, Any] = {
            "id": vid,
            "name": name,
            "type": VERSION_TYPE,
            "location": location,
            "tags": tags,
            "properties": {
                "publishingProfile": profile,
                "storageProfile": capture.storage_profile,
                "safetyProfile": safety,
                "provisioningState": "Creating",
            },
        }
        emu.store.put(vid, doc)
        emu.store.meta(vid)["guest"] = capture.guest.copy()
        _ready_set(emu, vid)
        rt = VersionRuntime(source_field=source_field, source_id=source_id)
        emu.store.meta(vid)["gallery"] = rt
        now = emu.now()
        capture_time = emu.latency.get("gallery.version.create") * _slow(p, location)
        for t in profile["targetRegions"]:
            region = norm_region(str(t["name"]))
            if region == location:
                start, due = now, now + capture_time
            else:
                start = now + capture_time
                due = start + _replication_time(p, region, t)
            rt.regions[region] = RegionReplication(region, start, due, fails=_fails(p, region))
        resp, handle = emu.begin_manual_lro(
            vid,
            op=req.op,
            status_code=201,
            body=_version_view(emu, doc, False),
            retry_after=60,
            publish_event=True,
        )
        rt.handle = handle
        rt.phase = "create"
        if capture.fail is not None:
            # Azure accepts the request and fails the operation (e.g. Hyper-V generation).
            err = capture.fail
            rt.items.append(
                emu.schedule(
                    timedelta(seconds=5), lambda: _fail_version(vid, err), f"gallery:fail:{vid}"
                )
            )
            for rep in rt.regions.values():
                rep.fails = True
            return resp
        _schedule_regions(vid, rt)
        return resp

    def _request_disk_images(props: dict[str, Any], storage: dict[str, Any], location: str) -> None:
        """The request's ``osDiskImage.hostCaching`` and ``dataDiskImages`` (each from a managed
        disk or snapshot in the version's region), echoed as Azure does."""
        req_storage = props.get("storageProfile") or {}
        os_req = req_storage.get("osDiskImage")
        if isinstance(os_req, dict) and os_req.get("hostCaching"):
            storage["osDiskImage"]["hostCaching"] = str(os_req["hostCaching"])
        images: list[dict[str, Any]] = []
        path = "properties.storageProfile.dataDiskImages"
        raw = req_storage.get("dataDiskImages") or []
        if not isinstance(raw, list):
            raise bad_request("dataDiskImages must be a list.", target=path)
        for item in raw:
            if not isinstance(item, dict) or not isinstance(item.get("lun"), int):
                raise bad_request("Each data disk image needs an integer lun.", target=path)
            src_id = str((item.get("source") or {}).get("id") or "")
            src = emu.store.get("/" + src_id.strip().lstrip("/")) if src_id else None
            if src is None or str(src.get("type", "")).lower() not in (
                DISK_TYPE.lower(),
                SNAPSHOT_TYPE.lower(),
            ):
                raise ArmError(
                    404,
                    "NotFound",
                    f"The source '{src_id}' of data disk image lun {item['lun']} was not found.",
                    target=f"{path}.source.id",
                )
            if norm_region(str(src.get("location", ""))) != location:
                raise bad_request(
                    f"The source '{src_id}' must be in the gallery image version's region "
                    f"'{location}'.",
                    target=f"{path}.source.id",
                )
            images.append(
                {
                    "lun": item["lun"],
                    "hostCaching": str(item.get("hostCaching") or "None"),
                    "sizeInGB": int(src["properties"].get("diskSizeGB") or 0),
                    "source": {"id": str(src["id"])},
                }
            )
        storage["dataDiskImages"] = images

    def _check_version_name(name: str) -> None:
        parts = name.split(".")
        ok = len(parts) == 3 and all(re.fullmatch(r"\d{1,10}", x) for x in parts)
        if not ok or any(int(x) > INT32_MAX for x in parts):
            raise ArmError(
                400,
                "InvalidParameter",
                f"The gallery image version name '{name}' is invalid. The name must be of the "
                "form Major(int32).Minor(int32).Patch(int32), e.g. 1.0.0.",
                target="galleryImageVersionName",
            )

    def _slow(p: dict[str, str], region: str) -> float:
        return emu.faults.multiplier(
            "replication_slow",
            region=region,
            gallery=p["gallery"],
            image=p["image"],
            version=p["version"],
        )

    def _fails(p: dict[str, str], region: str) -> bool:
        return emu.faults.flag(
            "replication_fails",
            region=region,
            gallery=p["gallery"],
            image=p["image"],
            version=p["version"],
        )

    def _replication_time(p: dict[str, str], region: str, target: dict[str, Any]) -> timedelta:
        base = emu.latency.get("gallery.replication.per_region")
        replicas = int(target.get("regionalReplicaCount") or 1)
        # Each extra replica adds a little (copies run mostly in parallel).
        factor = 1.0 + 0.05 * (max(1, min(replicas, MAX_REPLICAS)) - 1)
        return base * factor * _slow(p, region)

    def _schedule_regions(vid: str, rt: VersionRuntime) -> None:
        for rep in rt.regions.values():
            if rep.state != "Replicating":
                continue
            total = rep.due - rep.start
            now = emu.now()
            # Checkpoints so observers see progress between start and end.
            for frac in (1 / 3, 2 / 3):
                at = rep.start + total * frac
                if at > now:
                    rt.items.append(
                        emu.schedule_at(at, lambda: None, f"gallery:replication-progress:{vid}")
                    )
            rt.items.append(
                emu.schedule_at(
                    rep.due,
                    functools.partial(_region_done, vid, rep),
                    f"gallery:replication:{rep.region}:{vid}",
                )
            )

    def _region_done(vid: str, rep: RegionReplication) -> None:
        doc = emu.store.get(vid)
        rt = _runtime(emu, vid)
        if doc is None or rt is None or rt.regions.get(rep.region) is not rep:
            return
        if rep.state != "Replicating":
            return
        if rep.fails:
            rep.state = "Failed"
            rep.failed_progress = 40
            rep.details = (
                f"Replication to region '{display_region(rep.region)}' failed: the copy of the "
                "image to the region's storage did not complete (injected fault)."
            )
        else:
            rep.state = "Completed"
            _ready_set(emu, vid).add(rep.region)
        _maybe_finish(vid)

    def _maybe_finish(vid: str) -> None:
        doc = emu.store.get(vid)
        rt = _runtime(emu, vid)
        if doc is None or rt is None or rt.phase not in ("create", "update"):
            return
        if any(r.state == "Replicating" for r in rt.regions.values()):
            return
        failed = [r for r in rt.regions.values() if r.state == "Failed"]
        handle = rt.handle
        rt.handle = None
        rt.phase = "idle"
        if failed:
            doc["properties"]["provisioningState"] = "Failed"
            err = ArmError(
                500,
                "ReplicationJobsNotCompleted",
                "Replication job not completed at region: "
                + ", ".join(f"'{display_region(r.region)}'" for r in failed)
                + ". "
                + failed[0].details,
            )
            if handle is not None:
                handle.fail(err)
            return
        injected = handle.injected_failure if handle is not None else None
        if injected is not None:
            doc["properties"]["provisioningState"] = "Failed"
            handle.fail(injected)  # type: ignore[union-attr]
            return
        doc["properties"]["provisioningState"] = "Succeeded"
        if handle is not None:
            handle.succeed()

    def _fail_version(vid: str, err: ArmError) -> None:
        doc = emu.store.get(vid)
        rt = _runtime(emu, vid)
        if doc is None or rt is None or rt.phase not in ("create", "update"):
            return
        for rep in rt.regions.values():
            if rep.state == "Replicating":
                rep.state = "Failed"
                rep.details = err.message
        doc["properties"]["provisioningState"] = "Failed"
        handle = rt.handle
        rt.handle = None
        rt.phase = "idle"
        if handle is not None:
            handle.fail(err)

    def _cancel_items(rt: VersionRuntime) -> None:
        for item in rt.items:
            item.cancel()
        rt.items.clear()

    def _source_of(props: dict[str, Any]) -> tuple[str, str]:
        storage = props.get("storageProfile")
        if not isinstance(storage, dict):
            raise bad_request(
                "Required parameter 'storageProfile' is missing (null).",
                target="properties.storageProfile",
            )
        source = storage.get("source") or {}
        os_image = storage.get("osDiskImage") or {}
        os_source = (os_image.get("source") or {}) if isinstance(os_image, dict) else {}
        found: list[tuple[str, str]] = []
        if isinstance(source, dict):
            if source.get("virtualMachineId"):
                found.append(("source.virtualMachineId", str(source["virtualMachineId"])))
            if source.get("id"):
                found.append(("source.id", str(source["id"])))
            if source.get("communityGalleryImageId"):
                raise bad_request(
                    "Community gallery sources are not supported by the emulator.",
                    target="properties.storageProfile.source.communityGalleryImageId",
                )
        if isinstance(os_source, dict):
            if os_source.get("id"):
                found.append(("osDiskImage.source.id", str(os_source["id"])))
            if os_source.get("uri") or os_source.get("storageAccountId"):
                raise bad_request(
                    "VHD (storage account) sources are not supported by the emulator; use a "
                    "managed disk or snapshot.",
                    target="properties.storageProfile.osDiskImage.source",
                )
        if not found:
            raise bad_request(
                "The gallery image version needs a source: storageProfile.source."
                "virtualMachineId, storageProfile.source.id or storageProfile.osDiskImage.source."
                "id.",
                target="properties.storageProfile.source",
            )
        if len(found) > 1:
            raise bad_request(
                "Only one source may be given: "
                + ", ".join(f"storageProfile.{f}" for f, _ in found)
                + " were all specified.",
                target="properties.storageProfile",
            )
        fld, sid = found[0]
        return fld, "/" + sid.strip().lstrip("/")

    @dataclass
    class _Capture:
        guest: GuestState
        storage_profile: dict[str, Any]
        fail: ArmError | None = None

    def _capture(
        image: dict[str, Any], source_field: str, source_id: str, location: str
    ) -> _Capture:
        from emulator.compute import guest_of, vm_runtime

        target = f"properties.storageProfile.{source_field}"
        dprops = image["properties"]
        src = emu.store.get(source_id)
        if src is None:
            raise ArmError(
                404,
                "NotFound",
                f"The source '{source_id}' was not found. The entity was not found in this Azure "
                "location.",
                target=target,
            )
        stype = str(src.get("type", "")).lower()
        src_loc = norm_region(str(src.get("location", "")))
        if src_loc != location:
            raise bad_request(
                f"The source '{source_id}' is in region '{src_loc}'; it must be in the gallery "
                f"image version's region '{location}'.",
                target=target,
            )
        allowed = {
            "source.virtualMachineId": {VM_TYPE.lower()},
            "source.id": {VM_TYPE.lower(), VERSION_TYPE.lower(), MANAGED_IMAGE_TYPE.lower()},
            "osDiskImage.source.id": {DISK_TYPE.lower(), SNAPSHOT_TYPE.lower()},
        }[source_field]
        if stype not in allowed:
            raise bad_request(
                f"The resource '{source_id}' of type '{src.get('type')}' cannot be used as "
                f"storageProfile.{source_field}.",
                target=target,
            )
        state = str(src.get("properties", {}).get("provisioningState", "Succeeded"))
        if state not in ("Succeeded",):
            raise ArmError(
                409,
                "OperationNotAllowed",
                f"The source '{source_id}' cannot be captured while its provisioning state is "
                f"'{state}'.",
                target=target,
            )
        fail: ArmError | None = None
        os_state = str(dprops.get("osState", "Generalized"))
        def_hv = str(dprops.get("hyperVGeneration", "V1"))
        def_sec = security_type_of(image)
        size_gb = 127
        os_disk_image: dict[str, Any] = {"hostCaching": "ReadWrite"}
        if stype == VM_TYPE.lower():
            rt = vm_runtime(emu, source_id)
            guest = guest_of(emu, source_id)
            if rt is None or guest is None:
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    f"The virtual machine '{source_id}' has no OS disk to capture.",
                    target=target,
                )
            vm_state = "Generalized" if rt.generalized else "Specialized"
            if vm_state != os_state:
                raise ArmError(
                    400,
                    "BadRequest",
                    f"The resource with id '{src['id']}' has a different OS state "
                    f"['{vm_state}'] than the parent gallery image OS state ['{os_state}'].",
                    target=target,
                )
            vm_sec = str(
                (src.get("properties", {}).get("securityProfile") or {}).get("securityType")
                or ("TrustedLaunch" if rt.trusted_launch else "Standard")
            )
            if vm_sec.lower() == "trustedlaunch" and def_sec == "Standard":
                raise ArmError(
                    400,
                    "BadRequest",
                    f"The resource with id '{src['id']}' has security type 'TrustedLaunch', "
                    "which the parent gallery image (security type 'Standard') does not support. "
                    "Use an image definition with the SecurityType feature "
                    "'TrustedLaunchSupported' or 'TrustedLaunch'.",
                    target=target,
                )
            if rt.hyper_v_generation.upper() != def_hv.upper():
                fail = ArmError(
                    409,
                    "Conflict",
                    f"The resource with id '{src['id']}' has a different Hypervisor generation "
                    f"['{rt.hyper_v_generation}'] than the parent gallery image Hypervisor "
                    f"generation ['{def_hv}'].",
                )
            os_disk = src.get("properties", {}).get("storageProfile", {}).get("osDisk", {})
            size_gb = int(os_disk.get("diskSizeGB") or guest.disk_size_gb)
            captured = guest.copy()
            source_block = {"virtualMachineId": str(src["id"])}
            if source_field == "source.id":
                source_block = {"id": str(src["id"])}
            storage: dict[str, Any] = {"source": source_block}
        elif stype == MANAGED_IMAGE_TYPE.lower():
            g = emu.store.meta(source_id).get("guest")
            captured = g.copy() if isinstance(g, GuestState) else GuestState()
            iprops = src.get("properties", {})
            img_os = iprops.get("storageProfile", {}).get("osDisk", {})
            if str(img_os.get("osState", "Generalized")) != os_state:
                raise ArmError(
                    400,
                    "BadRequest",
                    f"The resource with id '{src['id']}' has a different OS state "
                    f"['{img_os.get('osState')}'] than the parent gallery image OS state "
                    f"['{os_state}'].",
                    target=target,
                )
            img_hv = str(iprops.get("hyperVGeneration") or "V1")
            if img_hv.upper() != def_hv.upper():
                fail = ArmError(
                    409,
                    "Conflict",
                    f"The resource with id '{src['id']}' has a different Hypervisor generation "
                    f"['{img_hv}'] than the parent gallery image Hypervisor generation "
                    f"['{def_hv}'].",
                )
            size_gb = int(img_os.get("diskSizeGB") or captured.disk_size_gb)
            storage = {"source": {"id": str(src["id"])}}
        elif stype == VERSION_TYPE.lower():
            g = emu.store.meta(source_id).get("guest")
            captured = g.copy() if isinstance(g, GuestState) else GuestState()
            parent = parse_resource_id(source_id).parent
            pimage = emu.store.get(parent) if parent else None
            if pimage is not None:
                pp = pimage["properties"]
                if str(pp.get("osType")) != str(dprops.get("osType")):
                    raise bad_request(
                        f"The source version's OS type '{pp.get('osType')}' differs from the "
                        f"image definition's '{dprops.get('osType')}'.",
                        target=target,
                    )
                if str(pp.get("hyperVGeneration")) != def_hv:
                    fail = ArmError(
                        409,
                        "Conflict",
                        f"The resource with id '{src['id']}' has a different Hypervisor "
                        f"generation ['{pp.get('hyperVGeneration')}'] than the parent gallery "
                        f"image Hypervisor generation ['{def_hv}'].",
                    )
            size_gb = int(
                src["properties"].get("storageProfile", {}).get("osDiskImage", {}).get("sizeInGB")
                or captured.disk_size_gb
            )
            storage = {"source": {"id": str(src["id"])}}
        else:
            g = emu.store.meta(source_id).get("guest")
            captured = g.copy() if isinstance(g, GuestState) else GuestState()
            sprops = src.get("properties", {})
            disk_os = sprops.get("osType")
            if disk_os and str(disk_os).lower() != str(dprops.get("osType", "")).lower():
                raise bad_request(
                    f"The source disk's OS type '{disk_os}' differs from the image definition's "
                    f"'{dprops.get('osType')}'.",
                    target=target,
                )
            disk_hv = str(sprops.get("hyperVGeneration") or def_hv)
            if disk_hv.upper() != def_hv.upper():
                fail = ArmError(
                    409,
                    "Conflict",
                    f"The resource with id '{src['id']}' has a different Hypervisor generation "
                    f"['{disk_hv}'] than the parent gallery image Hypervisor generation "
                    f"['{def_hv}'].",
                )
            size_gb = int(sprops.get("diskSizeGB") or captured.disk_size_gb)
            os_disk_image["source"] = {"id": str(src["id"])}
            storage = {}
        if str(captured.os_type).lower() != str(dprops.get("osType", "Windows")).lower() and (
            stype == VM_TYPE.lower()
        ):
            raise bad_request(
                f"The source's OS type '{captured.os_type}' differs from the image definition's "
                f"'{dprops.get('osType')}'.",
                target=target,
            )
        os_disk_image["sizeInGB"] = size_gb
        storage["osDiskImage"] = os_disk_image
        storage["dataDiskImages"] = []
        return _Capture(captured, storage, fail)

    def _publishing_profile(
        req: Request, raw: Any, location: str, old: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Validated publishing profile; ``old`` (on update) supplies what is not given."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise bad_request(
                "The publishingProfile must be an object.", target="properties.publishingProfile"
            )
        base = copy.deepcopy(old) if old else {}
        out: dict[str, Any] = base
        if "replicaCount" in raw and raw["replicaCount"] is not None:
            out["replicaCount"] = _replicas(raw["replicaCount"], "publishingProfile.replicaCount")
        out.setdefault("replicaCount", 1)
        if raw.get("storageAccountType") is not None:
            out["storageAccountType"] = _storage_type(
                raw["storageAccountType"], "publishingProfile.storageAccountType"
            )
        out.setdefault("storageAccountType", "Standard_LRS")
        if raw.get("excludeFromLatest") is not None:
            if not isinstance(raw["excludeFromLatest"], bool):
                raise bad_request(
                    "excludeFromLatest must be true or false.",
                    target="properties.publishingProfile.excludeFromLatest",
                )
            out["excludeFromLatest"] = raw["excludeFromLatest"]
        out.setdefault("excludeFromLatest", False)
        if "endOfLifeDate" in raw:
            if raw["endOfLifeDate"] is None:
                out.pop("endOfLifeDate", None)
            else:
                eol = _parse_time(
                    raw["endOfLifeDate"], "properties.publishingProfile.endOfLifeDate"
                )
                if old is None and eol <= emu.now():
                    raise bad_request(
                        f"The end of life date '{raw['endOfLifeDate']}' must be in the future.",
                        target="properties.publishingProfile.endOfLifeDate",
                    )
                out["endOfLifeDate"] = iso(eol)
        if raw.get("replicationMode") is not None:
            if str(raw["replicationMode"]) not in ("Full", "Shallow"):
                raise bad_request(
                    "replicationMode must be 'Full' or 'Shallow'.",
                    target="properties.publishingProfile.replicationMode",
                )
            out["replicationMode"] = raw["replicationMode"]
        if "targetRegions" in raw and raw["targetRegions"] is not None:
            regions = raw["targetRegions"]
            if not isinstance(regions, list) or not regions:
                raise bad_request(
                    "targetRegions must be a non-empty list.",
                    target="properties.publishingProfile.targetRegions",
                )
            seen: set[str] = set()
            clean: list[dict[str, Any]] = []
            for i, t in enumerate(regions):
                tgt = f"properties.publishingProfile.targetRegions[{i}]"
                if not isinstance(t, dict) or not isinstance(t.get("name"), str):
                    raise bad_request("Each target region needs a 'name'.", target=tgt + ".name")
                region = _check_region(emu, t["name"], tgt + ".name")
                if region in seen:
                    raise bad_request(
                        f"The region '{t['name']}' is listed more than once in targetRegions.",
                        target=tgt + ".name",
                    )
                seen.add(region)
                item: dict[str, Any] = {"name": region}
                if t.get("regionalReplicaCount") is not None:
                    item["regionalReplicaCount"] = _replicas(
                        t["regionalReplicaCount"], tgt + ".regionalReplicaCount"
                    )
                if t.get("storageAccountType") is not None:
                    item["storageAccountType"] = _storage_type(
                        t["storageAccountType"], tgt + ".storageAccountType"
                    )
                if t.get("excludeFromLatest") is not None:
                    if not isinstance(t["excludeFromLatest"], bool):
                        raise bad_request(
                            "excludeFromLatest must be true or false.",
                            target=tgt + ".excludeFromLatest",
                        )
                    item["excludeFromLatest"] = t["excludeFromLatest"]
                if t.get("encryption") is not None:
                    item["encryption"] = t["encryption"]
                clean.append(item)
            if location not in seen:
                raise bad_request(
                    f"The gallery image version's region '{location}' must be one of the target "
                    "regions.",
                    target="properties.publishingProfile.targetRegions",
                )
            out["targetRegions"] = clean
        if not out.get("targetRegions"):
            out["targetRegions"] = [{"name": location}]
        if old is None:
            out["publishedDate"] = emu.now_iso()
        return out

    def _replicas(value: Any, target: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request(f"{target} must be an integer.", target=f"properties.{target}")
        if not 1 <= value <= MAX_REPLICAS:
            raise bad_request(
                f"{target} must be between 1 and {MAX_REPLICAS}; got {value}.",
                target=f"properties.{target}",
            )
        return value

    def _storage_type(value: Any, target: str) -> str:
        st = STORAGE_TYPES.get(str(value).lower())
        if st is None:
            raise bad_request(
                f"The value '{value}' of parameter '{target}' is invalid. Allowed values are "
                f"{', '.join(sorted(STORAGE_TYPES.values()))}.",
                target=f"properties.{target}",
            )
        return st

    def _safety_profile(req: Request, raw: Any, old: dict[str, Any] | None) -> dict[str, Any]:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise bad_request(
                "The safetyProfile must be an object.", target="properties.safetyProfile"
            )
        out = dict(old) if old else {}
        for key in ("allowDeletionOfReplicatedLocations", "blockDeletionBeforeEndOfLife"):
            if raw.get(key) is not None:
                if not isinstance(raw[key], bool):
                    raise bad_request(
                        f"{key} must be true or false.", target=f"properties.safetyProfile.{key}"
                    )
                out[key] = raw[key]
        out.setdefault("allowDeletionOfReplicatedLocations", True)
        out.setdefault("blockDeletionBeforeEndOfLife", req.api_version >= EOL_DEFAULT_API)
        out["reportedForPolicyViolation"] = False
        out["policyViolations"] = []
        return out

    def _update_version(
        req: Request,
        doc: dict[str, Any],
        props: dict[str, Any],
        tags: dict[str, str] | None,
        replace: bool,
    ) -> Response:
        vid = str(doc["id"])
        rt = _runtime(emu, vid)
        state = str(doc["properties"].get("provisioningState"))
        location = norm_region(str(doc.get("location", "")))
        old_profile = doc["properties"].get("publishingProfile", {})
        if state in ("Creating", "Updating", "Deleting"):
            if replace and state != "Deleting":
                new_profile = _publishing_profile(
                    req, props.get("publishingProfile"), location, old_profile
                )
                if _same_regions(old_profile, new_profile):
                    # An idempotent retry of the request already in progress.
                    return Response(200, _version_view(emu, doc, False))
            raise _busy(doc, state)
        new_profile = _publishing_profile(
            req, props.get("publishingProfile"), location, old_profile
        )
        safety = _safety_profile(
            req, props.get("safetyProfile"), doc["properties"].get("safetyProfile")
        )
        old_regions = {norm_region(str(t["name"])) for t in old_profile.get("targetRegions", [])}
        new_regions = {norm_region(str(t["name"])) for t in new_profile["targetRegions"]}
        removed = old_regions - new_regions
        added = new_regions - old_regions
        if rt is not None:
            # A failed replication is retried by the next update of the version.
            added |= {r for r, rep in rt.regions.items() if rep.state == "Failed"} & new_regions
        if removed and not safety.get("allowDeletionOfReplicatedLocations", True):
            raise ArmError(
                409,
                "OperationNotAllowed",
                "Removing the replicated region(s) "
                + ", ".join(f"'{r}'" for r in sorted(removed))
                + f" from gallery image version '{doc['name']}' is not allowed because "
                "safetyProfile.allowDeletionOfReplicatedLocations is false.",
            )
        if tags is not None:
            doc["tags"] = tags
        doc["properties"]["publishingProfile"] = new_profile
        doc["properties"]["safetyProfile"] = safety
        if rt is None:
            rt = VersionRuntime(source_field="", source_id="")
            emu.store.meta(vid)["gallery"] = rt
        ready = _ready_set(emu, vid)
        for r in removed:
            rt.regions.pop(r, None)
            ready.discard(r)
        now = emu.now()
        p = fmt(req)
        for t in new_profile["targetRegions"]:
            region = norm_region(str(t["name"]))
            if region in added:
                ready.discard(region)
                due = now + _replication_time(p, region, t)
                rt.regions[region] = RegionReplication(region, now, due, fails=_fails(p, region))
        doc["properties"]["provisioningState"] = "Updating"
        if added:
            resp, handle = emu.begin_manual_lro(
                vid,
                op=req.op,
                status_code=200,
                body=_version_view(emu, doc, False),
                retry_after=60,
                publish_event=True,
            )
            rt.handle = handle
            rt.phase = "update"
            _schedule_regions(vid, rt)
            return resp

        def done() -> None:
            d = emu.store.get(vid)
            if d is not None and d["properties"].get("provisioningState") == "Updating":
                d["properties"]["provisioningState"] = "Succeeded"

        def failed(err: ArmError) -> None:
            d = emu.store.get(vid)
            if d is not None:
                d["properties"]["provisioningState"] = "Failed"

        return emu.begin_lro(
            vid,
            duration=emu.latency.get("gallery.version.update"),
            on_complete=done,
            on_fail=failed,
            op=req.op,
            status_code=200,
            body=_version_view(emu, doc, False),
            retry_after=60,
            publish_event=True,
        )

    def _same_regions(a: dict[str, Any], b: dict[str, Any]) -> bool:
        def key(p: dict[str, Any]) -> set[str]:
            return {norm_region(str(t["name"])) for t in p.get("targetRegions", [])}

        return key(a) == key(b)

    @emu.route("PATCH", VERSION, op=f"{vop}/write", api_versions=API_VERSIONS)
    def patch_version(req: Request) -> Response:
        vid = _version_id(fmt(req))
        doc = emu.store.get(vid)
        if doc is None:
            raise resource_not_found(vid)
        body = req.json_object()
        props = _properties(body, required=False)
        if props.get("storageProfile") is not None:
            rt = _runtime(emu, vid)
            fld, sid = _source_of(props)
            if rt is not None and (rt.source_field != fld or rt.source_id.lower() != sid.lower()):
                raise _property_change(f"galleryImageVersion.properties.storageProfile.{fld}")
        tags = _tags(body) if "tags" in body else None
        return _update_version(req, doc, props, tags, replace=False)

    @emu.route("GET", VERSION, op=f"{vop}/read", api_versions=API_VERSIONS)
    def get_version(req: Request) -> Response:
        vid = _version_id(fmt(req))
        doc = emu.store.get(vid)
        if doc is None:
            raise resource_not_found(vid)
        expand = req.query.get("$expand", "")
        if expand and expand.lower() not in ("replicationstatus", "uefisettings"):
            raise bad_request(
                f"The value '{expand}' of parameter '$expand' is invalid. Allowed values are "
                "'ReplicationStatus' and 'UefiSettings'.",
                target="$expand",
            )
        return Response(200, _version_view(emu, doc, expand.lower() == "replicationstatus"))

    @emu.route("GET", VERSIONS, op=f"{vop}/read", api_versions=API_VERSIONS)
    def list_versions(req: Request) -> Response:
        iid = _image_id(fmt(req))
        if not emu.store.exists(iid):
            raise resource_not_found(iid)
        items = [
            _version_view(emu, v, False) for v in emu.store.list(iid + "/versions", VERSION_TYPE)
        ]
        return emu.paged(req, items)

    @emu.route("DELETE", VERSION, op=f"{vop}/delete", api_versions=API_VERSIONS)
    def delete_version(req: Request) -> Response:
        vid = _version_id(fmt(req))
        doc = emu.store.get(vid)
        if doc is None:
            return Response(204)
        profile = doc["properties"].get("publishingProfile", {})
        safety = doc["properties"].get("safetyProfile", {})
        eol_text = profile.get("endOfLifeDate")
        if safety.get("blockDeletionBeforeEndOfLife") and eol_text:
            eol = _parse_time(eol_text, "endOfLifeDate")
            if eol > emu.now():
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    f"Gallery image version '{doc['name']}' cannot be deleted before its end of "
                    f"life date '{eol_text}' because safetyProfile.blockDeletionBeforeEndOfLife "
                    "is true. Set blockDeletionBeforeEndOfLife to false or wait until the end of "
                    "life date.",
                )
        rt = _runtime(emu, vid)
        if rt is not None:
            _cancel_items(rt)
            handle = rt.handle
            rt.handle = None
            rt.phase = "delete"
            if handle is not None:
                handle.fail(
                    ArmError(
                        409,
                        "OperationPreempted",
                        f"The operation on gallery image version '{doc['name']}' was preempted "
                        "by a delete of the version.",
                    )
                )
        _ready_set(emu, vid).clear()
        return _delete_lro(req, doc, "gallery.version.delete")

    # -- seeding, reports ----------------------------------------------------------------
    def seed(scenario: Scenario) -> None:
        for g in scenario.galleries:
            sub = g.subscription or scenario.default_subscription
            gid = GALLERY.format(sub=sub, rg=g.resource_group, gallery=g.name)
            emu.store.put(
                gid,
                {
                    "id": gid,
                    "name": g.name,
                    "type": GALLERY_TYPE,
                    "location": norm_region(g.location),
                    "tags": {},
                    "properties": {
                        "identifier": {"uniqueName": f"{sub}-{g.name.upper()}"},
                        "provisioningState": "Succeeded",
                    },
                },
            )
            for im in g.images:
                iid = f"{gid}/images/{im.name}"
                props: dict[str, Any] = {
                    "osType": im.os_type,
                    "osState": im.os_state,
                    "hyperVGeneration": im.hyper_v_generation,
                    "architecture": "x64",
                    "identifier": {"publisher": im.publisher, "offer": im.offer, "sku": im.sku},
                    "provisioningState": "Succeeded",
                }
                if im.security_type:
                    st = SECURITY_TYPES.get(im.security_type.lower(), im.security_type)
                    props["features"] = [{"name": "SecurityType", "value": st}]
                if im.description:
                    props["description"] = im.description
                emu.store.put(
                    iid,
                    {
                        "id": iid,
                        "name": im.name,
                        "type": IMAGE_TYPE,
                        "location": norm_region(g.location),
                        "tags": {},
                        "properties": props,
                    },
                )
        seeds = [
            VersionSeed(
                gallery=g.name,
                image=im.name,
                resource_group=g.resource_group,
                subscription=g.subscription,
                **v.model_dump(),
            )
            for g in scenario.galleries
            for im in g.images
            for v in im.versions
        ]
        # The older place for seeded versions, still read: extensions.gallery_versions.
        raw = scenario.extensions.get("gallery_versions") or []
        errors: list[str] = []
        for i, item in enumerate(raw if isinstance(raw, list) else [raw]):
            try:
                seeds.append(VersionSeed.model_validate(item))
            except ValidationError as e:
                errors += [
                    f"extensions.gallery_versions.{i}."
                    f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                    for err in e.errors()
                ]
        if errors:
            raise ValueError(f"scenario is invalid: {'; '.join(errors)}")
        for s in seeds:
            seed_image_version(emu, s, scenario)

    emu.add_seeder(seed)
    emu.add_report_section("gallery", lambda: gallery_report(emu))


def seed_image_version(
    emu: Emulator, seed: VersionSeed, scenario: Scenario | None = None
) -> dict[str, Any]:
    """Create a Succeeded, fully replicated version at once (scenario seeding; under the lock).

    Raises ValueError when the image definition is not there or the version already is."""
    sc = scenario or emu.scenario
    sub = seed.subscription or sc.default_subscription
    iid = IMAGE.format(sub=sub, rg=seed.resource_group, gallery=seed.gallery, image=seed.image)
    image = emu.store.get(iid)
    if image is None:
        raise ValueError(
            f"scenario is invalid: gallery version {seed.version}: image definition {iid} is "
            "not in the scenario's galleries"
        )
    vid = f"{iid}/versions/{seed.version}"
    if emu.store.exists(vid):
        raise ValueError(f"scenario is invalid: gallery version {vid} is seeded twice")
    location = norm_region(str(image.get("location", "")))
    targets: dict[str, bool | None] = {}
    for r in seed.regions or [location]:
        if isinstance(r, TargetRegionSpec):
            targets[norm_region(r.name)] = r.exclude_from_latest
        else:
            targets.setdefault(norm_region(r), None)
    if location not in targets:
        targets = {location: None, **targets}
    regions = list(targets)
    parts = seed.base.split(":")
    dprops = image["properties"]
    guest = marketplace_guest(
        parts[0], parts[1], parts[2], parts[3], os_type=str(dprops.get("osType", "Windows"))
    )
    for app in seed.apps:
        guest.apps[app] = "latest"
    guest.sysprepped = str(dprops.get("osState")) == "Generalized"
    profile: dict[str, Any] = {
        "targetRegions": [
            {"name": r, **({} if flag is None else {"excludeFromLatest": flag})}
            for r, flag in targets.items()
        ],
        "replicaCount": 1,
        "excludeFromLatest": seed.exclude_from_latest,
        "storageAccountType": "Standard_LRS",
        "publishedDate": emu.now_iso(),
    }
    if seed.end_of_life is not None:
        eol = seed.end_of_life
        if eol.tzinfo is None:
            eol = eol.replace(tzinfo=UTC)
        profile["endOfLifeDate"] = iso(eol.astimezone(UTC))
    doc = {
        "id": vid,
        "name": seed.version,
        "type": VERSION_TYPE,
        "location": location,
        "tags": dict(seed.tags),
        "properties": {
            "publishingProfile": profile,
            "storageProfile": {
                "osDiskImage": {"sizeInGB": guest.disk_size_gb, "hostCaching": "ReadWrite"},
                "dataDiskImages": [],
            },
            "safetyProfile": {
                "allowDeletionOfReplicatedLocations": True,
                "reportedForPolicyViolation": False,
                "policyViolations": [],
                "blockDeletionBeforeEndOfLife": seed.block_deletion_before_end_of_life,
            },
            "provisioningState": "Succeeded",
        },
    }
    emu.store.put(vid, doc)
    meta = emu.store.meta(vid)
    meta["guest"] = guest
    meta["regions_ready"] = set(regions)
    now = emu.now()
    rt = VersionRuntime(source_field="seed", source_id=seed.base, phase="idle")
    for r in regions:
        rt.regions[r] = RegionReplication(r, now, now, state="Completed")
    meta["gallery"] = rt
    return doc


def gallery_report(emu: Emulator) -> dict[str, Any]:
    """Versions per state, replications in flight or failed, deletions blocked by end of life."""
    versions = emu.store.list("/subscriptions", VERSION_TYPE)
    states: dict[str, int] = {}
    replicating: list[dict[str, Any]] = []
    failed: list[str] = []
    now = emu.now()
    for v in versions:
        state = str(v["properties"].get("provisioningState"))
        states[state] = states.get(state, 0) + 1
        rt = _runtime(emu, str(v["id"]))
        if rt is None:
            continue
        for rep in rt.regions.values():
            if rep.state == "Replicating":
                replicating.append(
                    {"version": v["id"], "region": rep.region, "progress": rep.progress(now)}
                )
            elif rep.state == "Failed":
                failed.append(f"{v['id']} @ {rep.region}")
    return {
        "galleries": len(emu.store.list("/subscriptions", GALLERY_TYPE)),
        "imageDefinitions": len(emu.store.list("/subscriptions", IMAGE_TYPE)),
        "imageVersions": len(versions),
        "versionStates": states,
        "replicating": replicating,
        "failedReplications": failed,
    }
