"""Ring promotion activities: the ring plan, a pool's template image, a pool's health signals.

Used by ``orchestrators/rings.py``; one Azure call each, plain dicts across the boundary. The
version's state itself changes through the lifecycle's ``set_version_state`` activity.
"""

from __future__ import annotations

from typing import Any, Literal

import azure.durable_functions as df
from pydantic import AwareDatetime, Field

from activities.build import parse
from activities.validation import PoolInput, VersionInput, registrar
from shared import names
from shared.app_catalogue import find_image
from shared.azure import hosts
from shared.azure.gallery import image_version_id
from shared.domain.validation import (
    TAG_RING,
    TAG_RING_SOAK_UNTIL,
    TAG_RING_STATE,
    TAG_RING_VERSION,
    host_health,
)
from shared.errors import NotFoundError
from shared.settings import load_settings

bp = df.Blueprint()
_registered = registrar(bp)


@_registered(names.ACT_RESOLVE_RING_PLAN)
def resolve_ring_plan(payload: Any) -> dict[str, Any]:
    """The image's rings from the catalogue, with each pool's id and the exact version id."""
    args = parse(VersionInput, payload)
    settings = load_settings()
    image = find_image(args.image, settings)
    if not image.rings:
        raise NotFoundError(f"image {args.image!r} has no rings in the catalogue")
    return {
        "image": args.image,
        "version": args.version,
        "version_id": image_version_id(
            settings,
            image.gallery.resource_group,
            image.gallery.gallery_name,
            image.gallery.image_definition,
            args.version,
        ),
        "rings": [
            {
                "name": ring.name,
                "host_pool_ids": [p.resource_id(settings.subscription_id) for p in ring.host_pools],
                "soak_minutes": ring.soak_minutes,
                "gate": ring.gate.model_dump(mode="json"),
            }
            for ring in image.rings
        ],
        "poll_seconds": settings.poll_interval_seconds,
    }


class TemplateInput(PoolInput):
    version_id: str = Field(min_length=1)
    version: str = Field(pattern=r"^\d{1,10}\.\d{1,10}\.\d{1,10}$")
    ring: str = Field(min_length=1, max_length=40)
    soak_until: AwareDatetime


@_registered(names.ACT_SET_RING_HOST_POOL_IMAGE)
def set_ring_host_pool_image(payload: Any) -> dict[str, Any]:
    """Point a ring pool's ``vmTemplate`` at the exact version (new hosts use it from now) and
    mark the pool as soaking that version (ring tags)."""
    args = parse(TemplateInput, payload)
    state = hosts.update_pool(
        load_settings(),
        args.host_pool_id,
        image_version_id=args.version_id,
        tags={
            TAG_RING: args.ring,
            TAG_RING_VERSION: args.version,
            TAG_RING_STATE: "soaking",
            TAG_RING_SOAK_UNTIL: args.soak_until.isoformat(),
        },
    )
    return {
        "host_pool_id": args.host_pool_id,
        "custom_image_id": state.vm_template.get("customImageId"),
    }


class RingStateInput(PoolInput):
    state: Literal["passed", "held"]


@_registered(names.ACT_SET_RING_STATE)
def set_ring_state(payload: Any) -> dict[str, Any]:
    """Record the end of a ring's soak on its pool: passed or held."""
    args = parse(RingStateInput, payload)
    hosts.update_pool(load_settings(), args.host_pool_id, tags={TAG_RING_STATE: args.state})
    return {"state": args.state}


@_registered(names.ACT_GET_RING_CLAIM)
def get_ring_claim(payload: Any) -> dict[str, Any]:
    """The ring tags of a pool (which version it holds, soaking / passed / held, until when)."""
    args = parse(PoolInput, payload)
    pool = hosts.get_host_pool(load_settings(), args.host_pool_id)
    if not pool.exists:
        raise NotFoundError(f"host pool {args.host_pool_id} does not exist")
    wanted = {TAG_RING, TAG_RING_VERSION, TAG_RING_STATE, TAG_RING_SOAK_UNTIL}
    return {"tags": {k: v for k, v in pool.tags.items() if k.lower() in wanted}}


@_registered(names.ACT_GET_RING_HEALTH)
def get_ring_health(payload: Any) -> dict[str, Any]:
    """Every session host of a pool: healthy or not, and why."""
    args = parse(PoolInput, payload)
    found = hosts.list_session_hosts(load_settings(), args.host_pool_id)
    verdicts = [host_health(h.name, h.status, h.health_checks) for h in found]
    return {
        "hosts": len(verdicts),
        "unhealthy": [f"{v.name}: {', '.join(v.problems)}" for v in verdicts if not v.healthy],
    }


class WindowInput(PoolInput):
    since: AwareDatetime
    until: AwareDatetime


@_registered(names.ACT_GET_CONNECTION_COUNTS)
def get_connection_counts(payload: Any) -> dict[str, Any]:
    """Connections to a pool in a window and how many failed (``available: false`` when no
    Log Analytics workspace is configured)."""
    args = parse(WindowInput, payload)
    counts = hosts.connection_counts(load_settings(), args.host_pool_id, args.since, args.until)
    if counts is None:
        return {"available": False, "connections": 0, "failed": 0}
    return {"available": True, "connections": counts.connections, "failed": counts.failed}
