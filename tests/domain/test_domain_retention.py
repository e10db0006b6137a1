"""The retention planner: guarantees for any input (hypothesis), and its rules by example."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.domain.resources import TAG_BUILD_ID, TAG_RETAIN_UNTIL, TAG_VALIDATION_ID
from shared.domain.retention import (
    GOOD_STATES,
    Action,
    LeftoverResource,
    RegionFootprint,
    RetentionPolicy,
    Usage,
    UsageKind,
    VersionFacts,
    apply_plan,
    latest_target,
    plan_image,
    plan_leftovers,
)
from shared.domain.versions import VersionState

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _v(name: str, state: VersionState | None, **kw: object) -> VersionFacts:
    return VersionFacts(name=name, id=f"/v/{name}", state=state, **kw)  # type: ignore[arg-type]


# ---- strategies ---------------------------------------------------------------------------

offsets = st.integers(min_value=-400, max_value=400).map(lambda d: NOW + timedelta(days=d))


@st.composite
def version_sets(draw: st.DrawFn) -> list[VersionFacts]:
    names = draw(
        st.lists(
            st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 5)),
            min_size=0,
            max_size=12,
            unique=True,
        )
    )
    out = []
    for major, minor, patch in names:
        out.append(
            VersionFacts(
                name=f"{major}.{minor}.{patch}",
                id=f"/versions/{major}.{minor}.{patch}",
                state=draw(st.none() | st.sampled_from(list(VersionState))),
                state_at=draw(st.none() | offsets),
                built=draw(st.none() | offsets),
                end_of_life=draw(st.none() | offsets),
                block_deletion_before_end_of_life=draw(st.booleans()),
                exclude_from_latest=draw(st.booleans()),
                provisioning_state=draw(
                    st.sampled_from(["Succeeded", "Succeeded", "Failed", "Updating", "Creating"])
                ),
                regions=tuple(
                    RegionFootprint(r, draw(st.integers(1, 3)), draw(st.floats(0, 200)))
                    for r in draw(
                        st.sets(st.sampled_from(["westeurope", "northeurope"]), min_size=1)
                    )
                ),
            )
        )
    return out


policies = st.builds(
    RetentionPolicy,
    keep_versions=st.integers(0, 5),
    backup_days=st.integers(0, 60),
    staged_max_age_days=st.integers(0, 60),
    delete_failed_at_once=st.booleans(),
    deprecation_days=st.integers(0, 30),
)


@st.composite
def usage_sets(draw: st.DrawFn, versions: list[VersionFacts]) -> list[Usage]:
    names = [v.name for v in versions] + ["9.9.9"]  # a usage of a version that is not there
    return draw(
        st.lists(
            st.builds(
                Usage,
                kind=st.sampled_from(list(UsageKind)),
                by=st.sampled_from(["vm-a", "hp-1", "build:x", "ring-broad"]),
                version=st.none() | st.sampled_from(names),
            ),
            max_size=5,
        )
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[VersionFacts], list[Usage], RetentionPolicy]:
    versions = draw(version_sets())
    return versions, draw(usage_sets(versions)), draw(policies)


def _protected(
    versions: list[VersionFacts], usages: list[Usage], policy: RetentionPolicy
) -> dict[str, set[str]]:
    """Every version the planner must never delete, with every rule that protects it."""
    out: dict[str, set[str]] = {}
    latest = latest_target(versions)

    def protect(v: VersionFacts, why: str) -> None:
        out.setdefault(v.name, set()).add(why)

    for v in versions:
        if v.state is VersionState.ACTIVE:
            protect(v, "active")
        if any(u.version == v.name or (u.version is None and v.name == latest) for u in usages):
            protect(v, "in use")
        if v.state is VersionState.BACKUP and (
            v.state_at is None or v.state_at + timedelta(days=policy.backup_days) > NOW
        ):
            protect(v, "backup within its days")
        if v.blocked(NOW):
            protect(v, "deletion blocked by Azure")
        if (v.provisioning_state or "").lower() not in ("succeeded", "failed"):
            protect(v, "operation in progress")
    good = sorted(
        (v for v in versions if v.state in GOOD_STATES),
        key=lambda v: v.number,  # type: ignore[arg-type,return-value]
        reverse=True,
    )
    for v in good[: policy.keep_versions]:
        protect(v, "last N good")
    return out


# ---- properties ---------------------------------------------------------------------------


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_never_deletes_what_must_stay(
    case: tuple[list[VersionFacts], list[Usage], RetentionPolicy],
) -> None:
    versions, usages, policy = case
    plan = plan_image("img", versions, usages, policy, NOW)
    assert {d.version for d in plan.decisions} == {v.name for v in versions}
    protected = _protected(versions, usages, policy)
    for decision in plan.of(Action.DELETE):
        assert decision.version not in protected, (decision, protected[decision.version])


@settings(max_examples=250, deadline=None)
@given(cases())
def test_protected_versions_are_not_even_deprecated(
    case: tuple[list[VersionFacts], list[Usage], RetentionPolicy],
) -> None:
    versions, usages, policy = case
    plan = plan_image("img", versions, usages, policy, NOW)
    protected = _protected(versions, usages, policy)
    for decision in plan.decisions:
        if decision.deprecates and decision.version in protected:
            # Only Azure's block may turn a delete into a deprecation of a protected version.
            assert protected[decision.version] == {"deletion blocked by Azure"}, decision


@settings(max_examples=250, deadline=None)
@given(cases())
def test_planning_the_result_again_deletes_nothing_new(
    case: tuple[list[VersionFacts], list[Usage], RetentionPolicy],
) -> None:
    versions, usages, policy = case
    first = plan_image("img", versions, usages, policy, NOW)
    after = apply_plan(versions, first, NOW)
    second = plan_image("img", after, usages, policy, NOW)
    assert second.of(Action.DELETE) == ()
    assert [d for d in second.decisions if d.deprecates] == []
    assert second.freed_gb_by_region == {}


@settings(max_examples=200, deadline=None)
@given(cases())
def test_blocked_versions_are_deprecated_with_an_end_of_life_never_moved_earlier(
    case: tuple[list[VersionFacts], list[Usage], RetentionPolicy],
) -> None:
    versions, usages, policy = case
    plan = plan_image("img", versions, usages, policy, NOW)
    by_name = {v.name: v for v in versions}
    for decision in plan.decisions:
        v = by_name[decision.version]
        if decision.deprecates:
            assert decision.end_of_life is not None
            assert decision.end_of_life >= NOW
            if v.blocked(NOW):
                assert decision.action is Action.DEPRECATE_NOW_DELETE_LATER
                assert v.end_of_life is not None
                assert decision.end_of_life >= v.end_of_life


@settings(max_examples=200, deadline=None)
@given(cases())
def test_freed_storage_is_the_sum_of_deleted_replicas(
    case: tuple[list[VersionFacts], list[Usage], RetentionPolicy],
) -> None:
    versions, usages, policy = case
    plan = plan_image("img", versions, usages, policy, NOW)
    deleted = {d.version for d in plan.of(Action.DELETE)}
    expected: dict[str, float] = {}
    for v in versions:
        if v.name in deleted:
            for f in v.regions:
                expected[f.region] = expected.get(f.region, 0.0) + f.replicas * f.size_gb
    assert plan.freed_gb_by_region == {r: round(g, 3) for r, g in sorted(expected.items())}


# ---- rules by example ---------------------------------------------------------------------


def test_a_typical_image() -> None:
    versions = [
        _v("1.0.5", VersionState.STAGED, state_at=NOW - 2 * DAY),
        _v("1.0.4", VersionState.ACTIVE),
        _v("1.0.3", VersionState.BACKUP, state_at=NOW - 3 * DAY),
        _v("1.0.2", VersionState.DEPRECATED, end_of_life=NOW - DAY),
        _v("1.0.1", VersionState.VALIDATED),
        _v("1.0.0", VersionState.BACKUP, state_at=NOW - 90 * DAY),
        _v("0.9.0", VersionState.FAILED, state_at=NOW - DAY),
        _v("0.8.0", VersionState.STAGED, state_at=NOW - 40 * DAY),
        _v(
            "0.7.0",
            VersionState.REJECTED,
            block_deletion_before_end_of_life=True,
            end_of_life=NOW + 30 * DAY,
        ),
        _v("0.6.0", None),
    ]
    usages = [Usage(UsageKind.SESSION_HOST, "vm-old", "1.0.0")]
    plan = plan_image("img", versions, usages, RetentionPolicy(keep_versions=2), NOW)
    got = {d.version: (d.action, d.code) for d in plan.decisions}
    assert got == {
        "1.0.5": (Action.KEEP, "awaiting-validation"),
        "1.0.4": (Action.KEEP, "active"),
        "1.0.3": (Action.KEEP, "backup"),
        "1.0.2": (Action.DELETE, "not-needed"),
        "1.0.1": (Action.DELETE, "not-needed"),  # older than the active one, outside the last 2
        "1.0.0": (Action.KEEP, "in-use"),
        "0.9.0": (Action.DELETE, "failed"),
        "0.8.0": (Action.DELETE, "never-validated"),
        "0.7.0": (Action.DEPRECATE_NOW_DELETE_LATER, "not-needed"),
        "0.6.0": (Action.KEEP, "unmanaged"),
    }


def test_latest_usage_protects_what_latest_resolves_to() -> None:
    versions = [
        _v("2.0.0", VersionState.REJECTED, exclude_from_latest=False),
        _v("1.0.0", VersionState.ACTIVE, exclude_from_latest=False),
    ]
    for version in (None, "latest"):
        usage = Usage(UsageKind.HOST_POOL_TEMPLATE, "hp", version)
        plan = plan_image("img", versions, [usage], RetentionPolicy(), NOW)
        assert plan.decisions[0].action is Action.KEEP
        assert plan.decisions[0].code == "in-use"


def test_deprecation_days_deprecate_first_then_delete_after_the_end_of_life() -> None:
    policy = RetentionPolicy(keep_versions=1, deprecation_days=7)
    versions = [_v("1.0.1", VersionState.ACTIVE), _v("1.0.0", VersionState.REJECTED)]
    plan = plan_image("img", versions, [], policy, NOW)
    old = plan.decisions[1]
    assert old.action is Action.DEPRECATE
    assert old.end_of_life == NOW + 7 * DAY
    later = NOW + 8 * DAY
    again = plan_image("img", apply_plan(versions, plan, NOW), [], policy, later)
    assert again.decisions[1].action is Action.DELETE


def test_keep_zero_without_an_active_version_is_refused_and_deletes_nothing() -> None:
    versions = [_v("1.0.0", VersionState.FAILED), _v("1.0.1", VersionState.REJECTED)]
    plan = plan_image("img", versions, [], RetentionPolicy(keep_versions=0), NOW)
    assert plan.refused
    assert "keep nothing" in plan.refused
    assert plan.of(Action.DELETE) == ()


def test_negative_durations_are_refused() -> None:
    with pytest.raises(ValueError, match="backup_days"):
        RetentionPolicy(backup_days=-1)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        plan_image("img", [], [], RetentionPolicy(), datetime(2026, 1, 1))  # noqa: DTZ001


# ---- leftovers ----------------------------------------------------------------------------

VM = "Microsoft.Compute/virtualMachines"
NIC = "Microsoft.Network/networkInterfaces"
DISK = "Microsoft.Compute/disks"


def test_leftovers() -> None:
    resources = [
        LeftoverResource(
            "/vm/retained-old",
            VM,
            {TAG_RETAIN_UNTIL: (NOW - DAY).isoformat()},
            power_state="PowerState/deallocated",
        ),
        LeftoverResource(
            "/vm/retained-new",
            VM,
            {TAG_RETAIN_UNTIL: (NOW + DAY).isoformat()},
            power_state="PowerState/deallocated",
        ),
        LeftoverResource(
            "/vm/retained-running",
            VM,
            {TAG_RETAIN_UNTIL: (NOW - DAY).isoformat()},
            power_state="PowerState/running",
        ),
        LeftoverResource("/vm/retained-bad", VM, {TAG_RETAIN_UNTIL: "soon"}),
        LeftoverResource("/vm/b-old", VM, {TAG_BUILD_ID: "b-old"}, created=NOW - 3 * DAY),
        LeftoverResource("/nic/b-old", NIC, {TAG_BUILD_ID: "b-old"}),
        LeftoverResource("/vm/b-young", VM, {TAG_BUILD_ID: "b-young"}, created=NOW - DAY / 2),
        LeftoverResource("/vm/b-running", VM, {TAG_BUILD_ID: "b-run"}, created=NOW - 9 * DAY),
        LeftoverResource("/disk/val-1", DISK, {TAG_VALIDATION_ID: "val-1"}, created=NOW - 2 * DAY),
        LeftoverResource("/vm/val-2", VM, {TAG_VALIDATION_ID: "val-2"}, created=NOW - 2 * DAY),
        LeftoverResource("/vm/untagged", VM, {}, created=NOW - 99 * DAY),
    ]
    plan = plan_leftovers(
        resources,
        running_instances=["build:b-run", "validation:img:val-2"],
        policy=RetentionPolicy(),
        now=NOW,
    )
    got = {d.id: d.delete for d in plan}
    assert got == {
        "/vm/retained-old": True,
        "/vm/retained-new": False,
        "/vm/retained-running": False,
        "/vm/retained-bad": False,
        "/vm/b-old": True,
        "/nic/b-old": True,  # no date of its own: its build's oldest resource ages it
        "/vm/b-young": False,
        "/vm/b-running": False,
        "/disk/val-1": True,
        "/vm/val-2": False,
    }
    order = [d.type for d in plan if d.delete]
    assert order == sorted(order, key=[VM, NIC, DISK].index)


def test_a_retired_version_never_pushes_a_good_one_out_of_the_window() -> None:
    """Deprecated versions are not 'good': deprecating a rejected newer version must not make
    the next run drop an older good version from the last N (idempotence, by example)."""
    policy = RetentionPolicy(keep_versions=2, deprecation_days=7)
    versions = [
        _v("1.0.3", VersionState.REJECTED),
        _v("1.0.2", VersionState.ACTIVE),
        _v("1.0.1", VersionState.VALIDATED),
    ]
    first = plan_image("img", versions, [], policy, NOW)
    assert [d.action for d in first.decisions] == [Action.DEPRECATE, Action.KEEP, Action.KEEP]
    second = plan_image("img", apply_plan(versions, first, NOW), [], policy, NOW)
    assert [d.action for d in second.decisions] == [Action.KEEP] * 3
