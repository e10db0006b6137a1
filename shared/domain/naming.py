"""Names: the image naming standard and deterministic names for temporary build resources.

Display name (naming standard, seed 001): ``OS | Workload | vX.Y.Z | yyyy-mm``, e.g.
``Win11 | Office | v1.3.0 | 2025-01``, carried with the other standard tags on every gallery
version. Temporary resources of a build get names derived only from (image name, build id), so
an activity that runs twice finds the resource it created the first time, and the clean-up and
the Event Grid triggers can tell which build a resource belongs to.

Azure's rules (Naming rules and restrictions for Azure resources) and what we generate:

* VM resource name: 1-64, letters, digits, ``_ . -``, starts alphanumeric, ends alphanumeric or
  ``_``; a Windows VM name has no period. We use ``vm-<build>``.
* Windows computer name (``osProfile.computerName``): 1-15, letters, digits and hyphens, not
  only digits. We use ``<image prefix>-<8 hex of the build id's hash>``.
* NIC, managed disk, snapshot: 1-80, letters, digits, ``_ . -`` (disks: no period), starts
  alphanumeric, ends alphanumeric or ``_``.
Every generated name uses only lower-case letters, digits and hyphens, starts with a letter and
ends with a letter or digit, which satisfies all of the above.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from shared.domain.lifecycle import APP_ACTOR
from shared.domain.resources import (
    DISK_TYPE,
    MAX_TAG_VALUE,
    NIC_TYPE,
    TAG_BASE_IMAGE,
    TAG_BASE_IMAGE_VERSION,
    TAG_BUILD_ID,
    TAG_BUILT,
    TAG_CATALOGUE_HASH,
    TAG_DISPLAY_NAME,
    TAG_IMAGE,
    TAG_OS,
    TAG_OWNER,
    TAG_REQUESTED_BY,
    TAG_ROLE,
    TAG_STATE,
    TAG_WORKLOAD,
    check_tags,
)
from shared.domain.versions import ImageVersion, VersionState
from shared.errors import InputError

DISPLAY_SEPARATOR: Final = " | "
MAX_TOKEN: Final = 52  # longest build token: "vmclone-" + 52 = 60 <= 64
COMPUTER_NAME_MAX: Final = 15


def display_name(os_name: str, workload: str, version: str | ImageVersion, built: datetime) -> str:
    """``Win11 | Office | v1.3.0 | 2025-01`` (the build month in UTC)."""
    if built.tzinfo is None or built.utcoffset() is None:
        raise InputError.single("built", "must be a timezone-aware datetime")
    parsed = version if isinstance(version, ImageVersion) else ImageVersion.parse(str(version))
    for field_name, value in (("os", os_name), ("workload", workload)):
        if not value.strip() or "|" in value:
            raise InputError.single(field_name, "must be non-empty and contain no '|'")
    month = built.astimezone(UTC).strftime("%Y-%m")
    text = DISPLAY_SEPARATOR.join((os_name.strip(), workload.strip(), f"v{parsed}", month))
    if len(text) > MAX_TAG_VALUE:
        raise InputError.single("display_name", f"longer than {MAX_TAG_VALUE} characters")
    return text


def _hash8(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    return re.sub(r"-{2,}", "-", slug).strip("-")


def build_token(build_id: str) -> str:
    """The build id as it appears in resource names.

    A build id that is already lower-case letters, digits and single hyphens, at most
    ``MAX_TOKEN`` long (every id the build queue makes: ``<image>-<8 hex>``), is used verbatim,
    so :func:`build_id_from_resource_name` gives it back. Anything else becomes a shortened slug
    plus a hash of the original, still unique and deterministic.
    """
    if not build_id or not build_id.strip():
        raise InputError.single("build_id", "must not be empty")
    slug = _slug(build_id)
    if slug == build_id and len(slug) <= MAX_TOKEN and slug[0].isalpha():
        return slug
    head = slug[: MAX_TOKEN - 9].strip("-") or "build"
    if not head[0].isalpha():
        head = f"b{head}"[: MAX_TOKEN - 9]
    return f"{head}-{_hash8(build_id)}"


def computer_name(image_name: str, build_id: str) -> str:
    """A Windows computer name (<= 15 chars) unique per build: ``<prefix>-<8 hex>``."""
    prefix = re.sub(r"[^a-z0-9]", "", image_name.lower())[:6]
    if not prefix or not prefix[0].isalpha():
        prefix = ("b" + prefix)[:6]
    return f"{prefix}-{_hash8(build_id)}"


# Prefix of each generated resource name, followed by the build token (one table: the names
# below and :func:`build_id_from_resource_name` both read it).
_NAME_PREFIX: Final = {
    "vm": "vm-",
    "nic": "nic-",
    "os_disk": "osdisk-",
    "snapshot": "snap-",
    "clone_disk": "clonedisk-",
    "clone_vm": "vmclone-",
    "clone_nic": "nicclone-",
}
GENERATED_NAME_PREFIXES: Final = tuple(_NAME_PREFIX.values())


@dataclass(frozen=True)
class BuildResourceNames:
    """The names of every temporary resource of one build (all in the build resource group)."""

    vm: str
    computer_name: str
    nic: str
    os_disk: str
    snapshot: str
    clone_disk: str
    clone_vm: str
    clone_nic: str

    def created_untagged(self) -> dict[str, frozenset[str]]:
        """By ARM type, the names of what Azure creates for this build *without* its tags: the
        NIC a VM makes from its NIC configuration (named as configured, or
        ``<vm>-<configuration>``) and the OS disk made from an image. Clean-up may match an
        untagged resource by one of these exact names, and by nothing looser."""
        return {
            NIC_TYPE: frozenset(
                {
                    self.nic,
                    f"{self.vm}-{self.nic}",
                    self.clone_nic,
                    f"{self.clone_vm}-{self.clone_nic}",
                }
            ),
            DISK_TYPE: frozenset({self.os_disk}),
        }

    def to_dict(self) -> dict[str, str]:
        return {
            "vm": self.vm,
            "computer_name": self.computer_name,
            "nic": self.nic,
            "os_disk": self.os_disk,
            "snapshot": self.snapshot,
            "clone_disk": self.clone_disk,
            "clone_vm": self.clone_vm,
            "clone_nic": self.clone_nic,
        }


def build_resource_names(image_name: str, build_id: str) -> BuildResourceNames:
    """Deterministic, ARM-valid names for a build's temporary resources."""
    token = build_token(build_id)
    generated = {field: prefix + token for field, prefix in _NAME_PREFIX.items()}
    return BuildResourceNames(computer_name=computer_name(image_name, build_id), **generated)


def build_id_from_resource_name(name: str) -> str | None:
    """The build token in a generated resource name (``vm-win11-office-1a2b3c4d`` ->
    ``win11-office-1a2b3c4d``); None for a name the factory did not generate.

    For build ids made by the build queue the token *is* the build id (see :func:`build_token`).
    A name says nothing about ownership (anyone may call a VM ``vm-golden``): use it only to
    route a signal to a build that exists, never to decide what to delete.
    """
    lowered = name.strip().lower()
    for prefix in GENERATED_NAME_PREFIXES:
        if lowered.startswith(prefix):
            token = lowered[len(prefix) :]
            if token and re.fullmatch(r"[a-z][a-z0-9-]*[a-z0-9]|[a-z]", token):
                return token
            return None
    return None


# -- run commands ----------------------------------------------------------------------------

# Names of the managed run commands a build creates on its VM (besides the steps').
RUN_GUARD_BITLOCKER: Final = "guard-bitlocker"
RUN_GUARD_HEALTH: Final = "guard-health"
RUN_SYSPREP: Final = "sysprep"
MAX_STEPS_NAMED: Final = 999


def step_run_command(index: int, build_token: str | None = None) -> str:
    """The run command of customisation step ``index`` (1-based): ``step-01``, or
    ``step-01-<token>`` with a build id or token (so two builds on one VM never share a name).

    The token part is :func:`build_token` of what is given (a queue build id stays as it is), so
    the name is at most ``len("step-999-") + MAX_TOKEN`` = 61 characters, within Azure's 80.
    """
    if not 1 <= index <= MAX_STEPS_NAMED:
        raise InputError.single("index", f"must be between 1 and {MAX_STEPS_NAMED}")
    name = f"step-{index:02d}"
    return f"{name}-{_token_of(build_token)}" if build_token is not None else name


_token_of = build_token  # the parameter above shadows the function's name


# -- validity rules (used by tests and by anyone taking names from outside) -----------------

ResourceKind = Literal["vm", "computer_name", "nic", "disk", "snapshot", "run_command"]

_RULES: Final[dict[str, tuple[int, re.Pattern[str]]]] = {
    # kind: (max length, full pattern)
    "vm": (64, re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?$")),
    "computer_name": (
        COMPUTER_NAME_MAX,
        re.compile(r"^(?![0-9]+$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$"),
    ),
    "nic": (80, re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")),
    "disk": (80, re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?$")),
    "snapshot": (80, re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")),
    "run_command": (80, re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")),
}


def is_valid_name(kind: ResourceKind, name: str) -> bool:
    """Whether ``name`` meets Azure's rules for ``kind`` (a Windows VM for ``vm``)."""
    limit, pattern = _RULES[kind]
    return 1 <= len(name) <= limit and pattern.fullmatch(name) is not None


# -- tags per the naming standard -----------------------------------------------------------


def version_tags(
    *,
    image: str,
    owner: str,
    os_name: str,
    workload: str,
    version: str,
    build_id: str,
    built: datetime,
    catalogue_hash: str,
    base_image: str,
    base_version: str | None = None,
    display: str | None = None,
    extra: Mapping[str, str] | None = None,
    state: VersionState = VersionState.STAGED,
    requested_by: str | None = None,
) -> dict[str, str]:
    """The standard tags of a gallery version (add the manifest tags from ``manifest.py``).

    ``base_image`` is ``publisher/offer/sku`` for a marketplace base or the source resource id
    (shortened to Azure's tag limit); ``base_version`` the base's concrete version (the
    marketplace watch compares it); ``display`` replaces the computed display name. ``extra``
    (the catalogue's ``naming.tags``) comes first; the factory's ``imagefactory:*`` keys win.
    ``requested_by`` is who asked for the build (``imagefactory`` for the app's own builds): the
    version's approver must be someone else (shared/domain/lifecycle.py).
    """
    tags: dict[str, str] = dict(extra or {})
    tags.update(
        {
            TAG_IMAGE: image,
            TAG_STATE: state.value,
            TAG_BUILD_ID: build_id,
            TAG_OWNER: owner,
            TAG_OS: os_name,
            TAG_WORKLOAD: workload,
            TAG_DISPLAY_NAME: display or display_name(os_name, workload, version, built),
            TAG_BUILT: built.astimezone(UTC).isoformat(timespec="seconds"),
            TAG_CATALOGUE_HASH: catalogue_hash,
            TAG_BASE_IMAGE: _shorten(base_image),
        }
    )
    if base_version:
        tags[TAG_BASE_IMAGE_VERSION] = base_version
    tags[TAG_REQUESTED_BY] = _shorten(" ".join((requested_by or APP_ACTOR).split()) or APP_ACTOR)
    check_tags(tags)
    return tags


def _shorten(value: str) -> str:
    """A tag value within Azure's limit: long values keep their tail and a hash of the whole."""
    if len(value) <= MAX_TAG_VALUE:
        return value
    return f"sha256:{_hash8(value)}...{value[-(MAX_TAG_VALUE - 20) :]}"


BuildRole = Literal["build-vm", "capture-vm", "nic", "os-disk", "snapshot", "clone-disk"]


def build_resource_tags(image_name: str, build_id: str, role: BuildRole) -> dict[str, str]:
    """Tags of a temporary build resource: the clean-up deletes everything with the build id."""
    return {TAG_IMAGE: image_name, TAG_BUILD_ID: build_id, TAG_ROLE: role}
