"""The image catalogue: one YAML file, the single source of truth for every workload image.

Each entry says what an image is (name, OS, workload, owner, description), what it is built
from (exactly one base: a marketplace image, a gallery version or a session-host snapshot), where
it goes (gallery definition, target regions), how it is built (build VM, capture mode, timeout)
and what is done to it (a short list of typed customisation steps whose script lines must all be
recognised guest commands). :func:`load_catalogue` validates everything before any VM exists and
refuses a bad file with an InputError naming the dotted path of *each* bad field
(``images[1].steps[0].lines[2]: unknown command 'format C:'``). docs/catalogue.md is the
reference.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shared.domain.resources import (
    GALLERY_VERSION_TYPE,
    HOST_POOL_TYPE,
    RESERVED_TAG_PREFIXES,
    SNAPSHOT_TYPE,
    SUBNET_TYPE,
    TAG_PREFIX,
    VM_TYPE,
    parse_resource_id,
    tag_problems,
)
from shared.domain.retention import RetentionPolicy
from shared.domain.steps import (
    STEP_KINDS,
    CustomisationStep,
    InstallAppStep,
    RenderedStep,
    RestartStep,
    ScriptStep,
    WindowsUpdateStep,
    render_steps,
)
from shared.domain.validation import CHECK_KINDS, MAX_VALIDATION_HOSTS, SmokeCheck
from shared.domain.versions import ImageVersion
from shared.errors import FieldError, InputError, NotFoundError

# -- field types with readable reasons ------------------------------------------------------


def _formatted(pattern: str, description: str, flags: int = 0) -> Callable[[str], str]:
    compiled = re.compile(pattern, flags)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise PydanticCustomError(
                "invalid_format",
                "{value}: {description}",
                {"value": repr(value), "description": description},
            )
        return value

    return check


def _arm_id(*types: str) -> Callable[[str], str]:
    wanted = " or ".join(types)

    def check(value: str) -> str:
        parsed = parse_resource_id(value)
        if parsed is None or not any(parsed.is_type(t) for t in types):
            raise PydanticCustomError(
                "invalid_resource_id",
                "{value}: not a {wanted} resource id",
                {"value": repr(value), "wanted": wanted},
            )
        return value

    return check


def _pinned_or_latest(value: str) -> str:
    if value.lower() == "latest":
        return "latest"
    if ImageVersion.try_parse(value) is None:
        raise PydanticCustomError(
            "invalid_version",
            "{value}: 'latest' or a Major.Minor.Patch version",
            {"value": repr(value)},
        )
    return value


def _no_trusted_launch(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() == "trustedlaunch":
        raise PydanticCustomError(
            "trusted_launch_refused",
            "'TrustedLaunch' is refused: a Trusted Launch build VM turns BitLocker on and "
            "sysprep then fails; use 'TrustedLaunchSupported' (the default), whose versions "
            "still deploy to Trusted Launch session hosts",
        )
    return value


Slug = Annotated[
    str,
    AfterValidator(
        _formatted(
            r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*",
            "2-40 lower-case letters, digits and single hyphens, starting with a letter",
        )
    ),
    Field(min_length=2, max_length=40),
]
Label = Annotated[
    str,
    AfterValidator(
        _formatted(r"[A-Za-z0-9][A-Za-z0-9 ._+-]{0,31}", "1-32 letters, digits, spaces, . _ + -")
    ),
]
Owner = Annotated[
    str,
    AfterValidator(
        _formatted(
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}|[A-Za-z0-9][A-Za-z0-9 ._/-]{1,63}",
            "an e-mail address or a team name (2-64 letters, digits, spaces, . _ / -)",
        )
    ),
]
MarketplaceName = Annotated[
    str,
    AfterValidator(_formatted(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", "1-128 letters, digits, . _ -")),
]
VersionOrLatest = Annotated[str, AfterValidator(_pinned_or_latest)]
PinnedVersion = Annotated[
    str,
    AfterValidator(_formatted(r"\d{1,10}\.\d{1,10}\.\d{1,10}", "a Major.Minor.Patch version")),
]
ResourceGroup = Annotated[
    str,
    AfterValidator(
        _formatted(
            r"[-\w.()]{0,89}[-\w()]",
            "1-90 letters, digits, _ . ( ) -, not ending with a period",
        )
    ),
]
GalleryName = Annotated[
    str,
    AfterValidator(
        _formatted(
            r"[A-Za-z0-9](?:[A-Za-z0-9._]{0,78}[A-Za-z0-9])?",
            "1-80 letters, digits, periods and underscores, starting and ending alphanumeric "
            "(no hyphens in gallery names)",
        )
    ),
]
DefinitionName = Annotated[
    str,
    AfterValidator(
        _formatted(
            r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,78}[A-Za-z0-9])?",
            "1-80 letters, digits, . _ -, starting and ending alphanumeric",
        )
    ),
]
Region = Annotated[
    str,
    AfterValidator(_formatted(r"[a-z][a-z0-9]{1,39}", "an Azure region name such as 'westeurope'")),
]
VmSize = Annotated[
    str,
    AfterValidator(_formatted(r"[A-Za-z][A-Za-z0-9_]{1,63}", "a VM size such as Standard_D4s_v5")),
]
VmId = Annotated[str, AfterValidator(_arm_id(VM_TYPE))]


def _host_pool(value: str) -> str:
    if value.startswith("/"):
        return _arm_id(HOST_POOL_TYPE)(value)
    return _formatted(
        r"[A-Za-z0-9][A-Za-z0-9._-]{2,63}", "a host pool resource id or name (3-64 chars)"
    )(value)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _problems(problems: Sequence[tuple[str, str]]) -> PydanticCustomError:
    """One error carrying several (relative field, reason) pairs; see :func:`_field_errors`."""
    return PydanticCustomError(
        "cross_field",
        "{summary}",
        {"summary": "; ".join(f"{f}: {r}" for f, r in problems), "problems": list(problems)},
    )


# -- the base an image is built from --------------------------------------------------------


class MarketplaceSource(_Model):
    """A marketplace image; ``version: latest`` rebuilds whenever a newer one is published."""

    publisher: MarketplaceName
    offer: MarketplaceName
    sku: MarketplaceName
    version: VersionOrLatest = "latest"

    @property
    def follows_latest(self) -> bool:
        return self.version == "latest"

    def matches(self, publisher: str, offer: str, sku: str) -> bool:
        """Same publisher/offer/sku, ignoring case (Azure treats them case-insensitively)."""
        return (self.publisher.lower(), self.offer.lower(), self.sku.lower()) == (
            publisher.lower(),
            offer.lower(),
            sku.lower(),
        )

    def urn(self) -> str:
        return f"{self.publisher}:{self.offer}:{self.sku}:{self.version}"


class GalleryVersionSource(_Model):
    """An existing gallery image version: by resource ``id``, or by gallery/image/version names.

    With names, ``resource_group`` and ``subscription_id`` default to the image's own gallery's
    resource group and the factory's subscription.
    """

    id: Annotated[str, AfterValidator(_arm_id(GALLERY_VERSION_TYPE))] | None = None
    gallery: GalleryName | None = None
    image: DefinitionName | None = None
    version: VersionOrLatest | None = None
    resource_group: ResourceGroup | None = None
    subscription_id: str | None = None

    @model_validator(mode="after")
    def _id_or_names(self) -> GalleryVersionSource:
        names = {"gallery": self.gallery, "image": self.image, "version": self.version}
        if self.id is not None:
            extra = [k for k, v in names.items() if v is not None]
            extra += [k for k in ("resource_group", "subscription_id") if getattr(self, k)]
            if extra:
                raise _problems([(k, "give either id or names, not both") for k in extra])
        else:
            missing = [k for k, v in names.items() if v is None]
            if missing:
                raise _problems(
                    [(k, "required (or give the version's resource id as id)") for k in missing]
                )
        return self


class SnapshotSource(_Model):
    """A session host's OS disk (seed 002): snapshot a host, or start from an existing snapshot."""

    session_host_vm_id: VmId | None = None
    snapshot_id: Annotated[str, AfterValidator(_arm_id(SNAPSHOT_TYPE))] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SnapshotSource:
        if (self.session_host_vm_id is None) == (self.snapshot_id is None):
            raise _problems([("", "give exactly one of session_host_vm_id and snapshot_id")])
        return self


SourceKind = Literal["marketplace", "gallery_version", "snapshot"]


class ImageSource(_Model):
    """Exactly one of ``marketplace``, ``gallery_version`` and ``snapshot``."""

    marketplace: MarketplaceSource | None = None
    gallery_version: GalleryVersionSource | None = None
    snapshot: SnapshotSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageSource:
        given = [k for k in ("marketplace", "gallery_version", "snapshot") if getattr(self, k)]
        if len(given) != 1:
            detail = f" (got {', '.join(given)})" if given else ""
            raise _problems(
                [("", f"exactly one of marketplace, gallery_version, snapshot is required{detail}")]
            )
        return self

    @property
    def kind(self) -> SourceKind:
        if self.marketplace is not None:
            return "marketplace"
        return "gallery_version" if self.gallery_version is not None else "snapshot"


# -- where the image goes, how it is built --------------------------------------------------

SecurityType = Literal[
    "TrustedLaunchSupported", "Standard", "TrustedLaunchAndConfidentialVmSupported"
]


class GalleryTarget(_Model):
    """The Compute Gallery image definition the versions go to."""

    resource_group: ResourceGroup
    gallery_name: GalleryName
    image_definition: DefinitionName
    publisher: MarketplaceName
    offer: MarketplaceName
    sku: MarketplaceName
    security_type: Annotated[SecurityType, BeforeValidator(_no_trusted_launch)] = (
        "TrustedLaunchSupported"
    )
    hyper_v_generation: Literal["V1", "V2"] = "V2"

    @field_validator("hyper_v_generation")
    @classmethod
    def _v1_only_standard(cls, value: str, info: ValidationInfo) -> str:
        security = info.data.get("security_type")
        if value == "V1" and security is not None and security != "Standard":
            raise PydanticCustomError(
                "generation_refused",
                "V1 images support only security_type 'Standard' (got {security}); "
                "Trusted Launch and confidential VMs need V2",
                {"security": repr(security)},
            )
        return value


class BuildSettings(_Model):
    """The build VM and how the image is captured."""

    vm_size: VmSize
    subnet_id: Annotated[str, AfterValidator(_arm_id(SUBNET_TYPE))]
    location: Region
    resource_group: ResourceGroup
    capture_mode: Literal["temporary-vm", "source-vm-clone"] = "temporary-vm"
    source_vm_id: VmId | None = None
    timeout_minutes: int = Field(default=240, ge=30, le=960)
    sysprep_timeout_minutes: int = Field(default=90, ge=10, le=480)
    min_free_disk_gb: float = Field(default=10.0, ge=1, le=1000)

    @model_validator(mode="after")
    def _clone_needs_source_vm(self) -> BuildSettings:
        if self.capture_mode == "source-vm-clone" and self.source_vm_id is None:
            raise _problems(
                [
                    (
                        "source_vm_id",
                        "required with capture_mode 'source-vm-clone' (the authoritative "
                        "source VM whose OS disk is cloned for capture)",
                    )
                ]
            )
        if self.capture_mode == "temporary-vm" and self.source_vm_id is not None:
            raise _problems([("source_vm_id", "only used with capture_mode 'source-vm-clone'")])
        return self


class TargetRegion(_Model):
    name: Region
    replica_count: int = Field(default=1, ge=1, le=100)
    storage_account_type: Literal["Standard_LRS", "Standard_ZRS", "Premium_LRS"] = "Standard_LRS"


class NamingStandard(_Model):
    """Extra tags every version of the image carries (cost centre, environment ...)."""

    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid_tags(self) -> NamingStandard:
        problems = [(e.path, e.reason) for e in tag_problems(self.tags, "tags")]
        for key in self.tags:
            lowered = key.lower()
            if lowered.startswith(TAG_PREFIX) or lowered.startswith(RESERVED_TAG_PREFIXES):
                problems.append((f"tags.{key}", "reserved tag prefix"))
        if problems:
            raise _problems(problems)
        return self


class FailedRetention(_Model):
    """What happens to versions whose build or validation failed."""

    delete_at_once: bool = True


class Retention(_Model):
    """The image's retention policy (docs/retention.md); every duration is 0 or more.

    ``end_of_life_days`` is the end of life a build gives a new version; the rest drives the
    retention job. How long a backup is kept is the lifecycle's ``backup_days`` (one place).
    """

    keep_versions: int | None = Field(default=None, ge=0, le=1000)
    end_of_life_days: int | None = Field(default=None, ge=1, le=3650)
    staged_max_age_days: int = Field(default=14, ge=0, le=3650)
    failed: FailedRetention = Field(default_factory=FailedRetention)
    deprecation_days: int = Field(default=0, ge=0, le=3650)
    retained_vm_days: int = Field(default=7, ge=0, le=3650)
    orphan_min_age_hours: int = Field(default=24, ge=1, le=24 * 365)

    def policy(self, backup_days: int) -> RetentionPolicy:
        """The planner's policy, with the lifecycle's backup duration."""
        return RetentionPolicy(
            keep_versions=DEFAULT_KEEP_VERSIONS
            if self.keep_versions is None
            else self.keep_versions,
            backup_days=backup_days,
            staged_max_age_days=self.staged_max_age_days,
            delete_failed_at_once=self.failed.delete_at_once,
            deprecation_days=self.deprecation_days,
            retained_vm_days=self.retained_vm_days,
            orphan_min_age_hours=self.orphan_min_age_hours,
        )


DEFAULT_KEEP_VERSIONS: Final = 3


def retention_policy(image: CatalogueImage) -> RetentionPolicy:
    """The image's retention policy: its ``retention`` section (defaults when absent), with the
    backup duration of its ``lifecycle`` section."""
    return (image.retention or Retention()).policy(image.lifecycle.backup_days)


def _retention_keeps_something(image: CatalogueImage) -> list[tuple[str, str]]:
    """keep_versions 0 keeps only the active version; an image that serves no host pool is never
    activated, so that policy would keep nothing at all."""
    if image.retention is not None and image.retention.keep_versions == 0 and not image.host_pools:
        return [
            (
                "retention.keep_versions",
                "0 keeps only the active version, and an image that serves no host pool never "
                "has one: the policy would keep nothing (give 1 or more, or list host_pools)",
            )
        ]
    return []


class Lifecycle(_Model):
    """How long a validated version waits for a decision, and how long a backup is kept."""

    approval_timeout_days: int = Field(default=14, ge=1, le=365)
    auto_approve_after_days: int | None = Field(default=None, ge=1, le=365)
    backup_days: int = Field(default=30, ge=1, le=3650)

    @model_validator(mode="after")
    def _auto_before_timeout(self) -> Lifecycle:
        if (
            self.auto_approve_after_days is not None
            and self.auto_approve_after_days >= self.approval_timeout_days
        ):
            raise _problems(
                [
                    (
                        "auto_approve_after_days",
                        f"must be less than approval_timeout_days ({self.approval_timeout_days}):"
                        " otherwise the approval times out first",
                    )
                ]
            )
        return self


# -- validation on real session hosts, rings -------------------------------------------------

HostPoolName = Annotated[
    str,
    AfterValidator(_formatted(r"[A-Za-z0-9][A-Za-z0-9._-]{2,63}", "a host pool name (3-64 chars)")),
]
SubscriptionId = Annotated[
    str,
    AfterValidator(
        _formatted(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", "a subscription id")
    ),
]


class HostPoolRef(_Model):
    """A host pool by resource group and name (and subscription, when not the factory's)."""

    subscription: SubscriptionId | None = None
    resource_group: ResourceGroup
    name: HostPoolName

    def resource_id(self, default_subscription: str) -> str:
        sub = self.subscription or default_subscription
        return (
            f"/subscriptions/{sub}/resourceGroups/{self.resource_group}"
            f"/providers/{HOST_POOL_TYPE}/{self.name}"
        )

    def served_by(self, served: str) -> bool:
        """Whether an entry of the image's ``host_pools`` (a name or an id) is this pool."""
        if not served.startswith("/"):
            return served.lower() == self.name.lower()
        parsed = parse_resource_id(served)
        if parsed is None:
            return False
        same_sub = self.subscription is None or (
            parsed.subscription_id.lower() == self.subscription.lower()
        )
        return (
            same_sub
            and parsed.resource_group.lower() == self.resource_group.lower()
            and parsed.name.lower() == self.name.lower()
        )

    def label(self) -> str:
        return f"{self.resource_group}/{self.name}"


class ValidationSettings(_Model):
    """How a staged version is tried on real session hosts before it may be approved."""

    host_pool: HostPoolRef
    hosts: int = Field(default=1, ge=1, le=MAX_VALIDATION_HOSTS)
    soak_minutes: int = Field(default=0, ge=0, le=10080)
    test_group: Label | None = None
    checks: list[SmokeCheck] = Field(default_factory=list, max_length=50)
    vm_size: VmSize | None = None
    register_timeout_minutes: int = Field(default=60, ge=5, le=480)
    auto_start: bool = True


class RingGate(_Model):
    """The health a ring must show at the end of its soak for the version to move on."""

    max_unhealthy_hosts: int = Field(default=0, ge=0, le=10000)
    max_failed_connection_share: float = Field(default=0.05, ge=0, le=1)


class Ring(_Model):
    """One promotion ring: host pools that get the version together, a soak and a gate."""

    name: Slug
    host_pools: list[HostPoolRef] = Field(min_length=1, max_length=100)
    soak_minutes: int = Field(default=60, ge=0, le=43200)
    gate: RingGate = Field(default_factory=RingGate)


def _pool_problems(
    served: Sequence[str], validation: ValidationSettings | None, rings: Sequence[Ring]
) -> list[tuple[str, str]]:
    """Validation and ring host pools must be among the image's served ``host_pools``."""
    known = ", ".join(served) or "none"

    def unknown(ref: HostPoolRef) -> str:
        return f"host pool {ref.label()!r} is unknown: not one of the image's host_pools ({known})"

    problems: list[tuple[str, str]] = []
    if validation is not None and not any(validation.host_pool.served_by(s) for s in served):
        problems.append(("validation.host_pool", unknown(validation.host_pool)))
    names: dict[str, int] = {}
    pools: dict[str, str] = {}
    for r, ring in enumerate(rings):
        first = names.setdefault(ring.name, r)
        if first != r:
            problems.append((f"rings[{r}].name", f"duplicate ring {ring.name!r} (rings[{first}])"))
        for p, ref in enumerate(ring.host_pools):
            where = f"rings[{r}].host_pools[{p}]"
            if not any(ref.served_by(s) for s in served):
                problems.append((where, unknown(ref)))
            key = f"{ref.subscription or ''}/{ref.label()}".lower()
            other = pools.setdefault(key, where)
            if other != where:
                problems.append((where, f"host pool {ref.label()!r} is already in {other}"))
    return problems


def _windows_update_needs_restart(steps: Sequence[Any]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for index, step in enumerate(steps):
        if not isinstance(step, WindowsUpdateStep):
            continue
        later = steps[index + 1 :]
        restarted = any(
            isinstance(s, RestartStep)
            or (
                isinstance(s, ScriptStep)
                and any(re.match(r"\s*Restart-Computer\b", ln, re.IGNORECASE) for ln in s.lines)
            )
            for s in later
        )
        if not restarted:
            problems.append(
                (
                    f"steps[{index}]",
                    "windows_update leaves a reboot pending and sysprep refuses to run: "
                    "add a restart step after it",
                )
            )
    return problems


class CatalogueImage(_Model):
    """One workload image: the single source of truth for its builds."""

    name: Slug
    os: Label
    workload: Label
    owner: Owner
    description: str = Field(min_length=1, max_length=1000)
    source: ImageSource
    gallery: GalleryTarget
    build: BuildSettings
    steps: list[CustomisationStep] = Field(default_factory=list, max_length=50)
    target_regions: list[TargetRegion] = Field(min_length=1, max_length=100)
    naming: NamingStandard = Field(default_factory=NamingStandard)
    host_pools: list[Annotated[str, AfterValidator(_host_pool)]] = Field(default_factory=list)
    retention: Retention | None = None
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    validation: ValidationSettings | None = None
    rings: list[Ring] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _consistent(self) -> CatalogueImage:
        problems: list[tuple[str, str]] = _pool_problems(
            self.host_pools, self.validation, self.rings
        )
        seen_regions: dict[str, int] = {}
        for index, region in enumerate(self.target_regions):
            first = seen_regions.setdefault(region.name.lower(), index)
            if first != index:
                problems.append(
                    (
                        f"target_regions[{index}].name",
                        f"duplicate region {region.name!r} (also target_regions[{first}])",
                    )
                )
        if self.build.location.lower() not in seen_regions:
            problems.append(
                (
                    "build.location",
                    f"{self.build.location!r} must be one of the target regions "
                    f"({', '.join(r.name for r in self.target_regions)})",
                )
            )
        seen_steps: dict[str, int] = {}
        for index, step in enumerate(self.steps):
            if step.name is None:
                continue
            first = seen_steps.setdefault(step.name.lower(), index)
            if first != index:
                problems.append(
                    (
                        f"steps[{index}].name",
                        f"duplicate step name {step.name!r} (also steps[{first}])",
                    )
                )
        problems += _windows_update_needs_restart(self.steps)
        problems += _retention_keeps_something(self)
        if problems:
            raise _problems(problems)
        return self

    def marketplace_base(self) -> MarketplaceSource | None:
        """The marketplace image this one is built on, if any."""
        return self.source.marketplace

    def rendered_steps(self) -> tuple[RenderedStep, ...]:
        """The customisation steps as script lines, with unique names and content hashes."""
        return render_steps(self.steps)

    def installs(self) -> dict[str, str | None]:
        """Packages the steps install (name -> pinned version or None)."""
        return {s.package: s.version for s in self.steps if isinstance(s, InstallAppStep)}


def _cross_image_problems(images: Sequence[Any]) -> list[tuple[str, str]]:
    """Duplicate names and two images sharing one gallery definition (raw dicts or models)."""

    def get(obj: Any, *path: str) -> str | None:
        for part in path:
            obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part, None)
        return obj.lower() if isinstance(obj, str) else None

    problems: list[tuple[str, str]] = []
    names: dict[str, int] = {}
    definitions: dict[tuple[str, ...], int] = {}
    identifiers: dict[tuple[str, ...], int] = {}
    for index, image in enumerate(images):
        name = get(image, "name")
        if name is not None:
            first = names.setdefault(name, index)
            if first != index:
                problems.append(
                    (
                        f"images[{index}].name",
                        f"duplicate image name {name!r} (also images[{first}])",
                    )
                )
        gallery = [get(image, "gallery", k) for k in ("resource_group", "gallery_name")]
        definition = get(image, "gallery", "image_definition")
        ident = [get(image, "gallery", k) for k in ("publisher", "offer", "sku")]
        if all(gallery) and definition:
            key = (*[g or "" for g in gallery], definition)
            first = definitions.setdefault(key, index)
            if first != index:
                problems.append(
                    (
                        f"images[{index}].gallery.image_definition",
                        f"{definition!r} in gallery {gallery[1]!r} is already the target of "
                        f"images[{first}]: one catalogue image per image definition",
                    )
                )
            elif all(ident):
                id_key = (*[g or "" for g in gallery], *[i or "" for i in ident])
                first = identifiers.setdefault(id_key, index)
                if first != index:
                    problems.append(
                        (
                            f"images[{index}].gallery",
                            f"publisher/offer/sku {'/'.join(i or '' for i in ident)!r} is already "
                            f"used by images[{first}] in gallery {gallery[1]!r}",
                        )
                    )
    return problems


class Catalogue(_Model):
    """The whole catalogue: every workload image, each exactly once."""

    images: list[CatalogueImage] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Catalogue:
        problems = _cross_image_problems(self.images)
        if problems:
            raise _problems(problems)
        return self

    def names(self) -> list[str]:
        return [image.name for image in self.images]

    def find(self, name: str) -> CatalogueImage | None:
        """The image called ``name`` (exact), or None."""
        return next((image for image in self.images if image.name == name), None)

    def get(self, name: str) -> CatalogueImage:
        """The image called ``name``; NotFoundError naming it otherwise."""
        image = self.find(name)
        if image is None:
            raise NotFoundError(f"image {name!r} is not in the catalogue")
        return image

    def images_on_marketplace_base(
        self, publisher: str, offer: str, sku: str, *, include_pinned: bool = False
    ) -> list[CatalogueImage]:
        """Images built on that marketplace publisher/offer/sku (case-insensitive).

        Only images that follow ``latest`` unless ``include_pinned``: an image pinned to a
        marketplace version is not rebuilt because a newer version was published.
        """
        found: list[CatalogueImage] = []
        for image in self.images:
            base = image.marketplace_base()
            if (
                base is not None
                and base.matches(publisher, offer, sku)
                and (base.follows_latest or include_pinned)
            ):
                found.append(image)
        return found


# -- hashing --------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 as is: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def catalogue_hash(image: CatalogueImage) -> str:
    """sha256 (hex) of the image entry's canonical JSON, defaults included.

    Writing a default explicitly does not change it; any change that can change a build does.
    The ``lifecycle`` section (approval and backup durations) cannot change a build: left out.
    """
    content = image.model_dump(mode="json", exclude={"lifecycle"})
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()


# -- loading --------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys (a silently overwritten field hides mistakes)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)

_MESSAGES: Final = {
    "extra_forbidden": "unknown field (not part of the catalogue schema)",
    "missing": "required",
}


_UNION_KINDS: Final[dict[str, tuple[str, ...]]] = {"steps": STEP_KINDS, "checks": CHECK_KINDS}


def _union_of(loc: tuple[Any, ...]) -> tuple[str, tuple[str, ...]]:
    """Which tagged list an error is in: ("step", kinds) or ("check", kinds)."""
    container = str(loc[-2]) if len(loc) >= 2 and isinstance(loc[-1], int) else "steps"
    kinds = _UNION_KINDS.get(container, STEP_KINDS)
    return ("check" if container == "checks" else "step"), kinds


def _join(base: str, relative: str) -> str:
    if not relative:
        return base
    if relative.startswith("["):
        return base + relative
    return f"{base}.{relative}" if base else relative


def _field_errors(errors: Iterable[Any], prefix: str = "") -> list[FieldError]:
    """pydantic errors as dotted-path field errors (union tags dropped, cross-field expanded)."""
    out: list[FieldError] = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        path = prefix
        for index, part in enumerate(loc):
            if isinstance(part, int):
                path += f"[{part}]"
            elif (
                index >= 2
                and isinstance(loc[index - 1], int)
                and part in _UNION_KINDS.get(str(loc[index - 2]), ())
            ):
                continue  # the discriminated union's tag, not a field
            else:
                path = _join(path, str(part))
        kind = err.get("type")
        ctx = err.get("ctx") or {}
        if kind == "cross_field":
            for field, reason in ctx.get("problems", []):
                out.append(FieldError(_join(path, field), reason))
        elif kind == "union_tag_invalid":
            what, kinds = _union_of(loc)
            out.append(
                FieldError(
                    _join(path, "kind"),
                    f"unknown {what} kind {ctx.get('tag')!r}: expected one of {', '.join(kinds)}",
                )
            )
        elif kind == "union_tag_not_found":
            _, kinds = _union_of(loc)
            out.append(FieldError(_join(path, "kind"), f"required: one of {', '.join(kinds)}"))
        else:
            out.append(FieldError(path, _MESSAGES.get(str(kind), str(err.get("msg", "invalid")))))
    return out


def _read(source: str | Path) -> tuple[str, str]:
    """The catalogue text and a name for messages."""
    if isinstance(source, Path) or (
        "\n" not in source and source.strip().lower().endswith((".yaml", ".yml", ".json"))
    ):
        path = Path(source)
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise InputError.single(
                "",
                f"cannot read the catalogue file {str(path)!r}: {exc.strerror or exc}",
                "invalid catalogue",
            ) from None
        except UnicodeDecodeError:
            raise InputError.single(
                "", f"the catalogue file {str(path)!r} is not UTF-8 text", "invalid catalogue"
            ) from None
    return source, "catalogue"


def parse_catalogue(raw: Any) -> Catalogue:
    """Validate an already-parsed catalogue (a mapping); InputError naming each bad field."""
    if not isinstance(raw, dict):
        raise InputError.single(
            "", "the catalogue must be a mapping with an 'images' list", "invalid catalogue"
        )
    errors: list[FieldError] = []
    extra = [k for k in raw if k != "images"]
    errors += [FieldError(str(k), _MESSAGES["extra_forbidden"]) for k in extra]
    images = raw.get("images")
    if not isinstance(images, list) or not images:
        errors.append(FieldError("images", "required: a non-empty list of images"))
        raise InputError(errors, "invalid catalogue")
    parsed: list[CatalogueImage] = []
    for index, item in enumerate(images):
        try:
            parsed.append(CatalogueImage.model_validate(item))
        except ValidationError as exc:
            errors += _field_errors(exc.errors(include_url=False), f"images[{index}]")
    errors += [FieldError(p, r) for p, r in _cross_image_problems(images)]
    if errors:
        raise InputError(errors, "invalid catalogue")
    return Catalogue(images=parsed)


def load_catalogue(source: str | Path) -> Catalogue:
    """Load and validate the catalogue from a file path or YAML text.

    A :class:`Path`, or a one-line string ending in ``.yaml``/``.yml``/``.json``, is read as a
    file; any other string is the YAML text itself. Raises InputError listing every bad field
    by its dotted path.
    """
    text, name = _read(source)
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InputError.single(
            "", f"{name} is not valid YAML{where}: {exc.problem}", "invalid catalogue"
        ) from None
    except yaml.YAMLError as exc:
        raise InputError.single(
            "", f"{name} is not valid YAML: {exc}", "invalid catalogue"
        ) from None
    if raw is None:
        raise InputError.single(
            "", f"{name} is empty: expected a mapping with an 'images' list", "invalid catalogue"
        )
    return parse_catalogue(raw)
