"""HTTP: the recent lifecycle transitions of every image (who changed what, when, why, ticket).

``GET /api/audit?image=&since=&top=`` (Reader) answers the last transition of each gallery
version, newest first, read from the versions' lifecycle tags (``imagefactory:state``,
``state-at``, ``state-by``, ``state-reason``, ``previous``, ``change-ticket``): the tags are
the record Azure keeps with the version itself, so the answer needs no store of its own. The
full history of every transition is in the ``ImageFactory.ImageVersion*`` events (docs/events.md).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

import azure.durable_functions as df
from pydantic import AwareDatetime, BeforeValidator, Field

from activities.lifecycle import version_summary
from shared.domain.versions import ImageVersion
from triggers._api import IMAGE_PATTERN, Answer, Body, Call, Role, readable_catalogue, route
from triggers.images import catalogue_image, gallery_versions

bp = df.Blueprint()


def _iso_text(value: Any) -> Any:
    """``since`` is an ISO 8601 text (pydantic would also take a number of seconds)."""
    if value is not None and not (isinstance(value, str) and _ISO.match(value)):
        raise ValueError("an ISO 8601 date and time with a zone, e.g. 2026-06-01T08:00:00Z")
    return value


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


class AuditQuery(Body):
    image: str | None = Field(default=None, pattern=IMAGE_PATTERN)
    since: Annotated[AwareDatetime | None, BeforeValidator(_iso_text)] = Field(
        default=None, description="only transitions at or after this time (ISO 8601 with zone)"
    )
    top: int = Field(default=100, ge=1, le=1000)


class Transition(Answer):
    image: str
    version: str
    state: str | None
    previous: str | None
    at: str | None
    by: str | None
    reason: str | None
    change_ticket: str | None
    requested_by: str | None


class AuditLog(Answer):
    transitions: list[Transition]


def _at(text: Any) -> datetime | None:
    try:
        value = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


@route(
    bp,
    "GET",
    "audit",
    role=Role.READER,
    tag="audit",
    query=AuditQuery,
    response=AuditLog,
    summary="Recent lifecycle transitions (from the versions' lifecycle tags)",
    errors=(404,),
)
async def audit(call: Call) -> dict[str, Any]:
    """The last transition of each version of every image (or ``image``), newest first."""
    q: AuditQuery = call.query
    if q.image is not None:
        images = [catalogue_image(q.image)]
    else:
        images = list(readable_catalogue().images)
    rows: list[tuple[datetime | None, dict[str, Any]]] = []
    for image in images:
        for v in await gallery_versions(image):
            s = version_summary(v)
            if s["state"] is None:
                continue  # not a version the factory manages
            at = _at(s["state_at"])
            if q.since is not None and (at is None or at < q.since):
                continue
            rows.append(
                (
                    at,
                    {
                        "image": image.name,
                        "version": s["version"],
                        "state": s["state"],
                        "previous": s["previous"],
                        "at": s["state_at"],
                        "by": s["state_by"],
                        "reason": s["state_reason"],
                        "change_ticket": s["change_ticket"],
                        "requested_by": s["requested_by"],
                    },
                )
            )
    # Newest first; one change touches several versions at once (active and backup): the
    # newer version first.
    rows.sort(
        key=lambda r: (
            r[0].timestamp() if r[0] else 0.0,
            ImageVersion.try_parse(r[1]["version"]) or ImageVersion(0, 0, 0),
        ),
        reverse=True,
    )
    return {"transitions": [row for _, row in rows[: q.top]]}
