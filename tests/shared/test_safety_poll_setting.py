"""SAFETY_POLL_SECONDS: the event-first waits' safety poll (0 turns resource events off)."""

from __future__ import annotations

import pytest

from shared.errors import SettingsError
from shared.settings import Settings


def _settings(value: str | None) -> Settings:
    env = {"AZURE_SUBSCRIPTION_ID": "s"}
    if value is not None:
        env["SAFETY_POLL_SECONDS"] = value
    return Settings.from_env(env)


@pytest.mark.parametrize(("raw", "seconds"), [(None, 300), ("", 300), ("0", 0), ("600", 600)])
def test_safety_poll_defaults_to_five_minutes_and_zero_turns_events_off(
    raw: str | None, seconds: int
) -> None:
    assert _settings(raw).safety_poll_seconds == seconds


@pytest.mark.parametrize("raw", ["5", "-1", "3601", "often"])
def test_a_safety_poll_that_would_flood_arm_or_never_come_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError) as caught:
        _settings(raw)
    assert caught.value.errors[0].path == "SAFETY_POLL_SECONDS"
