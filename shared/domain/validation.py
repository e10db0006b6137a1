"""Validation and ring promotion, the pure part: smoke checks, host health, the ring gate.

A staged version is tried on real session hosts before anyone may approve it. This module holds
what that needs without I/O: the typed smoke checks of the catalogue (``validation.checks``)
and the guest script each one runs as a managed run command, the judgement of a check from the
run command's output, deterministic names and tags for validation hosts, the health of a
session host from what AVD reports (status and ``sessionHostHealthCheckResults``), and the
health gate a ring must pass before the version moves to the next one. docs/validation.md is
the reference.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from shared.domain.resources import TAG_IMAGE, TAG_PREFIX, TAG_ROLE
from shared.domain.steps import APP_KEY_PREFIX, ScriptLine, parse_guest_health

# Tags on every validation resource (VM, NIC, OS disk): clean-up and retention find them.
TAG_VALIDATION_ID: Final = f"{TAG_PREFIX}validation-id"
TAG_VERSION: Final = f"{TAG_PREFIX}version"
ROLE_VALIDATION_HOST: Final = "validation-host"

# Tags on a ring's host pools: which version the ring holds and how far it is (no overtaking).
TAG_RING: Final = f"{TAG_PREFIX}ring"
TAG_RING_VERSION: Final = f"{TAG_PREFIX}ring-version"
TAG_RING_STATE: Final = f"{TAG_PREFIX}ring-state"  # soaking | passed | held
TAG_RING_SOAK_UNTIL: Final = f"{TAG_PREFIX}ring-soak-until"

CHECK_KINDS: Final = ("app_present", "bitlocker", "registry_value", "script")

# -- the catalogue's smoke checks ------------------------------------------------------------

_PACKAGE = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}"
_VERSION = r"\d{1,9}(?:\.\d{1,9}){0,3}"
_REG_PATH = r"(?:HKLM|HKCU)(?:\\[A-Za-z0-9 _.+()-]{1,255}){1,32}"
_REG_NAME = r"[A-Za-z0-9 _.+()-]{1,255}"
_TEXT = r"[^'\r\n`$\u2018\u2019]{0,1000}"


def _matches(pattern: str, description: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise PydanticCustomError(
                "invalid_format", "{value}: {what}", {"value": repr(value), "what": description}
            )
        return value

    return AfterValidator(check)


class _Check(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppPresentCheck(_Check):
    """An application is installed (at ``min_version`` or later, when given)."""

    kind: Literal["app_present"]
    name: Annotated[str, _matches(_PACKAGE, "a package name such as 7zip.7zip")]
    min_version: Annotated[str, _matches(_VERSION, "a dotted numeric version")] | None = None


class BitLockerCheck(_Check):
    """BitLocker on the OS volume is as expected (``off`` for images built by the factory)."""

    kind: Literal["bitlocker"]
    expected: Literal["off", "on"] = "off"


class RegistryValueCheck(_Check):
    """A registry value holds the expected data."""

    kind: Literal["registry_value"]
    path: Annotated[str, _matches(_REG_PATH, r"a registry key such as HKLM\SOFTWARE\Vendor")]
    name: Annotated[str, _matches(_REG_NAME, "a registry value name")]
    expected: Annotated[str, _matches(_TEXT, "text without quotes, $ or backticks")]


class ScriptCheck(_Check):
    """A custom script (recognised guest commands only) whose output contains the expected text."""

    kind: Literal["script"]
    name: Annotated[str, _matches(r"[a-z][a-z0-9-]{0,39}", "a short lower-case name")] | None = None
    lines: list[ScriptLine] = Field(min_length=1, max_length=50)
    expected_output: str = Field(min_length=1, max_length=2000)


SmokeCheck = Annotated[
    AppPresentCheck | BitLockerCheck | RegistryValueCheck | ScriptCheck,
    Field(discriminator="kind"),
]


def check_label(check: Any, index: int) -> str:
    """A short, readable name for a check (in statuses and failure reasons)."""
    if isinstance(check, AppPresentCheck):
        return f"checks[{index}] app_present {check.name}"
    if isinstance(check, BitLockerCheck):
        return f"checks[{index}] bitlocker {check.expected}"
    if isinstance(check, RegistryValueCheck):
        return f"checks[{index}] registry_value {check.path}\\{check.name}"
    name = getattr(check, "name", None)
    return f"checks[{index}] script" + (f" {name}" if name else "")


def check_script(check: Any) -> tuple[str, ...]:
    """The guest script a check runs (one managed run command per check and host)."""
    if isinstance(check, AppPresentCheck):
        return ("Get-InstalledApps",)
    if isinstance(check, BitLockerCheck):
        return ("Get-BitLockerVolume -MountPoint C:",)
    if isinstance(check, RegistryValueCheck):
        hive, _, rest = check.path.partition("\\")
        return (f"Get-ItemProperty -Path '{hive}:\\{rest}' -Name '{check.name}'",)
    if isinstance(check, ScriptCheck):
        return tuple(check.lines)
    raise TypeError(f"not a smoke check: {type(check).__name__}")


def _version_tuple(text: str) -> tuple[int, ...] | None:
    if not re.fullmatch(_VERSION, text.strip()):
        return None
    return tuple(int(p) for p in text.strip().split("."))


@dataclass(frozen=True)
class CheckResult:
    """A check's verdict on one host: passed or not, and why (with the guest's output)."""

    passed: bool
    detail: str


def _shown(output: str, limit: int = 1500) -> str:
    text = (output or "").strip()
    return text if len(text) <= limit else text[:limit] + " ..."


def evaluate_check(check: Any, run: Mapping[str, Any]) -> CheckResult:
    """Judge a finished run command (``state``, ``exit_code``, ``output``, ``error``)."""
    state = str(run.get("state") or "")
    output = str(run.get("output") or "")
    error = str(run.get("error") or "")
    if state != "Succeeded":
        why = error or output or f"run command {state or 'did not finish'}"
        return CheckResult(False, f"the check's script failed ({state}): {_shown(why)}")
    if isinstance(check, AppPresentCheck):
        apps = {k.lower(): v for k, v in parse_guest_health(output).apps.items()}
        found = apps.get(check.name.lower())
        if found is None:
            listed = ", ".join(sorted(apps)) or "none"
            return CheckResult(False, f"{check.name} is not installed (installed: {listed})")
        if check.min_version is not None:
            have, want = _version_tuple(found), _version_tuple(check.min_version)
            if have is None or want is None or have < want:
                return CheckResult(
                    False,
                    f"{check.name} {found} is installed, at least {check.min_version} expected",
                )
        return CheckResult(True, f"{APP_KEY_PREFIX}{check.name}={found}")
    if isinstance(check, BitLockerCheck):
        health = parse_guest_health(output)
        if health.bitlocker_on is None:
            return CheckResult(False, f"BitLocker state not reported: {_shown(output)}")
        actual = "on" if health.bitlocker_on else "off"
        if actual != check.expected:
            return CheckResult(
                False, f"BitLocker is {actual}, {check.expected} expected: {_shown(output)}"
            )
        return CheckResult(True, f"BitLocker {actual}")
    if isinstance(check, RegistryValueCheck):
        value = _registry_value(output, check.name)
        if value is None:
            return CheckResult(False, f"{check.name} not reported: {_shown(output)}")
        if value != check.expected:
            return CheckResult(
                False,
                f"{check.path}\\{check.name} is {value!r}, {check.expected!r} expected",
            )
        return CheckResult(True, f"{check.name} = {value}")
    if isinstance(check, ScriptCheck):
        if _normalised(check.expected_output) not in _normalised(output):
            return CheckResult(
                False,
                f"expected output {check.expected_output.strip()!r} not found in: "
                f"{_shown(output) or '(no output)'}",
            )
        return CheckResult(True, "expected output found")
    raise TypeError(f"not a smoke check: {type(check).__name__}")


def _normalised(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _registry_value(output: str, name: str) -> str | None:
    """``Name : data`` (Get-ItemProperty's list format) or ``Name=data`` for ``name``."""
    for raw in output.splitlines():
        key, sep, value = raw.partition(":")
        if not sep:
            key, sep, value = raw.partition("=")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None


# -- names and tags ----------------------------------------------------------------------------


def validation_token(image: str, version: str) -> str:
    """Six hex characters from image and version: keeps ``vm-val-<token>-<n>`` within the
    15 characters a Windows computer name allows (for up to 9 hosts)."""
    return hashlib.sha256(f"{image}:{version}".encode()).hexdigest()[:6]


def validation_id(image: str, version: str) -> str:
    """The validation's id: image, version and the token (tags, events)."""
    return f"{image}-{version}-{validation_token(image, version)}"


MAX_VALIDATION_HOSTS: Final = 9


def validation_vm_name(token: str, index: int) -> str:
    """``vm-val-<token>-<n>``, n from 1."""
    if not 1 <= index <= MAX_VALIDATION_HOSTS:
        raise ValueError(f"host index {index} outside 1..{MAX_VALIDATION_HOSTS}")
    return f"vm-val-{token}-{index}"


def check_run_command_name(index: int) -> str:
    return f"validation-check-{index:02d}"


def validation_tags(image: str, version: str) -> dict[str, str]:
    return {
        TAG_IMAGE: image,
        TAG_VERSION: version,
        TAG_VALIDATION_ID: validation_id(image, version),
        TAG_ROLE: ROLE_VALIDATION_HOST,
    }


# -- session host health -----------------------------------------------------------------------


@dataclass(frozen=True)
class HostHealth:
    """A session host's health as AVD reports it; ``problems`` empty when healthy."""

    name: str
    status: str
    problems: tuple[str, ...]

    @property
    def healthy(self) -> bool:
        return not self.problems


def host_health(name: str, status: str | None, checks: Sequence[Mapping[str, Any]]) -> HostHealth:
    """Healthy: status ``Available`` and every health check ``HealthCheckSucceeded``."""
    problems: list[str] = []
    if status != "Available":
        problems.append(f"status {status or 'unknown'}")
    for check in checks:
        result = str(check.get("healthCheckResult") or "")
        if result and result != "HealthCheckSucceeded":
            details = check.get("additionalFailureDetails") or {}
            message = details.get("message") if isinstance(details, Mapping) else None
            problems.append(
                f"{check.get('healthCheckName') or 'health check'} {result}"
                + (f": {message}" if message else "")
            )
    return HostHealth(name, status or "unknown", tuple(problems))


# -- the ring gate -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reasons: tuple[str, ...]
    unhealthy_hosts: int
    failed_connection_share: float | None


def evaluate_gate(
    *,
    max_unhealthy_hosts: int,
    max_failed_connection_share: float,
    unhealthy: Sequence[str],
    connections: int,
    failed_connections: int,
) -> GateVerdict:
    """Pass when no more than the allowed hosts are unhealthy and the share of failed
    connections in the soak window is at most the allowed share (no connections: share 0)."""
    reasons: list[str] = []
    if len(unhealthy) > max_unhealthy_hosts:
        shown = "; ".join(unhealthy[:5]) + (" ..." if len(unhealthy) > 5 else "")
        reasons.append(
            f"{len(unhealthy)} unhealthy session host(s), at most {max_unhealthy_hosts} "
            f"allowed: {shown}"
        )
    share = failed_connections / connections if connections > 0 else 0.0
    if share > max_failed_connection_share:
        reasons.append(
            f"{failed_connections} of {connections} connections failed ({share:.1%}), at most "
            f"{max_failed_connection_share:.1%} allowed"
        )
    return GateVerdict(not reasons, tuple(reasons), len(unhealthy), share)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")) if re.fullmatch(_VERSION, version) else ()


@dataclass(frozen=True)
class RingBlock:
    """Why a version may not enter a ring now: ``final`` when it never may (a later version
    is there), otherwise it may once the earlier version's soak there ends."""

    reason: str
    final: bool


def ring_blocker(
    claim: Mapping[str, str], version: str, *, force: bool = False
) -> RingBlock | None:
    """Why ``version`` may not enter a ring whose pools carry ``claim`` (ring tags); None if
    it may. An earlier version still soaking there blocks it (unless ``force``); a later
    version already there always does (a version never goes backwards over a newer one)."""
    held = claim.get(TAG_RING_VERSION)
    state = claim.get(TAG_RING_STATE)
    if not held or held == version:
        return None
    ring = claim.get(TAG_RING, "the ring")
    if _version_key(held) > _version_key(version):
        return RingBlock(f"a later version {held} is already in ring {ring} ({state})", True)
    if state == "soaking" and not force:
        until = claim.get(TAG_RING_SOAK_UNTIL, "?")
        return RingBlock(
            f"version {held} is still soaking in ring {ring} until {until}; a later version "
            "does not overtake it (force: true to override)",
            False,
        )
    return None
