"""The version lifecycle's rules: the whole states x actions table, four eyes, tags, latest."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.lifecycle import (
    LIFECYCLE_TAG_KEYS,
    LIFECYCLE_TAG_RESERVE,
    Action,
    Refusal,
    Transition,
    VersionView,
    allowed_actions,
    already_applied,
    event_type_of,
    excluded_from_latest,
    lifecycle_tags,
    resolve_latest,
    rollback_target,
    target_of,
    template_image,
    template_with_image,
    transition,
)
from shared.domain.manifest import MAX_MANIFEST_PARTS, STANDARD_VERSION_TAGS, manifest_budget
from shared.domain.resources import MAX_TAGS, check_tags
from shared.domain.versions import VersionState as S

A = Action
# The expected table, written out independently of the module's: (state, action) -> target.
EXPECTED: dict[tuple[S, Action], S] = {
    (S.STAGED, A.START_VALIDATION): S.VALIDATING,
    (S.VALIDATING, A.PASS_VALIDATION): S.VALIDATED,
    (S.VALIDATING, A.FAIL_VALIDATION): S.FAILED,
    (S.VALIDATED, A.APPROVE): S.APPROVED,
    (S.VALIDATED, A.AUTO_APPROVE): S.APPROVED,
    (S.VALIDATED, A.REJECT): S.REJECTED,
    (S.VALIDATED, A.EXPIRE_APPROVAL): S.REJECTED,
    (S.APPROVED, A.ACTIVATE): S.ACTIVE,
    (S.APPROVED, A.PROMOTE_RING): S.ACTIVE,
    (S.ACTIVE, A.PROMOTE_RING): S.ACTIVE,
    (S.ACTIVE, A.DEMOTE_TO_BACKUP): S.BACKUP,
    (S.ACTIVE, A.ROLL_BACK): S.ROLLED_BACK,
    (S.BACKUP, A.REACTIVATE): S.ACTIVE,
    (S.DEPRECATED, A.REACTIVATE): S.ACTIVE,
    **{
        (s, A.DEPRECATE): S.DEPRECATED
        for s in (
            S.STAGED,
            S.VALIDATED,
            S.APPROVED,
            S.FAILED,
            S.REJECTED,
            S.BACKUP,
            S.ROLLED_BACK,
        )
    },
    **{
        (s, A.DELETE): S.DELETED
        for s in (S.STAGED, S.FAILED, S.REJECTED, S.ROLLED_BACK, S.DEPRECATED)
    },
}


@pytest.mark.parametrize(("state", "action"), list(itertools.product(S, Action)))
def test_every_state_and_action(state: S, action: Action) -> None:
    result = transition(state, action, "ops@contoso.com", requester="builder@contoso.com")
    wanted = EXPECTED.get((state, action))
    if wanted is None:
        assert isinstance(result, Refusal)
        assert result.state is state
        assert action not in result.allowed
        assert set(result.allowed) == {a for (s, a) in EXPECTED if s is state}
        assert state.value in result.text
        assert action.value in result.text
    else:
        assert result == Transition(state, wanted, action, "ops@contoso.com")
        assert target_of(action) is wanted


def test_nothing_leaves_deleted_and_active_is_never_deleted_directly() -> None:
    assert allowed_actions(S.DELETED) == ()
    assert A.DELETE not in allowed_actions(S.ACTIVE)
    assert A.DEPRECATE not in allowed_actions(S.ACTIVE)


def test_self_approval_is_refused_case_insensitively_but_others_may_approve() -> None:
    refused = transition(S.VALIDATED, "approve", "Alice@Contoso.com", requester="alice@contoso.com")
    assert isinstance(refused, Refusal)
    assert "four eyes" in refused.reason
    assert refused.state is S.VALIDATED
    ok = transition(S.VALIDATED, "approve", "bob@contoso.com", requester="alice@contoso.com")
    assert isinstance(ok, Transition)
    assert ok.state is S.APPROVED
    # The requester may still reject their own build; the app may auto-approve its own.
    assert isinstance(
        transition(S.VALIDATED, "reject", "alice@contoso.com", requester="alice@contoso.com"),
        Transition,
    )
    assert isinstance(
        transition(S.VALIDATED, "auto_approve", "imagefactory", requester="imagefactory"),
        Transition,
    )


def test_unknown_action_missing_actor_and_missing_state_are_refused() -> None:
    unknown = transition(S.APPROVED, "promote", "ops")
    assert isinstance(unknown, Refusal)
    assert "unknown action" in unknown.reason
    assert unknown.allowed == allowed_actions(S.APPROVED)
    assert isinstance(transition(S.APPROVED, "activate", "  "), Refusal)
    no_state = transition(None, "activate", "ops")
    assert isinstance(no_state, Refusal)
    assert no_state.allowed == ()


def test_only_active_is_in_latest() -> None:
    assert [s for s in S if not excluded_from_latest(s)] == [S.ACTIVE]
    assert excluded_from_latest(None)


AT = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


def test_lifecycle_tags_replace_only_the_lifecycle_keys() -> None:
    before = {
        "cost-center": "4711",
        "Imagefactory:State": "approved",
        "imagefactory:backup-until": "2020-01-01T00:00:00+00:00",
        "imagefactory:change-ticket": "CHG-1",
    }
    change = transition(S.APPROVED, "activate", "ops@contoso.com")
    assert isinstance(change, Transition)
    tags = lifecycle_tags(before, change, AT, reason="x" * 400, change_ticket="CHG-2")
    check_tags(tags)
    assert tags["cost-center"] == "4711"
    assert "Imagefactory:State" not in tags
    assert tags["imagefactory:state"] == "active"
    assert tags["imagefactory:state-previous"] == "approved"
    assert tags["imagefactory:state-by"] == "ops@contoso.com"
    assert tags["imagefactory:state-at"] == "2026-01-05T09:30:00+00:00"
    assert tags["imagefactory:change-ticket"] == "CHG-2"
    assert len(tags["imagefactory:state-reason"]) == 256
    assert "imagefactory:backup-until" not in tags  # only a backup carries it
    demote = Transition(S.ACTIVE, S.BACKUP, A.DEMOTE_TO_BACKUP, "imagefactory")
    backup = lifecycle_tags(tags, demote, AT, backup_until=AT + timedelta(days=30))
    assert backup["imagefactory:backup-until"] == "2026-02-04T09:30:00+00:00"
    assert "imagefactory:change-ticket" not in backup  # the ticket belongs to its change


def test_already_applied_recognises_a_retried_write_only() -> None:
    change = transition(S.APPROVED, "activate", "ops@contoso.com")
    assert isinstance(change, Transition)
    tags = lifecycle_tags({}, change, AT)
    assert already_applied(tags, "activate", "OPS@contoso.com", AT)
    assert not already_applied(tags, "activate", "ops@contoso.com", AT + timedelta(seconds=1))
    assert not already_applied(tags, "activate", "someone-else", AT)
    assert not already_applied(tags, "demote_to_backup", "ops@contoso.com", AT)
    assert not already_applied(tags, "nonsense", "ops@contoso.com", AT)


def _view(
    name: str, excluded: bool, state: str = "Succeeded", region: str = "westeurope"
) -> VersionView:
    return VersionView(name, None, state, {region: excluded})


def test_latest_is_the_highest_succeeded_version_not_excluded_in_that_region() -> None:
    versions = [
        _view("1.0.9", False),
        _view("1.0.10", False),  # numeric order, not text
        _view("2.0.0", True),  # excluded
        _view("3.0.0", False, state="Updating"),  # not Succeeded
        _view("4.0.0", False, region="northeurope"),  # not in this region
    ]
    assert resolve_latest(versions, "westeurope") == "1.0.10"
    assert resolve_latest(versions, "northeurope") == "4.0.0"
    assert resolve_latest(versions, "eastus") is None


def test_event_types_name_the_state() -> None:
    assert event_type_of(S.ACTIVE) == "ImageFactory.ImageVersionActive"
    assert event_type_of(S.ROLLED_BACK) == "ImageFactory.ImageVersionRolledBack"
    assert event_type_of(S.STAGED) == "ImageFactory.ImageVersionStaged"


def test_worst_case_tags_fit_azure_limit() -> None:
    """Standard tags + every lifecycle tag + the largest manifest + its count and hash."""
    assert len(LIFECYCLE_TAG_KEYS) - 1 <= LIFECYCLE_TAG_RESERVE
    worst = STANDARD_VERSION_TAGS + (len(LIFECYCLE_TAG_KEYS) - 1) + MAX_MANIFEST_PARTS + 2
    assert worst <= MAX_TAGS
    assert manifest_budget(STANDARD_VERSION_TAGS) == MAX_MANIFEST_PARTS
    # The catalogue's own tags come out of the manifest's share, never the lifecycle's.
    extra = 5
    assert manifest_budget(STANDARD_VERSION_TAGS + extra) == MAX_MANIFEST_PARTS - extra
    assert (
        manifest_budget(STANDARD_VERSION_TAGS + extra)
        + STANDARD_VERSION_TAGS
        + extra
        + 2
        + LIFECYCLE_TAG_RESERVE
        == MAX_TAGS
    )


def test_host_pool_template_points_at_exactly_the_version_and_keeps_the_rest() -> None:
    vid = (
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/galleries/x/images/i"
        "/versions/1.2.3"
    )
    marketplace = json.dumps(
        {
            "imageType": "Gallery",
            "galleryImageSKU": "win11-25h2-avd",
            "galleryItemId": "x",
            "vmSize": {"id": "D4"},
        }
    )
    assert template_image(marketplace) is None
    updated = template_with_image(marketplace, vid)
    doc = json.loads(updated)
    assert doc["imageType"] == "CustomImage"
    assert doc["customImageId"] == vid
    assert doc["galleryImageSKU"] is None
    assert doc["galleryItemId"] is None
    assert doc["vmSize"] == {"id": "D4"}
    assert template_image(updated) == vid
    for broken in (None, "", "not json", "[1]"):
        assert json.loads(template_with_image(broken, vid)) == {
            "imageType": "CustomImage",
            "customImageId": vid,
        }
        assert template_image(broken) is None


def test_rollback_target_is_the_most_recent_backup_or_the_named_version() -> None:
    versions = [
        {"version": "1.0.0", "state": "backup", "state_at": "2026-01-01T00:00:00+00:00"},
        {"version": "1.0.2", "state": "backup", "state_at": "2026-01-03T00:00:00+00:00"},
        {"version": "1.0.3", "state": "backup", "state_at": "2026-01-02T00:00:00+00:00"},
        {"version": "1.0.4", "state": "active", "state_at": "2026-01-03T00:00:00+00:00"},
        {"version": "0.9.0", "state": "deprecated", "state_at": None},
    ]
    chosen = rollback_target(versions)
    assert chosen is not None
    assert chosen["version"] == "1.0.2"
    named = rollback_target(versions, "0.9.0")
    assert named is not None
    assert named["state"] == "deprecated"
    assert rollback_target(versions, "5.0.0") is None
    assert rollback_target([v for v in versions if v["state"] != "backup"]) is None
