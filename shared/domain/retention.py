"""Retention: which gallery versions to keep, deprecate or delete, and which leftovers to remove.

Pure decisions (no I/O, no clock: ``now`` is an argument). :func:`plan_image` takes every
version of one image definition (state from its ``imagefactory:state`` tag, dates, end of life,
``safetyProfile.blockDeletionBeforeEndOfLife``, storage per region), what uses them (session host
VMs, host pool ``vmTemplate``s, running orchestrations, pinned rings) and the image's
:class:`RetentionPolicy`, and returns one frozen :class:`VersionDecision` per version plus the
storage the deletions free per region. :func:`plan_leftovers` decides about resources earlier
runs left: VMs retained deallocated after a rollout, orphaned build resources, validation hosts
of an interrupted validation. The rules, in order, are documented in docs/retention.md; the
guarantees (never the active version, a version in use, a backup within its days, the last N
good versions, a version Azure blocks from deletion; planning the result again deletes nothing
new) are property-tested in tests/domain/test_domain_retention.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from shared.domain.resources import (
    DISK_TYPE,
    NIC_TYPE,
    SNAPSHOT_TYPE,
    TAG_BUILD_ID,
    TAG_RETAIN_UNTIL,
    TAG_VALIDATION_ID,
    VM_TYPE,
    tag_value,
)
from shared.domain.versions import ImageVersion, VersionState

# States of a version that passed validation and was not retired: the "good" versions of which
# the newest N are kept. Deprecated is not among them: a retired version never pushes a
# newer good one out of the window (that keeps planning idempotent).
GOOD_STATES: Final = frozenset(
    {VersionState.VALIDATED, VersionState.APPROVED, VersionState.ACTIVE, VersionState.BACKUP}
)
NOT_VALIDATED_STATES: Final = frozenset({VersionState.STAGED, VersionState.VALIDATING})
# Provisioning states in which Azure is still working on the version: never touched.
SETTLED_PROVISIONING: Final = frozenset({"succeeded", "failed", ""})


class UsageKind(StrEnum):
    """What holds on to a version."""

    SESSION_HOST = "session-host"  # a session host VM's storageProfile.imageReference
    VM = "vm"  # any other VM created from it (a host retained after a rollout, say)
    HOST_POOL_TEMPLATE = "host-pool-template"  # a host pool's vmTemplate (scale-out uses it)
    ORCHESTRATION = "orchestration"  # a running orchestration names it
    PINNED_RING = "pinned-ring"  # a ring is pinned to it


@dataclass(frozen=True)
class Usage:
    """``by`` (a VM id, host pool id, instance id or ring) uses ``version`` of the image.

    ``version`` None (or ``"latest"``) means the image definition itself: it protects the
    version ``latest`` resolves to (the highest one not excluded from latest).
    """

    kind: UsageKind
    by: str
    version: str | None


@dataclass(frozen=True)
class RegionFootprint:
    """A version's replicas in one region and their estimated storage."""

    region: str
    replicas: int = 1
    size_gb: float = 0.0

    @property
    def storage_gb(self) -> float:
        return self.replicas * self.size_gb


@dataclass(frozen=True)
class VersionFacts:
    """One gallery version as the planner sees it."""

    name: str
    id: str = ""
    state: VersionState | None = None
    state_at: datetime | None = None
    built: datetime | None = None
    end_of_life: datetime | None = None
    block_deletion_before_end_of_life: bool = False
    exclude_from_latest: bool = True
    provisioning_state: str | None = "Succeeded"
    regions: tuple[RegionFootprint, ...] = ()

    def blocked(self, now: datetime) -> bool:
        """Azure refuses to delete it now (safety profile and an end of life still ahead)."""
        return bool(
            self.block_deletion_before_end_of_life
            and self.end_of_life is not None
            and self.end_of_life > now
        )

    @property
    def number(self) -> ImageVersion | None:
        return ImageVersion.try_parse(self.name)


@dataclass(frozen=True)
class RetentionPolicy:
    """An image's retention policy (the catalogue's ``retention`` section, resolved)."""

    keep_versions: int = 3
    backup_days: int = 30
    staged_max_age_days: int = 14
    delete_failed_at_once: bool = True
    deprecation_days: int = 0
    retained_vm_days: int = 7
    orphan_min_age_hours: int = 24

    def __post_init__(self) -> None:
        for name in (
            "keep_versions",
            "backup_days",
            "staged_max_age_days",
            "deprecation_days",
            "retained_vm_days",
            "orphan_min_age_hours",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


class Action(StrEnum):
    KEEP = "keep"
    DEPRECATE = "deprecate"  # set endOfLifeDate, state tag deprecated, exclude from latest
    DELETE = "delete"
    # Not needed, but Azure blocks its deletion until a future end of life: deprecated now,
    # deleted by a later run once that date has passed. Never forced (the date is not moved
    # earlier and the safety profile is not changed).
    DEPRECATE_NOW_DELETE_LATER = "deprecate-now-delete-later"


@dataclass(frozen=True)
class VersionDecision:
    """What happens to one version, and why (``code`` for machines, ``reason`` for people)."""

    version: str
    id: str
    action: Action
    code: str
    reason: str
    end_of_life: datetime | None = None  # the end of life a deprecation sets
    delete_after: datetime | None = None  # when a kept/deprecated version may go
    freed_gb: Mapping[str, float] = field(default_factory=dict)  # per region, deletes only

    @property
    def deprecates(self) -> bool:
        return self.action in (Action.DEPRECATE, Action.DEPRECATE_NOW_DELETE_LATER)

    def to_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "id": self.id,
            "action": self.action.value,
            "code": self.code,
            "reason": self.reason,
            "end_of_life": self.end_of_life.isoformat() if self.end_of_life else None,
            "delete_after": self.delete_after.isoformat() if self.delete_after else None,
            "freed_gb": dict(self.freed_gb),
        }


@dataclass(frozen=True)
class ImagePlan:
    """Every version's decision for one image; ``refused`` when the policy could not apply."""

    image: str
    decisions: tuple[VersionDecision, ...]
    refused: str | None = None

    def of(self, action: Action) -> tuple[VersionDecision, ...]:
        return tuple(d for d in self.decisions if d.action is action)

    @property
    def freed_gb_by_region(self) -> dict[str, float]:
        freed: dict[str, float] = {}
        for decision in self.decisions:
            for region, gb in decision.freed_gb.items():
                freed[region] = freed.get(region, 0.0) + gb
        return {r: round(v, 3) for r, v in sorted(freed.items())}

    def counts(self) -> dict[str, int]:
        return {a.value: len(self.of(a)) for a in Action}

    def to_dict(self) -> dict[str, object]:
        return {
            "image": self.image,
            "refused": self.refused,
            "counts": self.counts(),
            "freed_gb_by_region": self.freed_gb_by_region,
            "decisions": [d.to_dict() for d in self.decisions],
        }


# ---- the planner --------------------------------------------------------------------------


def _sort_key(v: VersionFacts) -> tuple[int, ImageVersion | None, str]:
    number = v.number
    return (0 if number is None else 1, number, v.name)


def _newest_first(versions: Iterable[VersionFacts]) -> list[VersionFacts]:
    parsed = [v for v in versions if v.number is not None]
    return sorted(parsed, key=lambda v: v.number or ImageVersion(0, 0, 0), reverse=True)


def latest_target(versions: Iterable[VersionFacts]) -> str | None:
    """The version ``latest`` resolves to: the highest one not excluded from latest."""
    included = _newest_first(v for v in versions if not v.exclude_from_latest)
    return included[0].name if included else None


def _users(versions: Sequence[VersionFacts], usages: Iterable[Usage]) -> dict[str, list[Usage]]:
    known = {v.name: v.name for v in versions}
    known.update({str(v.number): v.name for v in versions if v.number is not None})
    latest = latest_target(versions)
    users: dict[str, list[Usage]] = {}
    for usage in usages:
        if usage.version is None or usage.version.strip().lower() == "latest":
            name = latest
        else:
            parsed = ImageVersion.try_parse(usage.version)
            name = known.get(str(parsed) if parsed else usage.version)
        if name is not None:
            users.setdefault(name, []).append(usage)
    return users


def _describe(users: Sequence[Usage]) -> str:
    shown = ", ".join(f"{u.kind.value} {u.by}" for u in users[:3])
    more = f" and {len(users) - 3} more" if len(users) > 3 else ""
    return f"in use by {shown}{more}"


def _keep(
    v: VersionFacts, code: str, reason: str, until: datetime | None = None
) -> VersionDecision:
    return VersionDecision(v.name, v.id, Action.KEEP, code, reason, delete_after=until)


def _freed(v: VersionFacts) -> dict[str, float]:
    freed: dict[str, float] = {}
    for footprint in v.regions:
        freed[footprint.region] = freed.get(footprint.region, 0.0) + footprint.storage_gb
    return freed


def _retire(
    v: VersionFacts, code: str, why: str, policy: RetentionPolicy, now: datetime, *, at_once: bool
) -> VersionDecision:
    """A version nothing keeps: deprecate it first (grace, or Azure's block), or delete it."""
    blocked = v.blocked(now)
    eol = v.end_of_life
    if v.state is VersionState.DEPRECATED:
        if eol is not None and eol > now:
            detail = (
                "Azure blocks its deletion until then (safetyProfile.blockDeletionBeforeEndOfLife)"
                if blocked
                else "deleted by the first run after it"
            )
            return _keep(
                v,
                "deprecated-until-end-of-life",
                f"{why}; deprecated, end of life {eol.isoformat()}: {detail}",
                eol,
            )
        return VersionDecision(
            v.name,
            v.id,
            Action.DELETE,
            code,
            f"{why}; deprecated and past its end of life",
            freed_gb=_freed(v),
        )
    if blocked:
        assert eol is not None  # blocked() needs an end of life
        new_eol = max(eol, now + timedelta(days=0 if at_once else policy.deprecation_days))
        return VersionDecision(
            v.name,
            v.id,
            Action.DEPRECATE_NOW_DELETE_LATER,
            code,
            f"{why}; Azure blocks its deletion before its end of life {eol.isoformat()} "
            "(safetyProfile.blockDeletionBeforeEndOfLife): deprecated now, deleted by the first "
            "run after that date, never forced",
            end_of_life=new_eol,
            delete_after=new_eol,
        )
    if policy.deprecation_days > 0 and not at_once:
        new_eol = now + timedelta(days=policy.deprecation_days)
        return VersionDecision(
            v.name,
            v.id,
            Action.DEPRECATE,
            code,
            f"{why}; deprecated for {policy.deprecation_days} day(s) before deletion",
            end_of_life=new_eol,
            delete_after=new_eol,
        )
    return VersionDecision(v.name, v.id, Action.DELETE, code, why, freed_gb=_freed(v))


def _age_start(v: VersionFacts) -> datetime | None:
    return v.state_at or v.built


def _decide(
    v: VersionFacts,
    *,
    users: Mapping[str, list[Usage]],
    last_good: frozenset[str],
    active: ImageVersion | None,
    policy: RetentionPolicy,
    now: datetime,
) -> VersionDecision:
    provisioning = (v.provisioning_state or "").lower()
    if provisioning not in SETTLED_PROVISIONING:
        return _keep(v, "operation-in-progress", f"Azure is still working on it ({provisioning})")
    if v.number is None:
        return _keep(v, "unreadable-version", "not a Major.Minor.Patch version name")
    if v.state is None:
        return _keep(
            v, "unmanaged", "no readable imagefactory:state tag: not managed by the lifecycle"
        )
    if v.state is VersionState.ACTIVE:
        return _keep(v, "active", "the active version")
    if v.name in users:
        return _keep(v, "in-use", _describe(users[v.name]))
    if v.state is VersionState.BACKUP:
        if v.state_at is None:
            return _keep(v, "backup", "backup with no imagefactory:state-at tag: kept")
        until = v.state_at + timedelta(days=policy.backup_days)
        if now < until:
            return _keep(v, "backup", f"backup for rollback until {until.isoformat()}", until)
    if v.name in last_good:
        return _keep(v, "last-good", f"one of the last {policy.keep_versions} good version(s)")
    if v.state in (VersionState.VALIDATED, VersionState.APPROVED) and (
        active is None or (v.number is not None and v.number > active)
    ):
        return _keep(v, "awaiting-activation", f"{v.state.value}, newer than the active version")
    if v.state is VersionState.FAILED and policy.delete_failed_at_once:
        return _retire(v, "failed", "failed", policy, now, at_once=True)
    if v.state in NOT_VALIDATED_STATES or v.state is VersionState.FAILED:
        start = _age_start(v)
        if start is None:
            return _keep(v, "age-unknown", f"{v.state.value} with no date to age it by")
        until = start + timedelta(days=policy.staged_max_age_days)
        if now < until:
            return _keep(
                v, "awaiting-validation", f"{v.state.value} until {until.isoformat()}", until
            )
        return _retire(
            v,
            "never-validated",
            f"{v.state.value} for over {policy.staged_max_age_days} day(s), never validated",
            policy,
            now,
            at_once=False,
        )
    why = {
        VersionState.BACKUP: f"backup for more than {policy.backup_days} day(s)",
        VersionState.REJECTED: "rejected",
        VersionState.ROLLED_BACK: "rolled back",
        VersionState.DEPRECATED: "deprecated",
        VersionState.DELETED: "marked deleted",
    }.get(v.state, f"{v.state.value}, older than the last {policy.keep_versions} good")
    return _retire(v, "not-needed", why, policy, now, at_once=False)


def plan_image(
    image: str,
    versions: Iterable[VersionFacts],
    usages: Iterable[Usage],
    policy: RetentionPolicy,
    now: datetime,
) -> ImagePlan:
    """Decide about every version of one image (see the module docstring and docs/retention.md)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    listed = sorted(versions, key=_sort_key, reverse=True)
    active_versions = [v for v in listed if v.state is VersionState.ACTIVE]
    if policy.keep_versions == 0 and not active_versions:
        reason = "keep_versions is 0 and no version is active: the policy would keep nothing"
        return ImagePlan(
            image,
            tuple(_keep(v, "policy-refused", reason) for v in listed),
            refused=reason,
        )
    good = [v for v in _newest_first(listed) if v.state in GOOD_STATES]
    last_good = frozenset(v.name for v in good[: policy.keep_versions])
    active = max((v.number for v in active_versions if v.number), default=None)
    users = _users(listed, usages)
    decisions = tuple(
        _decide(v, users=users, last_good=last_good, active=active, policy=policy, now=now)
        for v in listed
    )
    return ImagePlan(image, decisions)


def apply_plan(
    versions: Iterable[VersionFacts], plan: ImagePlan, now: datetime
) -> list[VersionFacts]:
    """The versions as they are once ``plan`` is carried out (what the next run sees)."""
    by_name = {d.version: d for d in plan.decisions}
    after: list[VersionFacts] = []
    for v in versions:
        decision = by_name.get(v.name)
        if decision is None or decision.action is Action.KEEP:
            after.append(v)
        elif decision.deprecates:
            after.append(
                replace(
                    v,
                    state=VersionState.DEPRECATED,
                    state_at=now,
                    end_of_life=decision.end_of_life,
                    exclude_from_latest=True,
                )
            )
    return after


# ---- leftovers ----------------------------------------------------------------------------


class LeftoverKind(StrEnum):
    RETAINED_VM = "retained-vm"  # kept deallocated after a rollout (imagefactory:retain-until)
    ORPHANED_BUILD = "orphaned-build"  # tagged imagefactory:build-id, its build no longer runs
    VALIDATION_HOST = "validation-host"  # tagged imagefactory:validation-id, validation ended


@dataclass(frozen=True)
class LeftoverResource:
    """A resource found by its tags: id, type, tags, creation time, a VM's power state."""

    id: str
    type: str
    tags: Mapping[str, str] = field(default_factory=dict)
    created: datetime | None = None
    power_state: str | None = None


@dataclass(frozen=True)
class LeftoverDecision:
    id: str
    type: str
    kind: LeftoverKind
    delete: bool
    reason: str
    group: str  # the build id, validation id or the retained VM's own id

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "type": self.type,
            "kind": self.kind.value,
            "delete": self.delete,
            "reason": self.reason,
            "group": self.group,
        }


# Delete order: a VM before its NIC and disks, disks before the snapshots they came from.
DELETE_ORDER: Final = (VM_TYPE, NIC_TYPE, DISK_TYPE, SNAPSHOT_TYPE)


def delete_rank(resource_type: str) -> int:
    lowered = resource_type.lower()
    for index, known in enumerate(DELETE_ORDER):
        if known.lower() == lowered:
            return index
    return len(DELETE_ORDER)


def _parse_instant(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _group_decisions(
    kind: LeftoverKind,
    groups: Mapping[str, list[LeftoverResource]],
    running: Sequence[str],
    min_age: timedelta,
    now: datetime,
) -> list[LeftoverDecision]:
    out: list[LeftoverDecision] = []
    what = "build" if kind is LeftoverKind.ORPHANED_BUILD else "validation"
    for group, members in sorted(groups.items()):
        created = [m.created for m in members if m.created is not None]
        live = next((r for r in running if group.lower() in r.lower()), None)
        if live is not None:
            delete, reason = False, f"its {what} still runs ({live})"
        elif not created:
            delete, reason = False, f"no creation time on any resource of {what} {group}"
        elif now - min(created) < min_age:
            delete, reason = False, f"younger than {min_age} (its {what} may just have started)"
        else:
            delete, reason = True, f"{what} {group} no longer runs and left it behind"
        out += [LeftoverDecision(m.id, m.type, kind, delete, reason, group) for m in members]
    return out


def plan_leftovers(
    resources: Iterable[LeftoverResource],
    *,
    running_instances: Iterable[str],
    policy: RetentionPolicy,
    now: datetime,
) -> tuple[LeftoverDecision, ...]:
    """Decide about every tagged leftover: retained VMs past their date, orphaned build
    resources and validation hosts whose orchestration no longer runs (both older than
    ``orphan_min_age_hours``, so something started after the running list was read is safe).
    Untagged resources are never considered. Ordered for deletion (VMs first)."""
    running = sorted(set(running_instances))
    min_age = timedelta(hours=policy.orphan_min_age_hours)
    decisions: list[LeftoverDecision] = []
    builds: dict[str, list[LeftoverResource]] = {}
    validations: dict[str, list[LeftoverResource]] = {}
    for resource in resources:
        retain = tag_value(resource.tags, TAG_RETAIN_UNTIL)
        build_id = tag_value(resource.tags, TAG_BUILD_ID)
        validation = tag_value(resource.tags, TAG_VALIDATION_ID)
        if validation:
            validations.setdefault(validation, []).append(resource)
        elif build_id:
            builds.setdefault(build_id, []).append(resource)
        elif retain is not None:
            decisions.append(_retained(resource, retain, policy, now))
    decisions += _group_decisions(
        LeftoverKind.ORPHANED_BUILD,
        builds,
        [r for r in running if r.lower().startswith("build:")],
        min_age,
        now,
    )
    decisions += _group_decisions(LeftoverKind.VALIDATION_HOST, validations, running, min_age, now)
    return tuple(sorted(decisions, key=lambda d: (delete_rank(d.type), d.id.lower())))


def _retained(
    resource: LeftoverResource, retain: str, policy: RetentionPolicy, now: datetime
) -> LeftoverDecision:
    until = _parse_instant(retain)
    kind = LeftoverKind.RETAINED_VM
    if until is None:
        if resource.created is None:
            return LeftoverDecision(
                resource.id,
                resource.type,
                kind,
                False,
                f"{TAG_RETAIN_UNTIL} {retain!r} is not an ISO 8601 UTC instant and its age is "
                "unknown: kept",
                resource.id,
            )
        until = resource.created + timedelta(days=policy.retained_vm_days)
    power = (resource.power_state or "").lower()
    if power and power not in ("powerstate/deallocated", "powerstate/stopped"):
        return LeftoverDecision(
            resource.id,
            resource.type,
            kind,
            False,
            f"retained, but {resource.power_state}: someone is using it again",
            resource.id,
        )
    if now < until:
        return LeftoverDecision(
            resource.id,
            resource.type,
            kind,
            False,
            f"retained until {until.isoformat()}",
            resource.id,
        )
    return LeftoverDecision(
        resource.id,
        resource.type,
        kind,
        True,
        f"retained until {until.isoformat()}, which has passed",
        resource.id,
    )
