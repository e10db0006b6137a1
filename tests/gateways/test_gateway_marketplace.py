"""Marketplace versions through the real SDK against the emulator."""

from __future__ import annotations

import pytest

from shared.azure import compute
from shared.errors import TemporaryError
from shared.settings import Settings
from tests.emulator.conftest import EmulatorEnv, EmulatorFactory
from tests.gateways.conftest import point_app_at

PUB, OFFER, SKU = "MicrosoftWindowsDesktop", "windows-11", "win11-25h2-avd"


def test_latest_is_the_numerically_newest(
    emulator_env: EmulatorEnv, app_settings: Settings
) -> None:
    assert compute.latest_marketplace_version(app_settings, "westeurope", PUB, OFFER, SKU) == (
        "26200.7462.251205"
    )
    # A version whose text sorts lower but whose number is higher still wins.
    status, _ = emulator_env.admin(
        "POST",
        "marketplace/versions",
        {"publisher": PUB, "offer": OFFER, "sku": SKU, "version": "26200.10000.260101"},
    )
    assert status in (200, 201)
    assert compute.latest_marketplace_version(app_settings, "westeurope", PUB, OFFER, SKU) == (
        "26200.10000.260101"
    )


def test_unknown_sku_has_no_latest(app_settings: Settings) -> None:
    assert (
        compute.latest_marketplace_version(app_settings, "westeurope", PUB, OFFER, "nope") is None
    )


def test_throttled_listing_is_temporary_with_retry_after(
    emulator_factory: EmulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Retry-After in plain seconds (the emulator's default under a virtual clock is a
    # millisecond header, so the SDK does not sleep real seconds).
    env = emulator_factory(retry_after="seconds")
    settings = point_app_at(env, monkeypatch)
    status, _ = env.admin(
        "POST", "faults", {"type": "http", "status": 429, "retry_after": 42, "count": 1}
    )
    assert status == 201
    with pytest.raises(TemporaryError) as caught:
        compute.latest_marketplace_version(settings, "westeurope", PUB, OFFER, SKU)
    assert caught.value.retry_after == 42
    assert "TooManyRequests" in str(caught.value)
    # The fault fired once; the next call answers.
    assert compute.latest_marketplace_version(settings, "westeurope", PUB, OFFER, SKU)


def test_retry_after_in_milliseconds_is_understood(
    emulator_env: EmulatorEnv, app_settings: Settings
) -> None:
    emulator_env.admin("POST", "faults", {"type": "http", "status": 503, "count": 1})
    emulator_env.admin(
        "POST", "faults", {"type": "http", "status": 429, "retry_after": 30, "count": 1}
    )
    with pytest.raises(TemporaryError) as first:
        compute.marketplace_versions(app_settings, "westeurope", PUB, OFFER, SKU)
    assert "ServiceUnavailable" in str(first.value)
    with pytest.raises(TemporaryError) as second:
        compute.marketplace_versions(app_settings, "westeurope", PUB, OFFER, SKU)
    assert second.value.retry_after == pytest.approx(0.02)
