"""HTTP: one gallery version with its build manifest, and what changed between two versions.

- ``GET /api/images/{image}/versions/{version}`` (Reader): the version's state and lifecycle
  tags (as in the versions list) plus its build manifest read back from its tags (``null``
  with ``manifest_error`` when the version has none or it is damaged).
- ``GET /api/images/{image}/versions/{version}/diff?against=X`` (Reader): the manifest diff
  from ``against`` (default: the version's ``previous`` active, else the next lower version)
  to ``version``: base image, catalogue entry, steps and applications (``diff_manifests``).

The list (``GET /api/images/{image}/versions``) stays with the lifecycle routes.
"""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df
from pydantic import Field

from activities.lifecycle import version_summary
from shared.azure.gallery import VersionLifecycle
from shared.domain.manifest import BuildManifest, ManifestDiff, diff_manifests, manifest_from_tags
from shared.domain.versions import ImageVersion
from shared.errors import InputError
from triggers._api import (
    IMAGE_PATTERN,
    VERSION_PATTERN,
    Answer,
    ApiError,
    Body,
    Call,
    Role,
    route,
)
from triggers.images import catalogue_image, gallery_versions, image_exists

bp = df.Blueprint()


class VersionDetail(Answer):
    image: str
    version: str
    state: str | None
    manifest: dict[str, Any] | None
    manifest_error: str | None = None


class DiffQuery(Body):
    against: str | None = Field(
        default=None,
        pattern=VERSION_PATTERN,
        description="the older version (default: the next lower version)",
    )


class VersionDiff(Answer):
    image: str
    old_version: str
    new_version: str
    empty: bool
    base: dict[str, Any] | None
    catalogue_hashes: list[str] | None
    steps_added: list[str]
    steps_removed: list[str]
    steps_changed: list[str]
    steps_reordered: bool
    apps_added: dict[str, str]
    apps_removed: dict[str, str]
    apps_changed: dict[str, list[str]]
    text: str


def _find(
    versions: list[VersionLifecycle], image: str, version: str, field: str
) -> VersionLifecycle:
    for v in versions:
        if v.name == version:
            return v
    raise ApiError(
        404,
        "VersionNotFound",
        f"image {image} has no version {version}",
        field=field,
        image=image,
        version=version,
    )


def _manifest(v: VersionLifecycle) -> tuple[BuildManifest | None, str | None]:
    try:
        return manifest_from_tags(v.tags), None
    except InputError as exc:
        return None, str(exc)
    except (ValueError, KeyError, TypeError) as exc:  # a manifest written by hand, broken
        return None, f"the manifest cannot be read: {exc}"


def diff_json(image: str, diff: ManifestDiff) -> dict[str, Any]:
    return {
        "image": image,
        "old_version": diff.old_version,
        "new_version": diff.new_version,
        "empty": diff.is_empty,
        "base": (
            {"old": diff.base[0].to_dict(), "new": diff.base[1].to_dict()} if diff.base else None
        ),
        "catalogue_hashes": list(diff.catalogue_hashes) if diff.catalogue_hashes else None,
        "steps_added": list(diff.steps_added),
        "steps_removed": list(diff.steps_removed),
        "steps_changed": list(diff.steps_changed),
        "steps_reordered": diff.steps_reordered,
        "apps_added": dict(diff.apps_added),
        "apps_removed": dict(diff.apps_removed),
        "apps_changed": {k: list(v) for k, v in diff.apps_changed.items()},
        "text": diff.render(),
    }


@route(
    bp,
    "GET",
    "images/{image}/versions/{version}",
    role=Role.READER,
    tag="versions",
    summary="One version: state, lifecycle tags and build manifest",
    response=VersionDetail,
    params={"image": IMAGE_PATTERN, "version": VERSION_PATTERN},
    resolve=image_exists,
    errors=(404,),
)
async def get_version(call: Call) -> dict[str, Any]:
    """The version as the versions list shows it, with its build manifest."""
    image = catalogue_image(call.params["image"])
    found = _find(await gallery_versions(image), image.name, call.params["version"], "version")
    manifest, problem = _manifest(found)
    return {
        "image": image.name,
        **version_summary(found),
        "manifest": manifest.to_dict() if manifest else None,
        "manifest_error": problem,
    }


@route(
    bp,
    "GET",
    "images/{image}/versions/{version}/diff",
    role=Role.READER,
    tag="versions",
    summary="What changed between two versions (base, steps, applications)",
    query=DiffQuery,
    response=VersionDiff,
    params={"image": IMAGE_PATTERN, "version": VERSION_PATTERN},
    resolve=image_exists,
    errors=(404, 409),
)
async def diff_versions(call: Call) -> dict[str, Any]:
    """The manifest diff from ``against`` (default: the next lower version) to ``version``."""
    image = catalogue_image(call.params["image"])
    versions = await gallery_versions(image)
    new = _find(versions, image.name, call.params["version"], "version")
    against: str | None = call.query.against
    if against is None:
        mine = ImageVersion.try_parse(new.name)
        lower = sorted(
            (
                (p, v)
                for v in versions
                if (p := ImageVersion.try_parse(v.name)) is not None
                and mine is not None
                and p < mine
            ),
            key=lambda pair: pair[0],
        )
        if not lower:
            raise ApiError(
                404,
                "VersionNotFound",
                f"{image.name} {new.name} has no earlier version; name one in against",
                field="against",
            )
        old = lower[-1][1]
    else:
        old = _find(versions, image.name, against, "against")
    pairs = []
    for v, field in ((old, "against"), (new, "version")):
        manifest, problem = _manifest(v)
        if manifest is None:
            raise ApiError(
                409,
                "NoManifest",
                f"{image.name} {v.name} has no readable build manifest: {problem}",
                field=field,
            )
        pairs.append(manifest)
    diff = diff_manifests(pairs[0], pairs[1])
    return diff_json(image.name, diff)
