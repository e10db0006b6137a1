"""Scenarios: the seeded starting world of an emulator run, loaded from YAML or JSON.

A scenario names the seed, the start time, subscriptions and regions, the marketplace
catalogue, Compute galleries with their image definitions and versions, AVD host pools (with
their session hosts and simulated users), latency overrides, faults, throttling and Event Grid
subscriptions.
A malformed file is refused with one line per bad field, each naming its dotted path
(``host_pools.0.hosts.1.count: Input should be a valid integer``).

Host pool models are deliberately loose (extra keys allowed) so the AVD module can extend them:
if ``emulator/avd_scenario.py`` defines ``HostPoolSpec`` (it may subclass the one here; it must
import only names defined above the hook below), that model is used for ``host_pools``.
"""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from emulator.events import EventSubscriptionSpec
from emulator.faults import FaultRule
from emulator.latency import parse_duration
from emulator.throttle import ThrottleSettings

DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
DEFAULT_TENANT = "00000000-0000-0000-0000-0000000000aa"
DEFAULT_START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


class ScenarioError(ValueError):
    """A scenario that does not validate; ``errors`` is [(dotted path, reason)]."""

    def __init__(self, errors: list[tuple[str, str]], source: str = "scenario") -> None:
        self.errors = errors
        lines = "\n".join(f"  {p}: {m}" for p, m in errors)
        super().__init__(f"{source} is invalid:\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class SubscriptionSpec(_Strict):
    id: str = Field(min_length=1)
    name: str = "Emulated subscription"


class GuestSeed(_Strict):
    """The guest OS a marketplace image boots into."""

    apps: list[str] = Field(default_factory=list)
    bitlocker: bool | None = None  # None: derive (on for Windows 11 25H2 images)
    windows_update_level: str | None = None
    free_disk_gb: float = Field(default=80.0, ge=0)
    disk_size_gb: int = Field(default=127, ge=1)


class MarketplaceVersion(_Strict):
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    published: datetime | None = None
    guest: GuestSeed | None = None


class MarketplaceSku(_Strict):
    """One publisher/offer/sku with its versions (all regions unless ``regions`` is set)."""

    publisher: str = Field(min_length=1)
    offer: str = Field(min_length=1)
    sku: str = Field(min_length=1)
    os_type: Literal["Windows", "Linux"] = "Windows"
    hyper_v_generation: Literal["V1", "V2"] = "V2"
    architecture: Literal["x64", "Arm64"] = "x64"
    regions: list[str] | None = None
    versions: list[MarketplaceVersion | str] = Field(min_length=1)
    guest: GuestSeed = Field(default_factory=GuestSeed)

    @field_validator("versions")
    @classmethod
    def _versions(cls, v: list[MarketplaceVersion | str]) -> list[MarketplaceVersion | str]:
        for item in v:
            text = item if isinstance(item, str) else item.version
            parts = text.split(".")
            if len(parts) != 3 or not all(p.isdigit() for p in parts):
                raise ValueError(f"version {text!r} must be Major.Minor.Patch (integers)")
        return v


class TargetRegionSpec(_Strict):
    """A target region of a seeded version with its own ``excludeFromLatest`` (None: the
    version's)."""

    name: str = Field(min_length=1)
    exclude_from_latest: bool | None = None


class GalleryVersionSpec(_Strict):
    """An image version the scenario starts with: Succeeded and replicated to ``regions`` (the
    definition's region when None, always included). The guest is the marketplace image
    ``base`` (``publisher:offer:sku:version``) with ``apps`` installed, sysprepped for
    Generalized definitions. A region given as ``{name, exclude_from_latest}`` carries its own
    flag, which wins over the version's ``exclude_from_latest`` there."""

    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    regions: list[str | TargetRegionSpec] | None = None
    exclude_from_latest: bool = False
    end_of_life: datetime | None = None
    block_deletion_before_end_of_life: bool = False
    base: str = "MicrosoftWindowsDesktop:windows-11:win11-25h2-avd:26200.7171.251105"
    apps: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("base")
    @classmethod
    def _base(cls, v: str) -> str:
        parts = v.split(":")
        if len(parts) != 4 or not all(p.strip() for p in parts):
            raise ValueError("base must be publisher:offer:sku:version")
        return v


class VersionSeed(GalleryVersionSpec):
    """A version named with its gallery and image definition: the items of the older
    ``extensions.gallery_versions`` list, and what :func:`emulator.gallery.seed_image_version`
    takes (``galleries[].images[].versions`` become these)."""

    gallery: str = Field(min_length=1)
    image: str = Field(min_length=1)
    resource_group: str = Field(min_length=1)
    subscription: str | None = None


class GalleryImageSpec(_Strict):
    name: str = Field(min_length=1)
    os_type: Literal["Windows", "Linux"] = "Windows"
    os_state: Literal["Generalized", "Specialized"] = "Generalized"
    hyper_v_generation: Literal["V1", "V2"] = "V2"
    security_type: str | None = "TrustedLaunch"
    publisher: str = Field(min_length=1)
    offer: str = Field(min_length=1)
    sku: str = Field(min_length=1)
    description: str | None = None
    versions: list[GalleryVersionSpec] = Field(default_factory=list)

    @field_validator("versions")
    @classmethod
    def _unique(cls, v: list[GalleryVersionSpec]) -> list[GalleryVersionSpec]:
        seen: set[str] = set()
        for item in v:
            if item.version in seen:
                raise ValueError(f"version {item.version} is listed twice")
            seen.add(item.version)
        return v


class GallerySpec(_Strict):
    name: str = Field(min_length=1)
    resource_group: str = Field(min_length=1)
    location: str = Field(min_length=1)
    subscription: str | None = None
    images: list[GalleryImageSpec] = Field(default_factory=list)


class HostSpec(_Loose):
    name_prefix: str = Field(min_length=1)
    count: int = Field(ge=0, le=1000)
    image_reference: dict[str, Any] | str | None = None
    vm_size: str = "Standard_D4s_v5"


class UserProfile(_Loose):
    users: int = Field(default=0, ge=0)
    logon_start_hour: float = Field(default=8, ge=0, le=24)
    logon_end_hour: float = Field(default=18, ge=0, le=24)
    mean_session_minutes: float = Field(default=240, gt=0)
    disconnect_probability: float = Field(default=0.1, ge=0, le=1)


class HostPoolSpec(_Loose):
    name: str = Field(min_length=1)
    resource_group: str = Field(min_length=1)
    location: str = Field(min_length=1)
    subscription: str | None = None
    host_pool_type: Literal["Pooled", "Personal"] = "Pooled"
    load_balancer_type: str = "BreadthFirst"
    max_session_limit: int = Field(default=10, ge=1)
    vm_template: dict[str, Any] | None = None
    hosts: list[HostSpec] = Field(default_factory=list)
    user_profile: UserProfile | None = None


# -- hook: the AVD module's richer host pool model, when it exists ------------------------
if TYPE_CHECKING:
    HostPoolModel = HostPoolSpec
elif importlib.util.find_spec("emulator.avd_scenario") is not None:
    from emulator import avd_scenario as _avd_scenario

    HostPoolModel = getattr(_avd_scenario, "HostPoolSpec", HostPoolSpec)
else:
    HostPoolModel = HostPoolSpec


class LatencyOverride(_Strict):
    mean: timedelta
    jitter: float = Field(default=0.2, ge=0, le=1)

    @field_validator("mean", mode="before")
    @classmethod
    def _mean(cls, v: Any) -> timedelta:
        return parse_duration(v)


class Scenario(_Strict):
    """The whole starting world. Every field has a default: ``{}`` is a valid scenario."""

    name: str = "scenario"
    seed: int = 0
    start_time: datetime = DEFAULT_START
    tenant_id: str = DEFAULT_TENANT
    subscriptions: list[SubscriptionSpec] = Field(
        default_factory=lambda: [SubscriptionSpec(id=DEFAULT_SUBSCRIPTION)]
    )
    regions: list[str] = Field(default_factory=lambda: ["westeurope"], min_length=1)
    marketplace: list[MarketplaceSku] = Field(default_factory=list)
    galleries: list[GallerySpec] = Field(default_factory=list)
    host_pools: list[HostPoolModel] = Field(default_factory=list)
    latency: dict[str, LatencyOverride] = Field(default_factory=dict)
    latency_scale: float = Field(default=1.0, gt=0)
    faults: list[FaultRule] = Field(default_factory=list)
    throttling: ThrottleSettings = Field(default_factory=ThrottleSettings)
    event_subscriptions: list[EventSubscriptionSpec] = Field(default_factory=list)
    page_size: int = Field(default=10, ge=1, le=1000)
    extensions: dict[str, Any] = Field(default_factory=dict)

    @field_validator("start_time")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None or v.utcoffset() is None:
            raise ValueError("start_time must carry a timezone (e.g. 2026-01-05T06:00:00Z)")
        return v.astimezone(UTC)

    @field_validator("latency", mode="before")
    @classmethod
    def _latency(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: (x if isinstance(x, dict) else {"mean": x}) for k, x in v.items()}
        return v

    @property
    def subscription_ids(self) -> list[str]:
        return [s.id for s in self.subscriptions]

    @property
    def default_subscription(self) -> str:
        return self.subscriptions[0].id if self.subscriptions else DEFAULT_SUBSCRIPTION


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(root)"


def validate_scenario(data: Any, source: str = "scenario") -> Scenario:
    """A Scenario from parsed data, or ScenarioError naming each bad field's dotted path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError([("(root)", "a scenario must be a mapping")], source)
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        errors = [(_dotted(err["loc"]), err["msg"]) for err in e.errors()]
        raise ScenarioError(errors, source) from None


def parse_scenario_text(text: str | bytes, source: str = "scenario") -> Scenario:
    """YAML (a superset of JSON) text to a Scenario."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ScenarioError([("(file)", f"not valid YAML/JSON: {e}")], source) from None
    return validate_scenario(data, source)


def load_scenario(source: str | Path | dict[str, Any] | Scenario | None) -> Scenario:
    """A Scenario from a file path, a mapping, a Scenario, or None (the empty scenario)."""
    if source is None:
        return Scenario()
    if isinstance(source, Scenario):
        return source
    if isinstance(source, dict):
        return validate_scenario(source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError([("(file)", f"cannot read {path}: {e.strerror}")], str(path)) from e
    if path.suffix.lower() == ".json":
        try:
            return validate_scenario(json.loads(text), str(path))
        except json.JSONDecodeError as e:
            raise ScenarioError([("(file)", f"not valid JSON: {e}")], str(path)) from None
    return parse_scenario_text(text, str(path))
