"""HTTP: the catalogue's images and where each stands (active, backup, staged per region ring).

``GET /api/images`` lists the catalogue; ``GET /api/images/{image}`` adds the versions by
state and, per target region (the image's rings: where ``latest`` resolves), the version that
``latest`` gives a new session host there. Also the lookups every resource route shares: a
catalogue image (404 unknown, 503 unreadable catalogue) and an image's versions from the
gallery (503 when Azure cannot be read), with their tags for manifests and the audit.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import azure.durable_functions as df

from activities.lifecycle import versions_overview
from shared.azure import gallery
from shared.domain.catalogue import CatalogueImage
from shared.domain.versions import VersionState
from shared.errors import InputError, NotFoundError, SettingsError
from shared.settings import load_settings
from triggers._api import (
    IMAGE_PATTERN,
    Answer,
    ApiError,
    Call,
    Role,
    readable_catalogue,
    route,
    unavailable,
)

bp = df.Blueprint()
log = logging.getLogger("imagefactory.triggers.images")


# ---- lookups shared by the resource routes ----------------------------------------------------


def catalogue_image(name: str, field: str = "image") -> CatalogueImage:
    """The catalogue entry ``name``: 404 naming ``field`` when unknown, 503 when unreadable."""
    try:
        return readable_catalogue().get(name)
    except NotFoundError as exc:
        raise ApiError(404, "ImageNotFound", str(exc), field=field, image=name) from None


def image_exists(params: dict[str, str]) -> None:
    """The route's ``image`` is in the catalogue (404 naming it otherwise)."""
    catalogue_image(params["image"])


def _read_versions(image: CatalogueImage) -> list[gallery.VersionLifecycle]:
    settings = load_settings()
    g = image.gallery
    return gallery.list_version_lifecycles(
        settings, g.resource_group, g.gallery_name, g.image_definition
    )


async def gallery_versions(image: CatalogueImage) -> list[gallery.VersionLifecycle]:
    """The image's gallery versions with tags (a blocking SDK read, off the event loop)."""
    try:
        return await asyncio.to_thread(_read_versions, image)
    except SettingsError:
        raise  # the operator's problem: the route answers 503 AppMisconfigured
    except (InputError, NotFoundError) as exc:
        raise unavailable("AzureUnavailable", f"versions could not be read: {exc}") from None
    except Exception as exc:  # Azure unreachable or throttled: retry later
        log.warning("versions of %s could not be read: %s", image.name, exc)
        raise unavailable("AzureUnavailable", f"versions could not be read: {exc}") from None


async def overview(image: CatalogueImage) -> dict[str, Any]:
    """Every version's state and what ``latest`` resolves to per region."""
    return versions_overview(image, await gallery_versions(image))


def by_state(versions: list[dict[str, Any]], state: VersionState) -> list[str]:
    return [v["version"] for v in versions if v.get("state") == state.value]


# ---- models -----------------------------------------------------------------------------------


class ImageSummary(Answer):
    name: str
    os: str
    workload: str
    owner: str
    description: str
    regions: list[str]
    host_pools: list[str]


class ImageList(Answer):
    images: list[ImageSummary]


class Ring(Answer):
    region: str
    latest: str | None


class ImageDetail(ImageSummary):
    active: str | None
    backup: list[str]
    staged: list[str]
    validated: list[str]
    approved: list[str]
    rings: list[Ring]


def summary(image: CatalogueImage) -> dict[str, Any]:
    return {
        "name": image.name,
        "os": image.os,
        "workload": image.workload,
        "owner": image.owner,
        "description": image.description,
        "regions": [r.name for r in image.target_regions],
        "host_pools": list(image.host_pools),
    }


# ---- routes -----------------------------------------------------------------------------------


@route(
    bp,
    "GET",
    "images",
    role=Role.READER,
    summary="List the catalogue's images",
    tag="images",
    response=ImageList,
)
async def list_images(call: Call) -> dict[str, Any]:
    """Every image of the catalogue with its regions and host pools."""
    return {"images": [summary(i) for i in readable_catalogue().images]}


@route(
    bp,
    "GET",
    "images/{image}",
    role=Role.READER,
    tag="images",
    response=ImageDetail,
    summary="One image: active, backup and staged versions, latest per region ring",
    params={"image": IMAGE_PATTERN},
    errors=(404,),
)
async def get_image(call: Call) -> dict[str, Any]:
    """The image, its versions by state, and per region what ``latest`` resolves to."""
    image = catalogue_image(call.params["image"])
    found = await overview(image)
    versions = found["versions"]
    active = by_state(versions, VersionState.ACTIVE)
    return {
        **summary(image),
        "active": active[-1] if active else None,
        "backup": by_state(versions, VersionState.BACKUP),
        "staged": by_state(versions, VersionState.STAGED),
        "validated": by_state(versions, VersionState.VALIDATED),
        "approved": by_state(versions, VersionState.APPROVED),
        "rings": [{"region": r, "latest": v} for r, v in found["latest"].items()],
    }
