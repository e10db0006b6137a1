"""Gallery image versions: Major.Minor.Patch values, allocation that never reuses, and states.

A Compute Gallery version name is ``Major.Minor.Patch`` with each part a 32-bit signed integer
(0..2147483647). The factory allocates a new version for every build from the set of all
versions *ever* allocated (the caller keeps the highest on the image definition's tags, see
``resources.TAG_LAST_ALLOCATED``), so a deleted version's number is never handed out again.
A version's lifecycle state lives in its ``imagefactory:state`` tag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, Literal

from shared.domain.resources import TAG_BUILD_ID, TAG_STATE, tag_value
from shared.errors import InputError, PermanentError

INT32_MAX: Final = 2_147_483_647
_VERSION = re.compile(r"^(\d{1,10})\.(\d{1,10})\.(\d{1,10})$")

Bump = Literal["major", "minor", "patch"]


@dataclass(frozen=True, order=True)
class ImageVersion:
    """A ``Major.Minor.Patch`` gallery version; ordered numerically, printed canonically."""

    major: int
    minor: int
    patch: int

    def __post_init__(self) -> None:
        for part, value in (("major", self.major), ("minor", self.minor), ("patch", self.patch)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError.single(f"version.{part}", "must be an integer")
            if not 0 <= value <= INT32_MAX:
                raise InputError.single(f"version.{part}", f"must be between 0 and {INT32_MAX}")

    @classmethod
    def parse(cls, text: str, field: str = "version") -> ImageVersion:
        """Parse ``"1.3.0"``; InputError naming ``field`` for anything else.

        Leading zeros are accepted (marketplace versions such as ``22.04.202401100`` have
        them) and dropped when printed.
        """
        match = _VERSION.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise InputError.single(field, f"{text!r} is not a Major.Minor.Patch version")
        parts = [int(g) for g in match.groups()]
        if any(p > INT32_MAX for p in parts):
            raise InputError.single(field, f"{text!r}: each part must be at most {INT32_MAX}")
        return cls(*parts)

    @classmethod
    def try_parse(cls, text: str | None) -> ImageVersion | None:
        """The version, or None when ``text`` is not a valid gallery version (a lookup)."""
        try:
            return cls.parse(text or "")
        except InputError:
            return None

    def bump(self, part: Bump = "patch") -> ImageVersion:
        """The next version at ``part``; PermanentError when that part is already at the max."""
        if part == "major":
            nxt = (self.major + 1, 0, 0)
        elif part == "minor":
            nxt = (self.major, self.minor + 1, 0)
        elif part == "patch":
            nxt = (self.major, self.minor, self.patch + 1)
        else:
            raise InputError.single("bump", f"must be major, minor or patch, not {part!r}")
        if max(nxt) > INT32_MAX:
            raise PermanentError(f"no {part} version after {self}: it would exceed {INT32_MAX}")
        return ImageVersion(*nxt)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


FIRST_VERSION: Final = ImageVersion(1, 0, 0)


def next_version(existing: Iterable[str], bump: Bump = "patch", floor: str | None = None) -> str:
    """The version to allocate next: above everything in ``existing``, and at least ``floor``.

    ``existing`` must hold every version ever allocated for the image definition, including
    deleted ones; the result is always strictly greater than each of them, so it is never
    reused. With nothing allocated yet the result is ``floor`` or ``1.0.0``. A malformed entry
    in ``existing`` is an InputError (a record that cannot be read must not be guessed past).
    """
    parsed = [ImageVersion.parse(v, f"existing[{i}]") for i, v in enumerate(existing)]
    minimum = ImageVersion.parse(floor, "floor") if floor is not None else None
    if bump not in ("major", "minor", "patch"):
        raise InputError.single("bump", f"must be major, minor or patch, not {bump!r}")
    if not parsed:
        return str(minimum or FIRST_VERSION)
    candidate = max(parsed).bump(bump)
    if minimum is not None and minimum > candidate:
        candidate = minimum
    return str(candidate)


def highest(versions: Iterable[str]) -> str | None:
    """The highest valid version in ``versions`` (malformed entries ignored), or None."""
    found = [v for v in (ImageVersion.try_parse(t) for t in versions) if v is not None]
    return str(max(found)) if found else None


class VersionState(StrEnum):
    """Where a gallery version is in its life; kept in the ``imagefactory:state`` tag.

    The lifecycle (issue: version lifecycle) is
    ``staged -> validating -> validated -> approved -> active -> backup -> deprecated -> deleted``
    with the branches ``failed`` (validation failed), ``rejected`` (approval refused) and
    ``rolled-back`` (was active, replaced by a rollback).

    staged: built and replicated, excluded from ``latest``, waiting for tests and promotion.
    validating / validated: on test session hosts / passed them.
    approved: a second principal approved it (change ticket recorded), not yet active.
    active: the version host pools deploy (the only one included in ``latest``).
    backup: the previous active version, kept for rollback.
    deprecated: retired; kept only until its end of life, never deployed.
    deleted: removed (only ever seen in events and audit, never on a live version).
    """

    STAGED = "staged"
    VALIDATING = "validating"
    VALIDATED = "validated"
    APPROVED = "approved"
    ACTIVE = "active"
    BACKUP = "backup"
    DEPRECATED = "deprecated"
    DELETED = "deleted"
    FAILED = "failed"
    REJECTED = "rejected"
    ROLLED_BACK = "rolled-back"

    @property
    def excluded_from_latest(self) -> bool:
        """Only an active version may be picked by ``latest``."""
        return self is not VersionState.ACTIVE


def state_from_tags(tags: Mapping[str, str] | None) -> VersionState | None:
    """The state recorded in a version's tags; None when absent or unknown."""
    raw = tag_value(tags, TAG_STATE)
    if raw is None:
        return None
    try:
        return VersionState(raw.strip().lower())
    except ValueError:
        return None


def why_build_may_not_delete(
    tags: Mapping[str, str] | None,
    build_id: str | None,
    *,
    blocked_before_end_of_life: bool,
    end_of_life: datetime | None,
) -> str | None:
    """Why a build's clean-up may not delete this gallery version; None when it may.

    Only the version a build staged itself: its ``imagefactory:build-id`` tag is ``build_id``
    and its ``imagefactory:state`` is still ``staged`` (an active, backup or deprecated version
    is never removed by a build). A version whose ``safetyProfile.blockDeletionBeforeEndOfLife``
    is true is refused with that reason: Azure would refuse the delete before its end of life,
    and a version a build just staged is months from it (no clock is consulted here).
    """
    if not build_id:
        return "a gallery version is deleted only for the build that staged it: build_id is missing"
    owner = tag_value(tags, TAG_BUILD_ID)
    if owner is None:
        return f"it has no {TAG_BUILD_ID} tag: the factory did not build it"
    if owner != build_id:
        return f"it was built by build {owner}, not {build_id}"
    state = tag_value(tags, TAG_STATE)
    if state_from_tags(tags) is not VersionState.STAGED:
        return f"its {TAG_STATE} is {state!r}, not 'staged': only a staged version may be removed"
    if blocked_before_end_of_life:
        until = end_of_life.isoformat() if end_of_life else "its end of life"
        return (
            "safetyProfile.blockDeletionBeforeEndOfLife is true, so Azure refuses to delete it "
            f"before {until} (the factory creates versions with it false: someone changed it; "
            "set it back to false to remove this version)"
        )
    return None
