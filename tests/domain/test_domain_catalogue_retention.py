"""The catalogue's retention section: defaults, the resolved policy, and refusals by field."""

from __future__ import annotations

from typing import Any

import pytest

from shared.domain.catalogue import CatalogueImage, parse_catalogue, retention_policy
from shared.domain.retention import RetentionPolicy
from shared.errors import InputError
from tests.domain.test_domain_catalogue import image


def _with(retention: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    raw = image(**extra)
    if retention is not None:
        raw["retention"] = retention
    return raw


def _fields(error: InputError) -> dict[str, str]:
    return {e.path: e.reason for e in error.errors}


def test_no_section_gives_the_default_policy() -> None:
    entry = parse_catalogue({"images": [_with(None)]}).images[0]
    assert retention_policy(entry) == RetentionPolicy()


def test_every_key_reaches_the_policy() -> None:
    raw = _with(
        {
            "keep_versions": 5,
            "end_of_life_days": 90,
            "staged_max_age_days": 3,
            "failed": {"delete_at_once": False},
            "deprecation_days": 2,
            "retained_vm_days": 4,
            "orphan_min_age_hours": 6,
        }
    )
    raw["lifecycle"] = {"backup_days": 10}
    entry = parse_catalogue({"images": [raw]}).images[0]
    assert retention_policy(entry) == RetentionPolicy(
        keep_versions=5,
        backup_days=10,
        staged_max_age_days=3,
        delete_failed_at_once=False,
        deprecation_days=2,
        retained_vm_days=4,
        orphan_min_age_hours=6,
    )


def test_the_backup_duration_is_the_lifecycles_alone() -> None:
    raw = _with({"keep_versions": 2}, lifecycle={"backup_days": 45})
    assert retention_policy(parse_catalogue({"images": [raw]}).images[0]).backup_days == 45
    with pytest.raises(InputError) as caught:  # one place: not in the retention section
        parse_catalogue({"images": [_with({"backup_days": 45})]})
    assert "images[0].retention.backup_days" in _fields(caught.value)


@pytest.mark.parametrize("key", ["staged_max_age_days", "deprecation_days", "retained_vm_days"])
def test_a_negative_duration_is_refused_naming_the_field(key: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_catalogue({"images": [_with({key: -1})]})
    assert f"images[0].retention.{key}" in _fields(caught.value)


def test_keep_zero_with_host_pools_keeps_the_active_version() -> None:
    entry = parse_catalogue(
        {"images": [_with({"keep_versions": 0}, host_pools=["hp-office"])]}
    ).images[0]
    assert isinstance(entry, CatalogueImage)
    assert retention_policy(entry).keep_versions == 0


def test_a_policy_that_would_keep_nothing_is_refused() -> None:
    with pytest.raises(InputError) as caught:
        parse_catalogue({"images": [_with({"keep_versions": 0})]})
    reason = _fields(caught.value)["images[0].retention.keep_versions"]
    assert "keep nothing" in reason


def test_unknown_retention_keys_are_refused() -> None:
    with pytest.raises(InputError) as caught:
        parse_catalogue({"images": [_with({"keep": 2})]})
    assert "images[0].retention.keep" in _fields(caught.value)
