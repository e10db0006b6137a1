"""The catalogue's per-image ``lifecycle`` section: defaults, bounds, and the hash it spares."""

from __future__ import annotations

import pytest
import yaml

from shared.domain.catalogue import catalogue_hash, parse_catalogue
from tests.domain.test_domain_catalogue import BUNDLED, errors_of, image, paths_of


def test_defaults_when_absent() -> None:
    entry = parse_catalogue({"images": [image()]}).images[0]
    assert entry.lifecycle.approval_timeout_days == 14
    assert entry.lifecycle.auto_approve_after_days is None
    assert entry.lifecycle.backup_days == 30


def test_given_values_are_kept() -> None:
    raw = image(
        lifecycle={"approval_timeout_days": 5, "auto_approve_after_days": 2, "backup_days": 7}
    )
    entry = parse_catalogue({"images": [raw]}).images[0]
    assert (entry.lifecycle.approval_timeout_days, entry.lifecycle.auto_approve_after_days) == (
        5,
        2,
    )
    assert entry.lifecycle.backup_days == 7


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"approval_timeout_days": 0}, "approval_timeout_days"),
        ({"backup_days": -1}, "backup_days"),
        ({"auto_approve_after_days": 0}, "auto_approve_after_days"),
        ({"approve_after": 3}, "approve_after"),
    ],
)
def test_bad_values_name_the_field(section: dict[str, int], field: str) -> None:
    assert f"images[0].lifecycle.{field}" in paths_of({"images": [image(lifecycle=section)]})


def test_auto_approval_must_come_before_the_timeout() -> None:
    raw = image(lifecycle={"approval_timeout_days": 3, "auto_approve_after_days": 3})
    errors = errors_of({"images": [raw]})
    assert any(
        path.endswith("auto_approve_after_days") and "approval_timeout_days" in reason
        for path, reason in errors
    ), errors


def test_lifecycle_durations_do_not_change_the_build_hash() -> None:
    plain = parse_catalogue({"images": [image()]}).images[0]
    tuned = parse_catalogue({"images": [image(lifecycle={"backup_days": 9})]}).images[0]
    assert catalogue_hash(plain) == catalogue_hash(tuned)
    other = parse_catalogue({"images": [image(description="another scope")]}).images[0]
    assert catalogue_hash(other) != catalogue_hash(plain)


def test_bundled_catalogue_states_a_lifecycle() -> None:
    text = BUNDLED.read_text()
    assert "lifecycle:" in text
    entry = parse_catalogue(yaml.safe_load(text)).images[0]
    assert entry.lifecycle.backup_days >= 1
