"""Tag keys, Azure tag limits and ARM resource ids, in one place.

Every tag the factory writes starts with ``imagefactory:``; readers match keys case-insensitively
(Azure keeps the case a key was written with but treats keys case-insensitively). Resource ids
are parsed here without an SDK so the domain can check them (catalogue, events).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from shared.errors import FieldError, InputError

TAG_PREFIX: Final = "imagefactory:"

# On gallery image versions (and copied to build resources where it makes sense).
TAG_STATE: Final = "imagefactory:state"  # a VersionState value (shared/domain/versions.py)
# The last lifecycle transition of a version (who, when, why, under which change ticket):
TAG_STATE_AT: Final = "imagefactory:state-at"  # ISO 8601 UTC
TAG_STATE_BY: Final = "imagefactory:state-by"  # the principal (or "imagefactory" for the app)
TAG_STATE_REASON: Final = "imagefactory:state-reason"
TAG_CHANGE_TICKET: Final = "imagefactory:change-ticket"
TAG_STATE_PREVIOUS: Final = "imagefactory:state-previous"  # the state before the last one
TAG_BACKUP_UNTIL: Final = "imagefactory:backup-until"  # ISO 8601 UTC, on a backup version only
# Who asked for the build (the approver must be someone else): a principal or "imagefactory".
TAG_REQUESTED_BY: Final = "imagefactory:requested-by"
TAG_IMAGE: Final = "imagefactory:image"  # catalogue image name
TAG_BUILD_ID: Final = "imagefactory:build-id"
TAG_BASE_IMAGE_VERSION: Final = "imagefactory:base-image-version"  # marketplace version built on
TAG_BASE_IMAGE: Final = "imagefactory:base-image"  # publisher/offer/sku or a source resource id
TAG_CATALOGUE_HASH: Final = "imagefactory:catalogue-hash"
TAG_OWNER: Final = "imagefactory:owner"
TAG_DISPLAY_NAME: Final = "imagefactory:display-name"  # "Win11 | Office | v1.3.0 | 2025-01"
TAG_OS: Final = "imagefactory:os"
TAG_WORKLOAD: Final = "imagefactory:workload"
TAG_BUILT: Final = "imagefactory:built"  # ISO 8601 UTC
TAG_MANIFEST_HASH: Final = "imagefactory:manifest-hash"
TAG_MANIFEST_PARTS: Final = "imagefactory:manifest-parts"  # number of manifest chunks
TAG_MANIFEST_PART_PREFIX: Final = "imagefactory:manifest-"  # + two digits: manifest-00, -01 ...

# On the gallery image definition: the highest version ever allocated (never reused).
TAG_LAST_ALLOCATED: Final = "imagefactory:last-allocated-version"

# On temporary build resources (VM, NIC, disks, snapshots): clean-up finds them by these.
TAG_ROLE: Final = (
    "imagefactory:role"  # build-vm | capture-vm | nic | os-disk | snapshot | clone-disk
)

# Azure limits (Azure Resource Manager tag rules).
MAX_TAGS: Final = 50
MAX_TAG_NAME: Final = 512
MAX_TAG_VALUE: Final = 256
TAG_NAME_FORBIDDEN: Final = frozenset("<>%&\\?/")
RESERVED_TAG_PREFIXES: Final = ("microsoft", "azure", "windows")


def tag_value(tags: Mapping[str, str] | None, key: str) -> str | None:
    """The value of ``key`` in ``tags``, matching the key case-insensitively."""
    wanted = key.lower()
    for name, value in (tags or {}).items():
        if name.lower() == wanted:
            return value
    return None


def tag_problems(tags: Mapping[str, str], path: str = "tags") -> list[FieldError]:
    """Every way ``tags`` breaks Azure's tag rules (empty when they are fine)."""
    problems: list[FieldError] = []
    if len(tags) > MAX_TAGS:
        problems.append(FieldError(path, f"{len(tags)} tags, Azure allows at most {MAX_TAGS}"))
    seen: dict[str, str] = {}
    for name, value in tags.items():
        where = f"{path}.{name}"
        if not name or len(name) > MAX_TAG_NAME:
            problems.append(FieldError(where, f"tag names are 1-{MAX_TAG_NAME} characters"))
        bad = sorted(set(name) & TAG_NAME_FORBIDDEN)
        if bad:
            problems.append(FieldError(where, f"tag names may not contain {' '.join(bad)}"))
        if name.lower() in seen:
            problems.append(FieldError(where, f"same name as tag {seen[name.lower()]!r}"))
        seen[name.lower()] = name
        if not isinstance(value, str) or len(value) > MAX_TAG_VALUE:
            problems.append(FieldError(where, f"tag values are strings of 0-{MAX_TAG_VALUE} chars"))
    return problems


def check_tags(tags: Mapping[str, str], path: str = "tags") -> None:
    """Raise InputError naming every tag that breaks Azure's tag rules."""
    problems = tag_problems(tags, path)
    if problems:
        raise InputError(problems, "invalid tags")


_ARM_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)"
    r"/providers/(?P<ns>[^/]+)/(?P<rest>[^?#]+?)/?$",
    re.IGNORECASE,
)
_SUBSCRIPTION_SCOPE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)(?:/.*)?$", re.IGNORECASE)


@dataclass(frozen=True)
class ResourceId:
    """A parsed ARM resource id ``/subscriptions/S/resourceGroups/RG/providers/NS/t1/n1/...``."""

    subscription_id: str
    resource_group: str
    namespace: str
    types: tuple[str, ...]
    names: tuple[str, ...]

    @property
    def type(self) -> str:
        """``Microsoft.Compute/virtualMachines``, ``Microsoft.Compute/galleries/images`` ..."""
        return "/".join((self.namespace, *self.types))

    @property
    def name(self) -> str:
        return self.names[-1]

    def is_type(self, resource_type: str) -> bool:
        return self.type.lower() == resource_type.lower()

    @classmethod
    def parse(
        cls, text: str, field_name: str = "resource_id", expected_type: str | None = None
    ) -> ResourceId:
        """Parse ``text`` as an id (of ``expected_type`` when given); an InputError naming
        ``field_name`` otherwise. :func:`parse_resource_id` is the lookup that never raises."""
        parsed = parse_resource_id(text)
        if parsed is None:
            raise InputError.single(field_name, f"not an ARM resource id: {text!r}")
        if expected_type is not None and not parsed.is_type(expected_type):
            raise InputError.single(
                field_name, f"expected a {expected_type} id, got a {parsed.type} id"
            )
        return parsed

    def __str__(self) -> str:
        path = "/".join(f"{t}/{n}" for t, n in zip(self.types, self.names, strict=True))
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/{self.namespace}/{path}"
        )


def parse_resource_id(text: str) -> ResourceId | None:
    """The parsed id, or None when ``text`` is not an ARM resource id (no error: a lookup)."""
    match = _ARM_ID.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        return None
    parts = match.group("rest").split("/")
    if len(parts) % 2 != 0 or any(not p for p in parts):
        return None
    return ResourceId(
        subscription_id=match.group("sub"),
        resource_group=match.group("rg"),
        namespace=match.group("ns"),
        types=tuple(parts[0::2]),
        names=tuple(parts[1::2]),
    )


def subscription_of(text: str | None) -> str | None:
    """The subscription id of a resource id or scope (``/subscriptions/S/...``), else None."""
    if not text:
        return None
    match = _SUBSCRIPTION_SCOPE.match(text.strip())
    return match.group("sub") if match else None


VM_TYPE: Final = "Microsoft.Compute/virtualMachines"
DISK_TYPE: Final = "Microsoft.Compute/disks"
SNAPSHOT_TYPE: Final = "Microsoft.Compute/snapshots"
NIC_TYPE: Final = "Microsoft.Network/networkInterfaces"
SUBNET_TYPE: Final = "Microsoft.Network/virtualNetworks/subnets"
GALLERY_VERSION_TYPE: Final = "Microsoft.Compute/galleries/images/versions"
HOST_POOL_TYPE: Final = "Microsoft.DesktopVirtualization/hostPools"

# ---- retention and clean-up (docs/retention.md) ------------------------------------------
# On a VM kept deallocated after a rollout replaced it (seed 002): ISO 8601 UTC instant after
# which the retention job deletes it (with its NIC and disks). Written by the rollout.
TAG_RETAIN_UNTIL: Final = "imagefactory:retain-until"
# On a validation host (VM, NIC, disks) and its session host registration: the validation's
# id. The validation orchestration's instance id contains it; a host whose validation no longer
# runs is left over from an interrupted validation and is removed by the retention job.
TAG_VALIDATION_ID: Final = "imagefactory:validation-id"
# On a gallery version: ring names (comma-separated) that pin it; a pinned version is in use.
TAG_PINNED_RINGS: Final = "imagefactory:pinned-rings"
