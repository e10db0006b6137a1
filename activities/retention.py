"""Retention activities: one Azure call or query each, idempotent, plain dicts in and out.

The retention orchestrator (orchestrators/retention.py) reads the catalogue's policies, lists
each image's versions, reads host pools, session hosts and VMs (what uses which version), lists
tagged leftovers, then deprecates and deletes. A change re-reads its target first (one GET) and
does nothing when it changed since it was planned (a version that became active meanwhile, a
retained VM whose date was moved on); absence is success (someone deleted it meanwhile: 404 or
ARM's 204); Azure refusing a delete (409, e.g. blocked before its end of life) is reported in
the answer, never raised, so one version's refusal never stops the run. Contract:
docs/retention.md.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import azure.durable_functions as df
from pydantic import AwareDatetime, Field

from activities._registry import registered
from activities.build import _Input, parse
from shared import names
from shared.app_catalogue import app_catalogue
from shared.azure import compute, gallery, retention_gateway
from shared.azure.errors import arm_reason
from shared.azure.retention_gateway import GalleryVersion
from shared.domain.catalogue import retention_policy
from shared.domain.resources import (
    MAX_TAG_VALUE,
    TAG_PINNED_RINGS,
    TAG_STATE,
    TAG_STATE_AT,
    TAG_STATE_BY,
    TAG_STATE_REASON,
    tag_value,
)
from shared.domain.versions import VersionState, state_from_tags
from shared.errors import ConflictError
from shared.settings import load_settings

bp = df.Blueprint()
log = logging.getLogger("imagefactory.activities.retention")

APP_PRINCIPAL = "imagefactory"


def _registered(name: str) -> Any:
    return registered(bp, name)


# ---- policies (the catalogue; no Azure call) ---------------------------------------------


class PolicyInput(_Input):
    images: list[str] | None = None


@_registered(names.ACT_RETENTION_POLICY)
def retention_policies(payload: Any) -> dict[str, Any]:
    """Each catalogue image's retention policy, gallery definition and host pools."""
    args = parse(PolicyInput, payload)
    settings = load_settings()
    catalogue = app_catalogue(settings)
    wanted = args.images if args.images is not None else catalogue.names()
    images: list[dict[str, Any]] = []
    unknown: list[str] = []
    for name in wanted:
        image = catalogue.find(name)
        if image is None:
            unknown.append(name)
            continue
        policy = retention_policy(image)
        target = image.gallery
        images.append(
            {
                "image": image.name,
                "resource_group": target.resource_group,
                "gallery": target.gallery_name,
                "definition": target.image_definition,
                "definition_id": gallery.image_definition_id(
                    settings, target.resource_group, target.gallery_name, target.image_definition
                ),
                "policy": {
                    "keep_versions": policy.keep_versions,
                    "backup_days": policy.backup_days,
                    "staged_max_age_days": policy.staged_max_age_days,
                    "delete_failed_at_once": policy.delete_failed_at_once,
                    "deprecation_days": policy.deprecation_days,
                    "retained_vm_days": policy.retained_vm_days,
                    "orphan_min_age_hours": policy.orphan_min_age_hours,
                },
                "host_pools": list(image.host_pools),
                "build_resource_group": image.build.resource_group,
            }
        )
    every_pool = sorted({p for image in catalogue.images for p in image.host_pools})
    build_groups = sorted({i.build.resource_group for i in catalogue.images})
    return {
        "images": images,
        "unknown": unknown,
        "host_pools": every_pool,
        "build_resource_groups": sorted({settings.factory_resource_group, *build_groups}),
        "subscription_id": settings.subscription_id,
    }


# ---- reads ---------------------------------------------------------------------------------


class VersionsInput(_Input):
    resource_group: str = Field(min_length=1)
    gallery: str = Field(min_length=1)
    definition: str = Field(min_length=1)


@_registered(names.ACT_LIST_RETENTION_VERSIONS)
def list_versions(payload: Any) -> dict[str, Any]:
    """Every version of the image definition with state, dates, safety profile, footprint."""
    args = parse(VersionsInput, payload)
    found = retention_gateway.list_versions(
        load_settings(), args.resource_group, args.gallery, args.definition
    )
    if found is None:
        return {"exists": False, "versions": []}
    return {"exists": True, "versions": [v.to_dict() for v in found]}


class HostPoolInput(_Input):
    host_pool: str = Field(min_length=1)


@_registered(names.ACT_LIST_HOST_POOL_USAGE)
def host_pool_usage(payload: Any) -> dict[str, Any]:
    """A host pool's id and the gallery images its ``vmTemplate`` names."""
    args = parse(HostPoolInput, payload)
    pool = retention_gateway.get_host_pool(load_settings(), args.host_pool)
    return {"id": pool.id, "exists": pool.exists, "template_refs": list(pool.template_refs)}


class PoolIdInput(_Input):
    host_pool_id: str = Field(min_length=1)


@_registered(names.ACT_LIST_SESSION_HOST_USAGE)
def session_hosts(payload: Any) -> dict[str, Any]:
    """The VM ids of a host pool's session hosts."""
    args = parse(PoolIdInput, payload)
    vms = retention_gateway.session_host_vms(load_settings(), args.host_pool_id)
    return {"exists": vms is not None, "vms": vms or []}


class GroupInput(_Input):
    subscription_id: str = Field(min_length=1)
    resource_group: str = Field(min_length=1)


@_registered(names.ACT_LIST_VMS)
def list_vms(payload: Any) -> dict[str, Any]:
    """Every VM of a group: image reference (exact version), tags, creation, power state."""
    args = parse(GroupInput, payload)
    vms = retention_gateway.list_vms(load_settings(), args.subscription_id, args.resource_group)
    return {
        "vms": [
            {
                "id": v.id,
                "image_id": v.image_id,
                "exact_version": v.exact_version,
                "tags": dict(v.tags),
                "created": v.created.isoformat() if v.created else None,
                "power_state": v.power_state,
            }
            for v in vms
        ]
    }


@_registered(names.ACT_LIST_LEFTOVERS)
def list_leftovers(payload: Any) -> dict[str, Any]:
    """Disks, snapshots and NICs of a group that carry an ``imagefactory:`` tag."""
    args = parse(GroupInput, payload)
    settings = load_settings()
    found = retention_gateway.list_tagged_disks_and_snapshots(
        settings, args.subscription_id, args.resource_group
    )
    if args.subscription_id.lower() == settings.subscription_id.lower():
        found += retention_gateway.list_tagged_nics(settings, args.resource_group)
    return {
        "resources": [
            {
                "id": r.id,
                "type": r.type,
                "tags": dict(r.tags),
                "created": r.created.isoformat() if r.created else None,
            }
            for r in found
        ]
    }


# ---- changes -------------------------------------------------------------------------------


class ChangeInput(_Input):
    version_id: str = Field(min_length=1)
    expected_state: str | None = None  # the state tag the plan saw (None: no tag)


def _changed(version: GalleryVersion, expected: str | None) -> str | None:
    current = state_from_tags(version.tags)
    if (current.value if current else None) != expected:
        return (
            f"its {TAG_STATE} is now {current.value if current else None!r}, planned with "
            f"{expected!r}: left for the next run"
        )
    return None


class DeprecateInput(ChangeInput):
    end_of_life: AwareDatetime
    at: AwareDatetime
    reason: str = Field(default="retention", max_length=2000)


@_registered(names.ACT_DEPRECATE_VERSION)
def deprecate_version(payload: Any) -> dict[str, Any]:
    """Mark a version deprecated: end of life, excluded from latest, state tags (one PATCH)."""
    args = parse(DeprecateInput, payload)
    settings = load_settings()
    version = retention_gateway.get_version(settings, args.version_id)
    if version is None:
        return {"deprecated": False, "gone": True}
    if state_from_tags(version.tags) is VersionState.DEPRECATED:
        return {"deprecated": True, "already": True}
    changed = _changed(version, args.expected_state)
    if changed:
        return {"deprecated": False, "skipped": changed}
    tags = dict(version.tags)
    for key in (TAG_STATE, TAG_STATE_AT, TAG_STATE_BY, TAG_STATE_REASON):
        for existing in [k for k in tags if k.lower() == key]:
            tags.pop(existing)
    tags[TAG_STATE] = VersionState.DEPRECATED.value
    tags[TAG_STATE_AT] = _iso(args.at)
    tags[TAG_STATE_BY] = APP_PRINCIPAL
    tags[TAG_STATE_REASON] = f"retention: {args.reason}"[:MAX_TAG_VALUE]
    end_of_life = args.end_of_life
    if version.block_deletion_before_end_of_life and version.end_of_life:
        end_of_life = max(end_of_life, version.end_of_life)  # never earlier: never forced
    try:
        retention_gateway.begin_deprecate_version(settings, version, end_of_life, tags)
    except ConflictError as error:
        return {"deprecated": False, "refused": arm_reason(error)}
    log.info("retention: deprecating %s until %s", version.id, end_of_life.isoformat())
    return {"deprecated": True, "end_of_life": end_of_life.isoformat()}


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@_registered(names.ACT_DELETE_VERSION)
def delete_version(payload: Any) -> dict[str, Any]:
    """Start deleting a version (its replicas in every region go with it). Already gone is
    success; a changed state or Azure's refusal is reported, not raised."""
    args = parse(ChangeInput, payload)
    settings = load_settings()
    version = retention_gateway.get_version(settings, args.version_id)
    if version is None:
        return {"deleted": True, "already_gone": True}
    if (version.provisioning_state or "").lower() == "deleting":
        return {"deleted": True, "already_deleting": True}
    changed = _changed(version, args.expected_state)
    if changed:
        return {"deleted": False, "skipped": changed}
    if tag_value(version.tags, TAG_PINNED_RINGS):
        return {"deleted": False, "skipped": "pinned by a ring since it was planned"}
    try:
        started = gallery.begin_delete_image_version(settings, args.version_id)
    except ConflictError as error:
        return {"deleted": False, "refused": arm_reason(error)}
    if not started:
        return {"deleted": True, "already_gone": True}
    log.info("retention: deleting %s", args.version_id)
    return {"deleted": True}


class LeftoverInput(_Input):
    resource_id: str = Field(min_length=1)
    tag: str = Field(min_length=1)
    value: str  # the tag value the plan saw; anything else now: left alone


@_registered(names.ACT_DELETE_LEFTOVER)
def delete_leftover(payload: Any) -> dict[str, Any]:
    """Start deleting a leftover VM, NIC, disk or snapshot if it still carries the tag the plan
    saw (with the same value). Already gone is success."""
    args = parse(LeftoverInput, payload)
    settings = load_settings()
    state = compute.get_resource_state(settings, args.resource_id)
    if not state.exists:
        return {"deleted": True, "already_gone": True}
    if tag_value(state.tags, args.tag) != args.value:
        return {"deleted": False, "skipped": f"its {args.tag} tag changed since it was planned"}
    try:
        started = compute.begin_delete_resource(settings, args.resource_id)
    except ConflictError as error:
        return {"deleted": False, "refused": arm_reason(error)}
    return {"deleted": True, "already_gone": not started}
