"""Gallery versions: parsing, ordering, allocation that never reuses, lifecycle states."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.domain.versions import (
    INT32_MAX,
    ImageVersion,
    VersionState,
    highest,
    next_version,
    state_from_tags,
    why_build_may_not_delete,
)
from shared.errors import InputError, PermanentError


def test_parse_and_format_round_trip() -> None:
    version = ImageVersion.parse("1.3.0")
    assert (version.major, version.minor, version.patch) == (1, 3, 0)
    assert str(version) == "1.3.0"


def test_leading_zeros_are_read_and_dropped_when_printed() -> None:
    assert str(ImageVersion.parse("22.04.202401100")) == "22.4.202401100"


def test_order_is_numeric_not_textual() -> None:
    texts = ["1.10.0", "1.9.0", "1.9.10", "1.9.2", "2.0.0", "0.0.1"]
    ordered = sorted(ImageVersion.parse(t) for t in texts)
    assert [str(v) for v in ordered] == ["0.0.1", "1.9.0", "1.9.2", "1.9.10", "1.10.0", "2.0.0"]


def test_int32_bounds() -> None:
    assert str(ImageVersion.parse(f"{INT32_MAX}.0.{INT32_MAX}")) == f"{INT32_MAX}.0.{INT32_MAX}"
    with pytest.raises(InputError) as info:
        ImageVersion.parse(f"1.{INT32_MAX + 1}.0", field="existing[3]")
    assert info.value.errors[0].path == "existing[3]"
    with pytest.raises(InputError):
        ImageVersion(1, -1, 0)


@pytest.mark.parametrize(
    "text", ["", "1", "1.2", "1.2.3.4", "v1.2.3", "1.2.x", "1..3", " 1.2.3 x", "latest"]
)
def test_malformed_versions_are_refused(text: str) -> None:
    with pytest.raises(InputError) as info:
        ImageVersion.parse(text)
    assert "Major.Minor.Patch" in info.value.errors[0].reason
    assert ImageVersion.try_parse(text) is None


def test_bump_each_part() -> None:
    version = ImageVersion(1, 3, 7)
    assert str(version.bump("patch")) == "1.3.8"
    assert str(version.bump("minor")) == "1.4.0"
    assert str(version.bump("major")) == "2.0.0"


def test_bump_past_int32_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError, match="exceed"):
        ImageVersion(1, 0, INT32_MAX).bump("patch")


def test_first_version_is_1_0_0_or_the_floor() -> None:
    assert next_version([]) == "1.0.0"
    assert next_version([], floor="2.5.0") == "2.5.0"


def test_next_version_is_above_every_allocated_one_even_deleted() -> None:
    # 1.0.2 was deleted from the gallery but stays in the allocation record.
    allocated = ["1.0.0", "1.0.1", "1.0.2"]
    assert next_version(allocated) == "1.0.3"
    assert next_version(allocated, "minor") == "1.1.0"
    assert next_version(allocated, "major") == "2.0.0"


def test_next_version_ignores_input_order_and_compares_numerically() -> None:
    assert next_version(["1.10.0", "1.9.5", "1.2.0"]) == "1.10.1"


def test_floor_wins_only_when_above_the_bumped_version() -> None:
    assert next_version(["1.0.4"], floor="2.0.0") == "2.0.0"
    assert next_version(["3.1.0"], floor="2.0.0") == "3.1.1"
    # A floor equal to an allocated version is never handed out again.
    assert next_version(["2.0.0"], floor="2.0.0") == "2.0.1"


def test_never_reuses_over_many_allocations() -> None:
    allocated: list[str] = []
    for index in range(50):
        bump = ("patch", "minor", "major")[index % 3]
        allocated.append(next_version(allocated, bump))  # type: ignore[arg-type]
    assert len(set(allocated)) == len(allocated)
    parsed = [ImageVersion.parse(v) for v in allocated]
    assert parsed == sorted(parsed)


def test_malformed_record_is_refused_with_its_index() -> None:
    with pytest.raises(InputError) as info:
        next_version(["1.0.0", "oops"])
    assert info.value.errors[0].path == "existing[1]"


def test_bad_bump_and_bad_floor_are_refused() -> None:
    with pytest.raises(InputError) as info:
        next_version(["1.0.0"], "huge")  # type: ignore[arg-type]
    assert info.value.errors[0].path == "bump"
    with pytest.raises(InputError) as info:
        next_version([], floor="2")
    assert info.value.errors[0].path == "floor"


def test_highest_skips_malformed_entries() -> None:
    assert highest(["1.2.0", "junk", "1.10.0"]) == "1.10.0"
    assert highest(["junk"]) is None


def test_state_values_and_latest_rule() -> None:
    assert [s.value for s in VersionState][:2] == ["staged", "validating"]
    assert not VersionState.ACTIVE.excluded_from_latest
    assert all(s.excluded_from_latest for s in VersionState if s is not VersionState.ACTIVE)


def test_state_from_tags_is_case_insensitive() -> None:
    assert state_from_tags({"ImageFactory:State": "Active"}) is VersionState.ACTIVE
    assert state_from_tags({"imagefactory:state": "weird"}) is None
    assert state_from_tags({}) is None
    assert state_from_tags(None) is None


EOL = datetime(2026, 7, 1, tzinfo=UTC)
STAGED_BY_B1 = {"imagefactory:build-id": "b-1", "ImageFactory:State": "Staged"}


def _refusal(
    tags: dict[str, str], build_id: str | None = "b-1", blocked: bool = False
) -> str | None:
    return why_build_may_not_delete(
        tags, build_id, blocked_before_end_of_life=blocked, end_of_life=EOL
    )


def test_a_build_may_delete_only_the_version_it_staged() -> None:
    assert _refusal(STAGED_BY_B1) is None
    assert "build_id is missing" in (_refusal(STAGED_BY_B1, None) or "")
    assert "no imagefactory:build-id tag" in (_refusal({"imagefactory:state": "staged"}) or "")
    assert "built by build b-1, not b-2" in (_refusal(STAGED_BY_B1, "b-2") or "")
    for state in ("active", "backup", "deprecated", "weird"):
        reason = _refusal({**STAGED_BY_B1, "ImageFactory:State": state})
        assert reason is not None
        assert f"'{state}', not 'staged'" in reason
    assert "None, not 'staged'" in (_refusal({"imagefactory:build-id": "b-1"}) or "")


def test_blocked_deletion_before_end_of_life_is_named() -> None:
    reason = _refusal(STAGED_BY_B1, blocked=True)
    assert reason is not None
    assert "blockDeletionBeforeEndOfLife is true" in reason
    assert EOL.isoformat() in reason
    without_date = why_build_may_not_delete(
        STAGED_BY_B1, "b-1", blocked_before_end_of_life=True, end_of_life=None
    )
    assert "before its end of life" in (without_date or "")
