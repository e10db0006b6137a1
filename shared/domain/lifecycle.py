"""The version lifecycle: which action moves a gallery version from which state to which.

Pure rules, no I/O. A version's state lives in its ``imagefactory:state`` tag
(:class:`shared.domain.versions.VersionState`); every change is an :class:`Action` applied by
:func:`transition`, which answers a :class:`Transition` or a :class:`Refusal` naming the current
state and the actions it allows. :func:`lifecycle_tags` writes the result back as tags (state,
when, who, why, change ticket, previous state, backup end), and only an ``active`` version is
included in ``latest`` (:func:`excluded_from_latest`). Contract: docs/lifecycle.md.

::

    staged --start_validation--> validating --pass_validation--> validated
    validating --fail_validation--> failed
    validated --approve--> approved;  validated --reject / expire_approval--> rejected
    approved --activate--> active --demote_to_backup--> backup --reactivate--> active
                           active --roll_back--> rolled-back
    backup / deprecated --reactivate--> active (a rollback target)
    (most states) --deprecate--> deprecated --delete--> deleted
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from shared.domain.resources import (
    MAX_TAG_VALUE,
    TAG_BACKUP_UNTIL,
    TAG_CHANGE_TICKET,
    TAG_STATE,
    TAG_STATE_AT,
    TAG_STATE_BY,
    TAG_STATE_PREVIOUS,
    TAG_STATE_REASON,
    tag_value,
)
from shared.domain.versions import ImageVersion, VersionState

APP_ACTOR: Final = "imagefactory"  # the app itself (timers, builds, automatic decisions)


class Action(StrEnum):
    """What may be done to a version; each has one target state."""

    START_VALIDATION = "start_validation"
    PASS_VALIDATION = "pass_validation"  # noqa: S105 - an action name, not a secret
    FAIL_VALIDATION = "fail_validation"
    APPROVE = "approve"
    AUTO_APPROVE = "auto_approve"  # the catalogue's auto_approve_after_days, by the app
    REJECT = "reject"
    EXPIRE_APPROVAL = "expire_approval"  # no decision within approval_timeout_days
    ACTIVATE = "activate"
    # the version enters one more ring (docs/validation.md): an approved version becomes active
    # in its first ring; an active one stays active as it moves on to the next ring
    PROMOTE_RING = "promote_ring"
    DEMOTE_TO_BACKUP = "demote_to_backup"
    ROLL_BACK = "roll_back"  # the active version is replaced by a rollback
    REACTIVATE = "reactivate"  # a backup or deprecated version becomes active again
    DEPRECATE = "deprecate"
    DELETE = "delete"


S = VersionState

# action -> (states it may be applied in, the state it leads to)
_RULES: Final[Mapping[Action, tuple[frozenset[VersionState], VersionState]]] = {
    Action.START_VALIDATION: (frozenset({S.STAGED}), S.VALIDATING),
    Action.PASS_VALIDATION: (frozenset({S.VALIDATING}), S.VALIDATED),
    Action.FAIL_VALIDATION: (frozenset({S.VALIDATING}), S.FAILED),
    Action.APPROVE: (frozenset({S.VALIDATED}), S.APPROVED),
    Action.AUTO_APPROVE: (frozenset({S.VALIDATED}), S.APPROVED),
    Action.REJECT: (frozenset({S.VALIDATED}), S.REJECTED),
    Action.EXPIRE_APPROVAL: (frozenset({S.VALIDATED}), S.REJECTED),
    Action.ACTIVATE: (frozenset({S.APPROVED}), S.ACTIVE),
    Action.PROMOTE_RING: (frozenset({S.APPROVED, S.ACTIVE}), S.ACTIVE),
    Action.DEMOTE_TO_BACKUP: (frozenset({S.ACTIVE}), S.BACKUP),
    Action.ROLL_BACK: (frozenset({S.ACTIVE}), S.ROLLED_BACK),
    Action.REACTIVATE: (frozenset({S.BACKUP, S.DEPRECATED}), S.ACTIVE),
    Action.DEPRECATE: (
        frozenset(
            {S.STAGED, S.VALIDATED, S.APPROVED, S.FAILED, S.REJECTED, S.BACKUP, S.ROLLED_BACK}
        ),
        S.DEPRECATED,
    ),
    Action.DELETE: (
        frozenset({S.STAGED, S.FAILED, S.REJECTED, S.ROLLED_BACK, S.DEPRECATED}),
        S.DELETED,
    ),
}

# Actions that record a human decision: the approver must not be the build's requester.
_NEEDS_OTHER_THAN_REQUESTER: Final = frozenset({Action.APPROVE})


def target_of(action: Action) -> VersionState:
    """The state ``action`` leads to."""
    return _RULES[action][1]


def allowed_actions(state: VersionState) -> tuple[Action, ...]:
    """Every action allowed from ``state``, in declaration order."""
    return tuple(a for a, (sources, _) in _RULES.items() if state in sources)


@dataclass(frozen=True)
class Transition:
    """An allowed change: ``previous`` -> ``state`` by ``action``, done by ``actor``."""

    previous: VersionState
    state: VersionState
    action: Action
    actor: str


@dataclass(frozen=True)
class Refusal:
    """A refused change: the current state, the action asked for, what is allowed, and why."""

    state: VersionState | None
    action: str
    allowed: tuple[Action, ...]
    reason: str

    @property
    def text(self) -> str:
        allowed = ", ".join(a.value for a in self.allowed) or "nothing"
        current = self.state.value if self.state else "unknown"
        return f"{self.reason} (current state: {current}; allowed: {allowed})"

    def to_json(self) -> dict[str, object]:
        return {
            "state": self.state.value if self.state else None,
            "action": str(self.action),
            "allowed_actions": [a.value for a in self.allowed],
            "reason": self.reason,
        }


def _same_principal(a: str | None, b: str | None) -> bool:
    return bool(a and b) and str(a).strip().lower() == str(b).strip().lower()


def transition(
    state: VersionState | None,
    action: Action | str,
    actor: str,
    *,
    requester: str | None = None,
) -> Transition | Refusal:
    """Apply ``action`` to a version in ``state``; a Refusal says why not and what is allowed.

    ``state`` None is a version without a (readable) state tag: nothing is allowed on it.
    ``requester`` is the build's requester; an approval by that same principal is refused.
    """
    try:
        act = Action(action)
    except ValueError:
        act = None
    if act is None:
        allowed = allowed_actions(state) if state else ()
        known = ", ".join(a.value for a in Action)
        return Refusal(state, str(action), allowed, f"unknown action {action!r} ({known})")
    if not actor or not actor.strip():
        return Refusal(state, act, allowed_actions(state) if state else (), "no actor given")
    if state is None:
        return Refusal(None, act, (), f"the version has no valid {TAG_STATE} tag")
    sources, target = _RULES[act]
    if state not in sources:
        return Refusal(
            state, act, allowed_actions(state), f"cannot {act.value} a version that is {state}"
        )
    if act in _NEEDS_OTHER_THAN_REQUESTER and _same_principal(actor, requester):
        return Refusal(
            state,
            act,
            allowed_actions(state),
            f"{actor} requested this build and may not approve it (four eyes)",
        )
    return Transition(previous=state, state=target, action=act, actor=actor.strip())


# ---- tags and latest ----------------------------------------------------------------------

LIFECYCLE_TAG_KEYS: Final = (
    TAG_STATE,
    TAG_STATE_AT,
    TAG_STATE_BY,
    TAG_STATE_REASON,
    TAG_CHANGE_TICKET,
    TAG_STATE_PREVIOUS,
    TAG_BACKUP_UNTIL,
)
# Tags a version's build must leave free for the lifecycle: the keys above beyond the state
# (written at build time) plus two spare for validation and rings. manifest.py budgets by it.
LIFECYCLE_TAG_RESERVE: Final = len(LIFECYCLE_TAG_KEYS) - 1 + 2


def excluded_from_latest(state: VersionState | None) -> bool:
    """Only an active version is included in ``latest``; everything else is excluded."""
    return state is not VersionState.ACTIVE


def _tag_text(value: str) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_TAG_VALUE else text[: MAX_TAG_VALUE - 3] + "..."


def iso(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("lifecycle times must be timezone-aware")
    return at.astimezone(UTC).isoformat(timespec="seconds")


def lifecycle_tags(
    tags: Mapping[str, str] | None,
    change: Transition,
    at: datetime,
    *,
    reason: str | None = None,
    change_ticket: str | None = None,
    backup_until: datetime | None = None,
) -> dict[str, str]:
    """The version's whole tag set after ``change`` (PATCH replaces ``tags``).

    Every other tag is kept; the lifecycle keys are replaced (matched case-insensitively), the
    change ticket and the backup end kept only when this change gives them.
    """
    ours = {k.lower() for k in LIFECYCLE_TAG_KEYS}
    out = {k: v for k, v in (tags or {}).items() if k.lower() not in ours}
    out[TAG_STATE] = change.state.value
    out[TAG_STATE_AT] = iso(at)
    out[TAG_STATE_BY] = _tag_text(change.actor)
    out[TAG_STATE_PREVIOUS] = change.previous.value
    out[TAG_STATE_REASON] = _tag_text(reason or change.action.value)
    if change_ticket:
        out[TAG_CHANGE_TICKET] = _tag_text(change_ticket)
    if backup_until is not None and change.state is VersionState.BACKUP:
        out[TAG_BACKUP_UNTIL] = iso(backup_until)
    return out


def already_applied(
    tags: Mapping[str, str] | None, action: Action | str, actor: str, at: datetime
) -> bool:
    """Whether ``tags`` already record exactly this change (a retried write): same target
    state, same actor, same time. Lets a repeated activity answer its first result."""
    try:
        target = target_of(Action(action))
    except ValueError:
        return False
    return (
        tag_value(tags, TAG_STATE) == target.value
        and tag_value(tags, TAG_STATE_AT) == iso(at)
        and _same_principal(tag_value(tags, TAG_STATE_BY), actor)
    )


@dataclass(frozen=True)
class VersionView:
    """What the lifecycle needs of one gallery version."""

    name: str
    state: VersionState | None
    provisioning_state: str | None
    excluded: dict[str, bool]  # region -> effective excludeFromLatest (the region's flag wins)

    @property
    def succeeded(self) -> bool:
        return (self.provisioning_state or "").lower() == "succeeded"


def resolve_latest(versions: Iterable[VersionView], region: str) -> str | None:
    """The version ``latest`` resolves to in ``region``: the highest Succeeded version there
    that is not excluded from latest (Azure's rule), or None."""
    best: ImageVersion | None = None
    for v in versions:
        parsed = ImageVersion.try_parse(v.name)
        if parsed is None or not v.succeeded or region not in v.excluded:
            continue
        if v.excluded[region]:
            continue
        if best is None or parsed > best:
            best = parsed
    return str(best) if best else None


def event_type_of(state: VersionState) -> str:
    """``ImageFactory.ImageVersion<State>``: ImageVersionActive, ImageVersionRolledBack ..."""
    words = "".join(part.capitalize() for part in state.value.split("-"))
    return f"ImageFactory.ImageVersion{words}"


# ---- host pool vmTemplate -----------------------------------------------------------------

_MARKETPLACE_KEYS: Final = ("galleryImageOffer", "galleryImagePublisher", "galleryImageSKU")


def template_image(template: str | None) -> str | None:
    """The image a host pool's ``vmTemplate`` (JSON text) deploys: ``customImageId``, or None
    (no template, unreadable, or a marketplace image)."""
    if not template:
        return None
    try:
        doc = json.loads(template)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    value = doc.get("customImageId")
    return value if isinstance(value, str) and value else None


def template_with_image(template: str | None, version_id: str) -> str:
    """The ``vmTemplate`` text with its image set to exactly ``version_id`` (a gallery version
    id: ``imageType: CustomImage``, ``customImageId``), every other field kept. An unreadable
    or missing template becomes one holding only the image."""
    doc: dict[str, object] = {}
    if template:
        try:
            loaded = json.loads(template)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            doc = dict(loaded)
    doc["imageType"] = "CustomImage"
    doc["customImageId"] = version_id
    for key in _MARKETPLACE_KEYS:
        if key in doc:
            doc[key] = None
    if "galleryItemId" in doc:
        doc["galleryItemId"] = None
    return json.dumps(doc, separators=(",", ":"))


# ---- rollback -----------------------------------------------------------------------------

ROLLBACK_SOURCES: Final = frozenset({VersionState.BACKUP, VersionState.DEPRECATED})


def _version_key(name: str) -> tuple[int, int, int]:
    parsed = ImageVersion.try_parse(name)
    return (parsed.major, parsed.minor, parsed.patch) if parsed else (-1, -1, -1)


def rollback_target(
    versions: Iterable[Mapping[str, Any]], to_version: str | None = None
) -> Mapping[str, Any] | None:
    """The version a rollback re-activates: ``to_version`` when named (whatever its state:
    the caller checks it), else the most recent backup (by state time, then version number).
    ``versions`` are summaries with ``version``, ``state`` and ``state_at``."""
    items = list(versions)
    if to_version:
        return next((v for v in items if v.get("version") == to_version), None)
    backups = [v for v in items if v.get("state") == VersionState.BACKUP.value]
    if not backups:
        return None
    return max(
        backups, key=lambda v: (str(v.get("state_at") or ""), _version_key(str(v["version"])))
    )
