"""RETENTION_SCHEDULE: the default, a valid override, a malformed value refused by name."""

from __future__ import annotations

import pytest

from shared.errors import InputError
from shared.settings import DEFAULT_RETENTION_SCHEDULE, retention_schedule


def test_default_is_daily_at_three() -> None:
    assert retention_schedule({}) == DEFAULT_RETENTION_SCHEDULE == "0 0 3 * * *"
    assert retention_schedule({"RETENTION_SCHEDULE": "  "}) == DEFAULT_RETENTION_SCHEDULE


def test_a_six_field_expression_is_taken() -> None:
    assert retention_schedule({"RETENTION_SCHEDULE": "0 30 1 * * Sun"}) == "0 30 1 * * Sun"


@pytest.mark.parametrize("raw", ["0 3 * * *", "every day", "0 0 3 * * * *", "0 0 3 * * ;rm"])
def test_a_malformed_schedule_is_refused_naming_the_setting(raw: str) -> None:
    with pytest.raises(InputError) as caught:
        retention_schedule({"RETENTION_SCHEDULE": raw})
    assert caught.value.errors[0].path == "RETENTION_SCHEDULE"
