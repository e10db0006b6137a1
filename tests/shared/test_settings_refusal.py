"""A missing or malformed app setting: the app starts no work and says why in one line."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from shared import settings as settings_module
from shared.errors import SettingsError
from shared.settings import Settings, refuse_without_settings
from tests.triggers.trigger_kit import FakeClient, user_function
from triggers import retention, timers

GOOD = {"AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001"}


@pytest.fixture(autouse=True)
def _fresh() -> None:
    settings_module._refused.clear()


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({}, "AZURE_SUBSCRIPTION_ID"),
        ({**GOOD, "POLL_INTERVAL_SECONDS": "1"}, "POLL_INTERVAL_SECONDS"),
        ({**GOOD, "AZURE_ARM_ENDPOINT": "http://plain"}, "AZURE_ARM_ENDPOINT"),
        ({**GOOD, "BUILD_VM_IDENTITY_ID": "not-an-id"}, "BUILD_VM_IDENTITY_ID"),
    ],
)
def test_bad_settings_are_a_settings_error_naming_the_setting(
    env: dict[str, str], field: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert [e.path for e in caught.value.errors] == [field]
    assert caught.value.to_json()["error"]["code"] == "AppMisconfigured"  # type: ignore[index]


def test_refusal_logs_one_line_per_problem(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    log = logging.getLogger("test.refusal")
    with caplog.at_level(logging.ERROR, logger="test.refusal"):
        assert refuse_without_settings(log, "the probe") is None
        assert refuse_without_settings(log, "the probe") is None
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["the probe refused to start: app setting AZURE_SUBSCRIPTION_ID: is required"]


def _run(function: Any, **kwargs: Any) -> Any:
    result = function(**kwargs)
    return asyncio.run(result) if asyncio.iscoroutine(result) else result


@pytest.mark.parametrize(
    ("builder", "needs_client"),
    [
        (timers.marketplace_watch, False),
        (timers.build_janitor, True),
        (retention.retention_timer, True),
    ],
    ids=["watch", "janitor", "retention"],
)
def test_timers_start_no_work_without_settings(
    builder: Any, needs_client: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    client = FakeClient()
    kwargs: dict[str, Any] = {"timer": None}
    if needs_client:
        kwargs["client"] = client
    assert _run(user_function(builder), **kwargs) is None
    assert client.calls == []
