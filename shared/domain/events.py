"""Events the app accepts, how each is judged, and the idempotency keys they map to.

Every event comes from outside, so :func:`classify_event` validates it before anything acts:
a known type the caller expects, well-formed data, and every subscription it names (its
topic, the resources in its data) among the configured ones. The answer is
:class:`Accepted` (typed data) or :class:`Ignored` (the reason, for the log); it never raises
for bad input. Event Grid delivers at least once, so the same marketplace version must map to
one queued build: :func:`marketplace_request_key` is the build queue's key for it (the queue
drops a key it has seen; build ids are the queue's own).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from shared import names
from shared.domain.naming import build_id_from_resource_name
from shared.domain.resources import (
    GALLERY_VERSION_TYPE,
    VM_TYPE,
    parse_resource_id,
    subscription_of,
)
from shared.domain.versions import ImageVersion
from shared.errors import InputError

MARKETPLACE_IMAGE_PUBLISHED: Final = names.EG_MARKETPLACE_IMAGE_PUBLISHED
SYSPREP_FINISHED: Final = names.EG_SYSPREP_FINISHED
IMAGE_VERSION_STAGED: Final = names.EG_IMAGE_VERSION_STAGED
RESOURCE_ACTION_SUCCESS: Final = "Microsoft.Resources.ResourceActionSuccess"


def _checked_version(value: str) -> str:
    if ImageVersion.try_parse(value) is None:
        raise ValueError(f"{value!r} is not a Major.Minor.Patch version")
    return value


def _arm(*types: str) -> Any:
    def check(value: str) -> str:
        parsed = parse_resource_id(value)
        if parsed is None or not any(parsed.is_type(t) for t in types):
            raise ValueError(f"not a {' or '.join(types)} resource id")
        return value

    return AfterValidator(check)


_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
BuildId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
Version = Annotated[str, AfterValidator(_checked_version)]


class _Data(BaseModel):
    """Event data: extra fields are ignored (publishers may add some), required ones checked."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class MarketplaceImagePublishedData(_Data):
    publisher: str = Field(pattern=_NAME)
    offer: str = Field(pattern=_NAME)
    sku: str = Field(pattern=_NAME)
    version: Version
    location: str = Field(pattern=r"^[a-z][a-z0-9]{1,39}$")


class SysprepFinishedData(_Data):
    build_id: BuildId
    vm_id: Annotated[str, _arm(VM_TYPE)]


class ImageVersionStagedData(_Data):
    image: str = Field(pattern=r"^[a-z][a-z0-9-]{1,39}$")
    version: Version
    version_id: Annotated[str, _arm(GALLERY_VERSION_TYPE)]
    build_id: BuildId
    manifest_hash: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class ResourceActionSuccessData(_Data):
    operation_name: str = Field(alias="operationName", min_length=1)
    resource_uri: str = Field(alias="resourceUri", min_length=1)
    subscription_id: str = Field(alias="subscriptionId", min_length=1)
    status: str = Field(min_length=1)


EventData = (
    MarketplaceImagePublishedData
    | SysprepFinishedData
    | ImageVersionStagedData
    | ResourceActionSuccessData
)

DATA_MODELS: Final[Mapping[str, type[EventData]]] = {
    MARKETPLACE_IMAGE_PUBLISHED: MarketplaceImagePublishedData,
    SYSPREP_FINISHED: SysprepFinishedData,
    IMAGE_VERSION_STAGED: ImageVersionStagedData,
    RESOURCE_ACTION_SUCCESS: ResourceActionSuccessData,
}


@dataclass(frozen=True)
class Accepted:
    """A valid event from an allowed subscription.

    ``data`` is the validated data as a plain dict (original field names) plus, for a resource
    action on a VM the factory named, ``vm_name`` and ``build_id``.
    """

    event_type: str
    subject: str
    data: dict[str, Any]
    model: EventData
    subscriptions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ignored:
    """An event refused, and why (logged, never acted on)."""

    reason: str
    event_type: str = ""
    details: tuple[str, ...] = field(default_factory=tuple)


def _field_reasons(exc: ValidationError) -> list[str]:
    reasons = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in ("data", *err.get("loc", ())))
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        reasons.append(f"{path}: {message}")
    return reasons


def classify_event(
    event_type: str | None,
    subject: str | None,
    data: Any,
    allowed_subscriptions: Iterable[str],
    *,
    topic: str | None = None,
    expected: Iterable[str] | None = None,
) -> Accepted | Ignored:
    """Judge one event: Accepted with typed data, or Ignored with the reason.

    ``expected`` limits the types the caller handles (default: all four). Every subscription
    the event names (its topic; the resource ids in its data; ``subscriptionId``) must be in
    ``allowed_subscriptions`` (case-insensitive), and it must name at least one.
    """
    allowed = {s.strip().lower() for s in allowed_subscriptions if s and s.strip()}
    wanted = {t.lower(): t for t in (expected if expected is not None else DATA_MODELS)}
    canonical = {t.lower(): t for t in DATA_MODELS}.get((event_type or "").lower())
    if canonical is None or canonical.lower() not in wanted:
        handled = ", ".join(sorted(wanted.values())) or "none"
        return Ignored(f"event type {event_type!r} is not handled here (handled: {handled})")
    if not isinstance(data, dict):
        return Ignored("data: must be a JSON object", canonical)
    try:
        model = DATA_MODELS[canonical].model_validate(data)
    except ValidationError as exc:
        reasons = _field_reasons(exc)
        return Ignored("; ".join(reasons), canonical, tuple(reasons))

    named: list[tuple[str, str]] = []  # (where, subscription)
    topic_sub = subscription_of(topic)
    if topic_sub:
        named.append(("topic", topic_sub))
    derived: dict[str, Any] = {}
    if isinstance(model, SysprepFinishedData):
        named.append(("data.vm_id", subscription_of(model.vm_id) or ""))
    elif isinstance(model, ImageVersionStagedData):
        named.append(("data.version_id", subscription_of(model.version_id) or ""))
    elif isinstance(model, ResourceActionSuccessData):
        named.append(("data.subscriptionId", model.subscription_id))
        resource = parse_resource_id(model.resource_uri)
        if resource is None:
            return Ignored("data.resourceUri: not an ARM resource id", canonical)
        named.append(("data.resourceUri", resource.subscription_id))
        if model.status.lower() != "succeeded":
            return Ignored(f"data.status: {model.status!r}, not 'Succeeded'", canonical)
        if resource.is_type(VM_TYPE):
            derived["vm_name"] = resource.name
            build_id = build_id_from_resource_name(resource.name)
            if build_id is not None:
                derived["build_id"] = build_id
    if not named:
        return Ignored(
            "the event names no subscription (no topic and no resource id): refused", canonical
        )
    if not allowed:
        return Ignored("no subscription is allowed (ALLOWED_SUBSCRIPTIONS is empty)", canonical)
    foreign = [
        f"{where} is in subscription {sub!r}" for where, sub in named if sub.lower() not in allowed
    ]
    if foreign:
        return Ignored(
            "outside the allowed subscriptions: " + "; ".join(foreign), canonical, tuple(foreign)
        )
    plain = model.model_dump(mode="json", by_alias=True)
    plain.update(derived)
    return Accepted(
        event_type=canonical,
        subject=subject or "",
        data=plain,
        model=model,
        subscriptions=tuple(dict.fromkeys(sub.lower() for _, sub in named)),
    )


# -- idempotency ----------------------------------------------------------------------------


def marketplace_request_key(publisher: str, offer: str, sku: str, version: str) -> str:
    """The build queue's idempotency key for a marketplace version (case-insensitive)."""
    parts = [p.strip().lower() for p in (publisher, offer, sku, version)]
    if not all(parts):
        raise InputError.single("marketplace", "publisher, offer, sku and version are required")
    key = "marketplace:" + ":".join(parts)
    if len(key) > 128:
        key = f"marketplace:{hashlib.sha256(key.encode()).hexdigest()[:32]}"
    return key


def sysprep_finished_event(
    build_id: str, vm_id: str, *, event_id: str, event_time: datetime
) -> dict[str, Any]:
    """An Event Grid schema ``ImageFactory.SysprepFinished`` event (the sysprep script's body)."""
    if event_time.tzinfo is None or event_time.utcoffset() is None:
        raise InputError.single("event_time", "must be a timezone-aware datetime")
    return {
        "id": event_id,
        "eventType": SYSPREP_FINISHED,
        "subject": f"builds/{build_id}",
        "eventTime": event_time.isoformat(),
        "dataVersion": "1",
        "data": {"build_id": build_id, "vm_id": vm_id},
    }
