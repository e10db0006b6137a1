"""App settings: read from the environment at call time, never at import time.

Every setting is documented in docs/settings.md. Production reads them from the Function App's
application settings; the devhost from local.settings.json and the environment.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.errors import SettingsError


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError.single(
            name, f"must be an integer, got {raw!r}", "bad setting"
        ) from None
    if not low <= value <= high:
        raise SettingsError.single(name, f"must be between {low} and {high}", "bad setting")
    return value


_IDENTITY_ID = re.compile(
    r"/subscriptions/[^/\s']+/resourceGroups/[^/\s']+/providers/"
    r"Microsoft\.ManagedIdentity/userAssignedIdentities/[^/\s']+",
    re.IGNORECASE,
)


def _identity(raw: str) -> str | None:
    """BUILD_VM_IDENTITY_ID: a user-assigned identity's resource id, or unset."""
    value = raw.strip()
    if not value:
        return None
    if not _IDENTITY_ID.fullmatch(value):
        raise SettingsError.single(
            "BUILD_VM_IDENTITY_ID",
            "must be the resource id of a user-assigned managed identity "
            "(/subscriptions/.../providers/Microsoft.ManagedIdentity/userAssignedIdentities/NAME)",
            "bad setting",
        )
    return value


def _safety_poll(env: Mapping[str, str]) -> int:
    """SAFETY_POLL_SECONDS: 0 (resource events off) or 10-3600; 300 when unset."""
    value = _int(env, "SAFETY_POLL_SECONDS", 300, 0, 3600)
    if 0 < value < 10:
        raise SettingsError.single(
            "SAFETY_POLL_SECONDS", "must be 0 (events off) or between 10 and 3600", "bad setting"
        )
    return value


@dataclass(frozen=True)
class Settings:
    """The settings the functions read; see docs/settings.md for each one."""

    subscription_id: str
    allowed_subscriptions: tuple[str, ...]
    factory_resource_group: str
    factory_location: str
    catalogue_path: str
    arm_endpoint: str | None = None
    ca_bundle: str | None = None
    arm_max_retries: int = 3
    eventgrid_topic_endpoint: str | None = None
    eventgrid_local: bool = False
    sysprep_signal_url: str | None = None
    poll_interval_seconds: int = 15
    build_vm_identity_id: str | None = None
    # Event-first waits: the safety poll's interval; 0 turns resource events off (every wait
    # then polls every poll_interval_seconds).
    safety_poll_seconds: int = 300

    @property
    def uses_emulator(self) -> bool:
        """The local emulator: an ARM endpoint *and* the CA bundle that signs it.

        An endpoint alone (a sovereign cloud, say) keeps the real credential: the local token is
        never sent to anything but an endpoint whose private CA the operator pointed us at.
        """
        return bool(self.arm_endpoint and self.ca_bundle)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        sub = env.get("AZURE_SUBSCRIPTION_ID", "").strip()
        if not sub:
            raise SettingsError.single("AZURE_SUBSCRIPTION_ID", "is required", "bad setting")
        allowed = _split(env.get("ALLOWED_SUBSCRIPTIONS")) or (sub,)
        arm = env.get("AZURE_ARM_ENDPOINT", "").strip() or None
        ca = env.get("AZURE_CA_BUNDLE", "").strip() or None
        if arm and not arm.startswith("https://"):
            raise SettingsError.single(
                "AZURE_ARM_ENDPOINT", "must be an https:// URL", "bad setting"
            )
        return cls(
            subscription_id=sub,
            allowed_subscriptions=tuple(s.lower() for s in allowed),
            factory_resource_group=env.get("FACTORY_RESOURCE_GROUP", "rg-image-factory"),
            factory_location=env.get("FACTORY_LOCATION", "westeurope"),
            catalogue_path=env.get("IMAGE_CATALOGUE_PATH", "catalogue/images.yaml"),
            arm_endpoint=arm,
            ca_bundle=ca,
            arm_max_retries=_int(env, "ARM_MAX_RETRIES", 3, 0, 10),
            eventgrid_topic_endpoint=env.get("EVENTGRID_TOPIC_ENDPOINT", "").strip() or None,
            sysprep_signal_url=env.get("SYSPREP_SIGNAL_URL", "").strip() or None,
            poll_interval_seconds=_int(env, "POLL_INTERVAL_SECONDS", 15, 5, 3600),
            build_vm_identity_id=_identity(env.get("BUILD_VM_IDENTITY_ID", "")),
            safety_poll_seconds=_safety_poll(env),
        )


@dataclass(frozen=True)
class ApiSettings:
    """What the HTTP API reads (docs/settings.md): the callback allow-list and signing secret.

    The secret is never part of ``repr`` (so never in a log line that prints the settings).
    """

    callback_allowed_hosts: tuple[str, ...] = ()
    callback_signing_secret: str | None = field(default=None, repr=False)
    callback_ca_bundle: str | None = None
    callback_max_attempts: int = 6

    @property
    def callbacks_enabled(self) -> bool:
        return bool(self.callback_signing_secret and self.callback_allowed_hosts)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        env = os.environ if env is None else env
        return cls(
            callback_allowed_hosts=tuple(
                h.lower() for h in _split(env.get("CALLBACK_ALLOWED_HOSTS"))
            ),
            callback_signing_secret=env.get("CALLBACK_SIGNING_SECRET", "") or None,
            callback_ca_bundle=env.get("CALLBACK_CA_BUNDLE", "").strip() or None,
            callback_max_attempts=_int(env, "CALLBACK_MAX_ATTEMPTS", 6, 1, 20),
        )


def load_api_settings() -> ApiSettings:
    """The HTTP API's settings (read now, from the environment)."""
    return ApiSettings.from_env()


def load_settings() -> Settings:
    """The current settings (read now, from the environment)."""
    return Settings.from_env()


DEFAULT_RETENTION_SCHEDULE = "0 0 3 * * *"
_NCRONTAB_FIELD = re.compile(r"^[0-9*/,\-A-Za-z?]+$")


def retention_schedule(env: Mapping[str, str] | None = None) -> str:
    """``RETENTION_SCHEDULE``: the retention timer's six-field NCRONTAB (default daily 03:00 UTC).

    Read when the function is indexed (a timer's schedule is part of its binding). Six fields of
    NCRONTAB characters, else a SettingsError naming the setting.
    """
    env = os.environ if env is None else env
    raw = (env.get("RETENTION_SCHEDULE") or "").strip()
    if not raw:
        return DEFAULT_RETENTION_SCHEDULE
    fields = raw.split()
    if len(fields) != 6 or not all(_NCRONTAB_FIELD.match(f) for f in fields):
        raise SettingsError.single(
            "RETENTION_SCHEDULE",
            f"must be a six-field NCRONTAB expression such as {DEFAULT_RETENTION_SCHEDULE!r}, "
            f"got {raw!r}",
            "bad setting",
        )
    return raw


_refused: set[str] = set()


def refuse_without_settings(log: logging.Logger, what: str) -> Settings | None:
    """The settings, or None after one clear log line (once per distinct problem per process)
    when they are missing or malformed: the caller then starts no work at all."""
    try:
        return load_settings()
    except SettingsError as error:
        settings_refused(log, what, error)
        return None


def settings_refused(log: logging.Logger, what: str, error: SettingsError) -> None:
    """The one log line for a settings problem (once per distinct problem per process)."""
    text = "; ".join(str(e) for e in error.errors)
    if text not in _refused:
        _refused.add(text)
        log.error("%s refused to start: app setting %s", what, text)
