"""Gateway tests run against the in-process emulator through the real SDK clients.

The emulator fixtures come from tests/emulator/conftest.py; ``app_settings`` points the app's
settings (environment variables, read at call time) at that emulator, exactly as a local run
does, and empties the client cache so every test gets clients for its own emulator.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.azure.clients import avd_client, compute_client
from shared.settings import Settings, load_settings
from tests.emulator import conftest as emulator_fixtures
from tests.emulator.conftest import EmulatorEnv

# The emulator's fixtures, made available to the tests in this folder.
emulator_factory = emulator_fixtures.emulator_factory
emulator_env = emulator_fixtures.emulator_env

FACTORY_RG = "rg-image-factory"


def point_app_at(env: EmulatorEnv, monkeypatch: pytest.MonkeyPatch, **extra: str) -> Settings:
    values = {
        "AZURE_SUBSCRIPTION_ID": env.subscription,
        "AZURE_ARM_ENDPOINT": env.url,
        "AZURE_CA_BUNDLE": str(env.ca_path),
        "FACTORY_RESOURCE_GROUP": FACTORY_RG,
        "FACTORY_LOCATION": "westeurope",
        # No SDK-internal retries: a throttled answer must reach the error mapping at once.
        "ARM_MAX_RETRIES": "0",
        **extra,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    compute_client.cache_clear()
    avd_client.cache_clear()
    return load_settings()


@pytest.fixture
def app_settings(emulator_env: EmulatorEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    yield point_app_at(emulator_env, monkeypatch)
    compute_client.cache_clear()
    avd_client.cache_clear()
