"""The client factory: real SDK clients, pointed at Azure or at the emulator by settings.

One code path. With ``AZURE_ARM_ENDPOINT`` and ``AZURE_CA_BUNDLE`` set, the clients talk to
that ARM endpoint (the local emulator) with a local token credential and trust that CA bundle;
without them they use ``DefaultAzureCredential`` (managed identity in Azure) against the public
cloud. Clients are cached per settings value, so each activity reuses connections.

The SDK's per-request log lines (``azure.core.pipeline.policies.http_logging_policy``: every
request's URL and headers at INFO) are held at WARNING unless ``AZURE_SDK_HTTP_LOG_LEVEL`` says
otherwise (``INFO`` to see each request again): at INFO they flood the Functions log and
Application Insights with two lines per ARM call.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any

from azure.core.credentials import AccessToken, TokenCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.desktopvirtualization import DesktopVirtualizationMgmtClient

from shared.settings import Settings
from shared.telemetry import ArmMetricsPolicy

ARM_SCOPE = "https://management.azure.com/.default"
HTTP_LOGGER = "azure.core.pipeline.policies.http_logging_policy"
HTTP_LOG_LEVEL_SETTING = "AZURE_SDK_HTTP_LOG_LEVEL"


def configure_sdk_logging(environ: dict[str, str] | None = None) -> int:
    """Set the SDK's per-request logger from ``AZURE_SDK_HTTP_LOG_LEVEL`` (default WARNING);
    an unknown level name falls back to WARNING. Returns the level set."""
    raw = (os.environ if environ is None else environ).get(HTTP_LOG_LEVEL_SETTING, "")
    level = logging.getLevelName(raw.strip().upper()) if raw.strip() else logging.WARNING
    if not isinstance(level, int):
        level = logging.WARNING
    logging.getLogger(HTTP_LOGGER).setLevel(level)
    return level


class LocalTokenCredential:
    """A credential for the local emulator: it issues an opaque, short-lived local token.

    The emulator accepts any bearer token; this never reaches Azure (the factory only uses it
    when an explicit emulator endpoint is configured) and carries no secret.
    """

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("local-emulator-token", int(time.time()) + 3600)

    def close(self) -> None:
        return None


def credential(settings: Settings) -> TokenCredential:
    # Every SDK client (ARM and Event Grid) takes its credential here, before its first request.
    configure_sdk_logging()
    if settings.uses_emulator:
        return LocalTokenCredential()
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def _client_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "retry_total": settings.arm_max_retries,
        # ARM requests and 429s as metrics (shared/telemetry.py); a no-op while telemetry is off.
        "per_call_policies": [ArmMetricsPolicy()],
    }
    if settings.arm_endpoint:
        kwargs["base_url"] = settings.arm_endpoint
        kwargs["credential_scopes"] = [ARM_SCOPE]
    if settings.uses_emulator:
        kwargs["connection_verify"] = settings.ca_bundle
        # The SDK ignores Retry-After: 0 and falls back to this interval.
        kwargs["polling_interval"] = 1
    return kwargs


@functools.lru_cache(maxsize=16)
def compute_client(
    settings: Settings, subscription_id: str | None = None
) -> ComputeManagementClient:
    sub = subscription_id or settings.subscription_id
    return ComputeManagementClient(credential(settings), sub, **_client_kwargs(settings))


@functools.lru_cache(maxsize=16)
def avd_client(
    settings: Settings, subscription_id: str | None = None
) -> DesktopVirtualizationMgmtClient:
    sub = subscription_id or settings.subscription_id
    return DesktopVirtualizationMgmtClient(credential(settings), sub, **_client_kwargs(settings))
