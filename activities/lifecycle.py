"""Version lifecycle activities: one Azure call each, idempotent, plain dicts in and out.

``set_version_state`` is the one way a version's state changes (a contract shared with the
validation capability, docs/lifecycle.md): it reads the version, applies the pure
``lifecycle.transition`` and writes the tags and ``excludeFromLatest`` (global and per region) in
one PATCH; a refused change is a PermanentError carrying the refusal. A retry of a write that
already landed (same target state, actor and time in the tags) answers the first result.
The others list an image's versions with the ``latest`` each region resolves to, read and set a
host pool's ``vmTemplate`` image, and publish a lifecycle event.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from activities._registry import registered
from activities.build import parse
from shared import names
from shared.app_catalogue import find_image
from shared.azure import avd, eventgrid, gallery
from shared.domain.catalogue import CatalogueImage
from shared.domain.lifecycle import (
    Action,
    Refusal,
    VersionView,
    already_applied,
    event_type_of,
    excluded_from_latest,
    lifecycle_tags,
    resolve_latest,
    target_of,
    template_image,
    template_with_image,
    transition,
)
from shared.domain.resources import (
    TAG_BACKUP_UNTIL,
    TAG_CHANGE_TICKET,
    TAG_REQUESTED_BY,
    TAG_STATE_AT,
    TAG_STATE_BY,
    TAG_STATE_PREVIOUS,
    TAG_STATE_REASON,
    tag_problems,
    tag_value,
)
from shared.domain.versions import ImageVersion, VersionState, state_from_tags
from shared.errors import NotFoundError, PermanentError, TemporaryError
from shared.settings import Settings, load_settings

bp = df.Blueprint()
log = logging.getLogger("imagefactory.activities.lifecycle")

_BUSY = frozenset({"creating", "updating", "deleting"})
_VERSION = r"^\d{1,10}\.\d{1,10}\.\d{1,10}$"


def _registered(
    name: str,
) -> Callable[[Callable[[Any], dict[str, Any]]], Callable[[Any], dict[str, Any]]]:
    return registered(bp, name)


class _Input(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


def version_id_of(settings: Settings, image: CatalogueImage, version: str) -> str:
    g = image.gallery
    return gallery.image_version_id(
        settings, g.resource_group, g.gallery_name, g.image_definition, version
    )


def version_summary(v: gallery.VersionLifecycle) -> dict[str, Any]:
    """One version as the lifecycle shows it (HTTP, orchestrators, the demo)."""
    state = state_from_tags(v.tags)
    return {
        "version": v.name,
        "id": v.id,
        "state": state.value if state else None,
        "provisioning_state": v.provisioning_state,
        "excluded_by_region": v.excluded_by_region(),
        "state_at": tag_value(v.tags, TAG_STATE_AT),
        "state_by": tag_value(v.tags, TAG_STATE_BY),
        "state_reason": tag_value(v.tags, TAG_STATE_REASON),
        "previous": tag_value(v.tags, TAG_STATE_PREVIOUS),
        "change_ticket": tag_value(v.tags, TAG_CHANGE_TICKET),
        "requested_by": tag_value(v.tags, TAG_REQUESTED_BY),
        "backup_until": tag_value(v.tags, TAG_BACKUP_UNTIL),
    }


def versions_overview(
    image: CatalogueImage, found: list[gallery.VersionLifecycle]
) -> dict[str, Any]:
    """Every version (numeric order) with its state, and what ``latest`` resolves to where."""
    ordered = sorted(found, key=lambda v: ImageVersion.try_parse(v.name) or ImageVersion(0, 0, 0))
    views = [
        VersionView(v.name, state_from_tags(v.tags), v.provisioning_state, v.excluded_by_region())
        for v in ordered
    ]
    regions = [r.name for r in image.target_regions]
    return {
        "image": image.name,
        "versions": [version_summary(v) for v in ordered],
        "latest": {r: resolve_latest(views, r) for r in regions},
        "host_pools": list(image.host_pools),
        "lifecycle": image.lifecycle.model_dump(mode="json"),
    }


# ---- set_version_state ------------------------------------------------------------------


class SetStateInput(_Input):
    image: str = Field(min_length=1, max_length=64)
    version: str = Field(pattern=_VERSION)
    action: Action
    actor: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=1000)
    change_ticket: str | None = Field(default=None, max_length=200)
    at: AwareDatetime
    requester: str | None = Field(default=None, max_length=200)


@_registered(names.ACT_SET_VERSION_STATE)
def set_version_state(payload: Any) -> dict[str, Any]:
    """Apply one lifecycle action to a version: tags and ``excludeFromLatest`` in one PATCH."""
    args = parse(SetStateInput, payload)
    settings = load_settings()
    image = find_image(args.image, settings)
    vid = version_id_of(settings, image, args.version)
    found = gallery.get_version_lifecycle(settings, vid)
    if not found.exists:
        raise NotFoundError(f"image {args.image} has no version {args.version}")
    result = {"image": args.image, "version": args.version}
    if already_applied(found.tags, args.action, args.actor, args.at):
        previous = tag_value(found.tags, TAG_STATE_PREVIOUS)
        return {**result, "state": target_of(args.action).value, "previous": previous}
    if (found.provisioning_state or "").lower() in _BUSY:
        raise TemporaryError(
            f"version {args.version} of {args.image} is {found.provisioning_state}: its state "
            "changes once that operation has finished",
            retry_after=30,
        )
    requester = args.requester or tag_value(found.tags, TAG_REQUESTED_BY)
    change = transition(state_from_tags(found.tags), args.action, args.actor, requester=requester)
    if isinstance(change, Refusal):
        raise PermanentError(f"version {args.version} of {args.image}: {change.text}")
    backup_until = None
    if change.state is VersionState.BACKUP:
        backup_until = args.at + timedelta(days=image.lifecycle.backup_days)
    tags = lifecycle_tags(
        found.tags,
        change,
        args.at,
        reason=args.reason or None,
        change_ticket=args.change_ticket,
        backup_until=backup_until,
    )
    problems = tag_problems(tags)
    if problems:
        raise PermanentError(
            f"version {args.version}: its lifecycle tags break Azure's tag rules: "
            + "; ".join(str(p) for p in problems)
        )
    gallery.begin_update_version_lifecycle(
        settings, vid, tags, excluded_from_latest(change.state), found.target_regions
    )
    log.info(
        "%s %s: %s -> %s by %s", args.image, args.version, change.previous, change.state, args.actor
    )
    return {**result, "state": change.state.value, "previous": change.previous.value}


# ---- reads ------------------------------------------------------------------------------


class ImageInput(_Input):
    image: str = Field(min_length=1, max_length=64)


@_registered(names.ACT_LIST_IMAGE_VERSIONS)
def list_image_versions(payload: Any) -> dict[str, Any]:
    """Every version of the image with its state, and ``latest`` per target region."""
    args = parse(ImageInput, payload)
    settings = load_settings()
    image = find_image(args.image, settings)
    g = image.gallery
    found = gallery.list_version_lifecycles(
        settings, g.resource_group, g.gallery_name, g.image_definition
    )
    return versions_overview(image, found)


class HostPoolInput(_Input):
    host_pool: str = Field(min_length=1, max_length=1000)


@_registered(names.ACT_GET_HOST_POOL_TEMPLATE)
def get_host_pool_template(payload: Any) -> dict[str, Any]:
    """A host pool's id, ``vmTemplate`` and the image it deploys (by id or unique name)."""
    args = parse(HostPoolInput, payload)
    pool = avd.get_host_pool(load_settings(), args.host_pool)
    return {**pool.to_dict(), "image": template_image(pool.vm_template)}


class SetHostPoolImageInput(_Input):
    host_pool_id: str = Field(min_length=1, max_length=1000)
    vm_template: str | None = Field(default=None, max_length=100_000)
    version_id: str = Field(min_length=1, max_length=1000)


@_registered(names.ACT_SET_HOST_POOL_IMAGE)
def set_host_pool_image(payload: Any) -> dict[str, Any]:
    """Point the host pool's ``vmTemplate`` (as read by get_host_pool_template) at exactly
    ``version_id``; no call when it already does."""
    args = parse(SetHostPoolImageInput, payload)
    if (template_image(args.vm_template) or "").lower() == args.version_id.lower():
        return {"host_pool_id": args.host_pool_id, "image": args.version_id, "changed": False}
    updated = template_with_image(args.vm_template, args.version_id)
    avd.set_host_pool_template(load_settings(), args.host_pool_id, updated)
    return {"host_pool_id": args.host_pool_id, "image": args.version_id, "changed": True}


# ---- events -----------------------------------------------------------------------------


class LifecycleEventInput(_Input):
    image: str = Field(min_length=1, max_length=64)
    version: str = Field(pattern=_VERSION)
    state: VersionState
    previous: VersionState | None = None
    actor: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=1000)
    change_ticket: str | None = Field(default=None, max_length=200)
    at: AwareDatetime
    ring: str | None = Field(default=None, max_length=64)


def lifecycle_event_data(args: LifecycleEventInput) -> dict[str, Any]:
    """The one schema of every ``ImageFactory.ImageVersion<State>`` event (docs/events.md)."""
    data: dict[str, Any] = {
        "image": args.image,
        "version": args.version,
        "state": args.state.value,
        "previous": args.previous.value if args.previous else None,
        "actor": args.actor,
        "reason": args.reason,
        "change_ticket": args.change_ticket,
        "at": args.at.isoformat(),
    }
    if args.ring is not None:
        data["ring"] = args.ring
    return data


@_registered(names.ACT_PUBLISH_LIFECYCLE_EVENT)
def publish_lifecycle_event(payload: Any) -> dict[str, Any]:
    """Publish ``ImageFactory.ImageVersion<State>``; the event id is derived from the change,
    so a retried publish is one event to a subscriber that de-duplicates by id."""
    args = parse(LifecycleEventInput, payload)
    event_type = event_type_of(args.state)
    subject = f"images/{args.image}/versions/{args.version}"
    key = f"{subject}/{args.state.value}/{args.at.isoformat()}"
    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"imagefactory:{key}"))
    published = eventgrid.publish(
        load_settings(), event_type, subject, lifecycle_event_data(args), event_id=event_id
    )
    return {"published": published, "event_type": event_type, "event_id": event_id}
