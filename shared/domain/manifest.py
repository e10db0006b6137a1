"""Build manifests: what went into a gallery version, stored on it, compared between versions.

A :class:`BuildManifest` records the base image, the catalogue entry's hash, every customisation
step (name, kind, hash of its rendered lines, start/end, outcome), the applications found on
the image (name -> version) and the time spent per phase. It answers "what changed between
1.3.0 and 1.4.0" (:func:`diff_manifests`) without keeping anything outside the gallery.

Where it is stored: a gallery image *version* has no description property (the SDK model
``GalleryImageVersionProperties`` carries publishing, storage, safety, security and
validation profiles only; ``description`` exists on the image *definition*, shared by all
versions). So the manifest lives in the version's tags: its canonical JSON, zlib-compressed and
base64url-encoded, cut into 256-character values ``imagefactory:manifest-00``, ``-01`` ...,
plus ``imagefactory:manifest-parts`` and ``imagefactory:manifest-hash`` (sha256 of the JSON),
within Azure's limits of 50 tags and 256 characters per value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from shared.domain.lifecycle import LIFECYCLE_TAG_RESERVE
from shared.domain.resources import (
    MAX_TAG_VALUE,
    MAX_TAGS,
    TAG_MANIFEST_HASH,
    TAG_MANIFEST_PART_PREFIX,
    TAG_MANIFEST_PARTS,
    tag_value,
)
from shared.errors import InputError, PermanentError, field_errors_from_pydantic

SCHEMA_VERSION: Final = 1
# The 50-tag budget of a gallery version: the standard tags (naming.version_tags, at most
# STANDARD_VERSION_TAGS without the catalogue's own), the lifecycle's (lifecycle.py), the
# manifest's part count and hash, and the manifest parts themselves. The catalogue's extra tags
# come out of the manifest's share (manifest_budget).
STANDARD_VERSION_TAGS: Final = 12
MAX_MANIFEST_PARTS: Final = MAX_TAGS - STANDARD_VERSION_TAGS - LIFECYCLE_TAG_RESERVE - 2


def manifest_budget(tags_before: int) -> int:
    """How many manifest parts fit beside ``tags_before`` build-time tags, leaving room for
    the part count, the hash and every lifecycle tag a version gets later."""
    return min(MAX_MANIFEST_PARTS, MAX_TAGS - tags_before - 2 - LIFECYCLE_TAG_RESERVE)


@dataclass(frozen=True)
class BaseImage:
    """What a build started from: a marketplace image, or a source resource id."""

    kind: str  # marketplace | gallery_version | snapshot | source_vm
    publisher: str | None = None
    offer: str | None = None
    sku: str | None = None
    version: str | None = None
    source_id: str | None = None

    def describe(self) -> str:
        if self.kind == "marketplace":
            return f"{self.publisher}/{self.offer}/{self.sku} {self.version or '?'}"
        version = f" {self.version}" if self.version else ""
        return f"{self.kind} {self.source_id or '?'}{version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "publisher": self.publisher,
            "offer": self.offer,
            "sku": self.sku,
            "version": self.version,
            "source_id": self.source_id,
        }


@dataclass(frozen=True)
class StepRecord:
    """One customisation step as it ran."""

    name: str
    kind: str | None
    content_hash: str | None
    started: datetime | None = None
    ended: datetime | None = None
    status: str | None = None  # the run command's end state: Succeeded, Failed, TimedOut ...
    exit_code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "content_hash": self.content_hash,
            "started": _iso(self.started),
            "ended": _iso(self.ended),
            "status": self.status,
            "exit_code": self.exit_code,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class BuildManifest:
    """Everything that went into one gallery version (immutable)."""

    image: str
    version: str
    build_id: str
    base: BaseImage
    catalogue_hash: str
    steps: tuple[StepRecord, ...] = ()
    tools: Mapping[str, str] = field(default_factory=dict)  # application -> version
    phase_seconds: Mapping[str, float] = field(default_factory=dict)
    created: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "image": self.image,
            "version": self.version,
            "build_id": self.build_id,
            "base": self.base.to_dict(),
            "catalogue_hash": self.catalogue_hash,
            "steps": [s.to_dict() for s in self.steps],
            "tools": dict(sorted(self.tools.items())),
            "phase_seconds": {k: round(float(v), 3) for k, v in sorted(self.phase_seconds.items())},
            "created": _iso(self.created),
        }

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace (the manifest hash is over this text)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @property
    def hash(self) -> str:
        """sha256 (hex) of :meth:`to_json`."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BuildManifest:
        """Read a manifest dict (also the build orchestrator's shape); InputError if invalid."""
        try:
            model = _ManifestIn.model_validate(data)
        except ValidationError as exc:
            raise InputError(
                field_errors_from_pydantic(exc.errors(include_url=False)),  # type: ignore[arg-type]
                "invalid build manifest",
            ) from None
        return model.to_manifest()

    @classmethod
    def from_json(cls, text: str | bytes) -> BuildManifest:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError.single("", f"not JSON: {exc}", "invalid build manifest") from None
        if not isinstance(data, dict):
            raise InputError.single("", "must be a JSON object", "invalid build manifest")
        return cls.from_dict(data)


# -- reading (tolerant of the orchestrator's field names, strict on types) -------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _BaseIn(_In):
    kind: str = Field(min_length=1)
    publisher: str | None = None
    offer: str | None = None
    sku: str | None = None
    version: str | None = None
    source_id: str | None = None
    image_version_id: str | None = None
    snapshot_source_id: str | None = None
    source_vm_id: str | None = None

    def to_base(self) -> BaseImage:
        source = (
            self.source_id or self.image_version_id or self.snapshot_source_id or self.source_vm_id
        )
        return BaseImage(
            kind=self.kind,
            publisher=self.publisher,
            offer=self.offer,
            sku=self.sku,
            version=self.version,
            source_id=source,
        )


class _StepIn(_In):
    name: str = Field(min_length=1)
    kind: str | None = None
    content_hash: str | None = None
    started: AwareDatetime | None = None
    ended: AwareDatetime | None = None
    status: str | None = None
    state: str | None = None  # the orchestrator's name for status
    exit_code: int | None = None

    def to_record(self) -> StepRecord:
        return StepRecord(
            name=self.name,
            kind=self.kind,
            content_hash=self.content_hash,
            started=self.started,
            ended=self.ended,
            status=self.status or self.state,
            exit_code=self.exit_code,
        )


class _ManifestIn(_In):
    schema_: int = Field(default=SCHEMA_VERSION, alias="schema", ge=1, le=SCHEMA_VERSION)
    image: str = Field(min_length=1)
    version: str = Field(min_length=1)
    build_id: str = Field(min_length=1)
    base: _BaseIn
    catalogue_hash: str = Field(min_length=1)
    steps: list[_StepIn] = Field(default_factory=list)
    tools: dict[str, str] = Field(default_factory=dict)
    phase_seconds: dict[str, float] = Field(default_factory=dict)
    created: AwareDatetime | None = None

    def to_manifest(self) -> BuildManifest:
        return BuildManifest(
            image=self.image,
            version=self.version,
            build_id=self.build_id,
            base=self.base.to_base(),
            catalogue_hash=self.catalogue_hash,
            steps=tuple(s.to_record() for s in self.steps),
            tools=dict(self.tools),
            phase_seconds=dict(self.phase_seconds),
            created=self.created,
        )


# -- compact encoding in tags ---------------------------------------------------------------


def _part_key(index: int) -> str:
    return f"{TAG_MANIFEST_PART_PREFIX}{index:02d}"


def manifest_tags(manifest: BuildManifest, max_parts: int = MAX_MANIFEST_PARTS) -> dict[str, str]:
    """The manifest as gallery-version tags (chunks + part count + hash).

    PermanentError when it needs more than ``max_parts`` chunks (pass the tags left after the
    standard ones: ``MAX_TAGS - len(other_tags) - 2``).
    """
    if not 1 <= max_parts <= MAX_TAGS - 2:
        raise InputError.single("max_parts", f"must be between 1 and {MAX_TAGS - 2}")
    text = manifest.to_json().encode("utf-8")
    packed = base64.urlsafe_b64encode(zlib.compress(text, 9)).decode("ascii").rstrip("=")
    parts = [packed[i : i + MAX_TAG_VALUE] for i in range(0, len(packed), MAX_TAG_VALUE)]
    if len(parts) > max_parts:
        raise PermanentError(
            f"the build manifest needs {len(parts)} tags of {MAX_TAG_VALUE} characters but only "
            f"{max_parts} are free ({len(text)} bytes of JSON, {len(manifest.steps)} steps, "
            f"{len(manifest.tools)} tools)"
        )
    tags = {_part_key(i): part for i, part in enumerate(parts)}
    tags[TAG_MANIFEST_PARTS] = str(len(parts))
    tags[TAG_MANIFEST_HASH] = manifest.hash
    return tags


def manifest_from_tags(tags: Mapping[str, str]) -> BuildManifest:
    """Read the manifest back from a version's tags; InputError if missing or damaged."""
    count_text = tag_value(tags, TAG_MANIFEST_PARTS)
    if count_text is None or not count_text.isdigit() or not 1 <= int(count_text) <= MAX_TAGS:
        raise InputError.single(TAG_MANIFEST_PARTS, "missing or not a part count", "no manifest")
    chunks: list[str] = []
    for index in range(int(count_text)):
        chunk = tag_value(tags, _part_key(index))
        if chunk is None:
            raise InputError.single(_part_key(index), "missing manifest part", "no manifest")
        chunks.append(chunk)
    packed = "".join(chunks)
    try:
        padded = packed + "=" * (-len(packed) % 4)
        raw = zlib.decompress(base64.b64decode(padded, altchars=b"-_", validate=True))
    except (binascii.Error, zlib.error, ValueError) as exc:
        raise InputError.single(
            TAG_MANIFEST_PART_PREFIX + "*", f"cannot decode the manifest ({exc})", "no manifest"
        ) from None
    expected = tag_value(tags, TAG_MANIFEST_HASH)
    actual = hashlib.sha256(raw).hexdigest()
    if expected is not None and expected.lower() != actual:
        raise InputError.single(
            TAG_MANIFEST_HASH,
            f"the manifest's hash is {actual}, the tag says {expected}",
            "damaged manifest",
        )
    return BuildManifest.from_json(raw)


# -- comparing two versions -----------------------------------------------------------------


@dataclass(frozen=True)
class ManifestDiff:
    """What changed from ``old`` to ``new`` (empty fields: nothing of that kind changed)."""

    old_version: str
    new_version: str
    base: tuple[BaseImage, BaseImage] | None = None
    catalogue_hashes: tuple[str, str] | None = None
    steps_added: tuple[str, ...] = ()
    steps_removed: tuple[str, ...] = ()
    steps_changed: tuple[str, ...] = ()
    steps_reordered: bool = False
    apps_added: Mapping[str, str] = field(default_factory=dict)
    apps_removed: Mapping[str, str] = field(default_factory=dict)
    apps_changed: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not (
            self.base
            or self.catalogue_hashes
            or self.steps_added
            or self.steps_removed
            or self.steps_changed
            or self.steps_reordered
            or self.apps_added
            or self.apps_removed
            or self.apps_changed
        )

    def render(self) -> str:
        """A short human-readable account, one change per line."""
        lines = [f"{self.old_version} -> {self.new_version}"]
        if self.is_empty:
            lines.append("  no differences")
            return "\n".join(lines)
        if self.base:
            old, new = self.base
            if (old.kind, old.publisher, old.offer, old.sku, old.source_id) == (
                new.kind,
                new.publisher,
                new.offer,
                new.sku,
                new.source_id,
            ):
                lines.append(f"  base image: {old.describe()} -> {new.version or '?'}")
            else:
                lines.append(f"  base image: {old.describe()} -> {new.describe()}")
        if self.catalogue_hashes:
            old_hash, new_hash = self.catalogue_hashes
            lines.append(f"  catalogue entry changed ({old_hash[:12]} -> {new_hash[:12]})")
        if self.steps_added:
            lines.append(f"  steps added: {', '.join(self.steps_added)}")
        if self.steps_removed:
            lines.append(f"  steps removed: {', '.join(self.steps_removed)}")
        if self.steps_changed:
            lines.append(f"  steps changed: {', '.join(self.steps_changed)}")
        if self.steps_reordered:
            lines.append("  steps reordered")
        if self.apps_changed:
            changes = ", ".join(
                f"{k} {o} -> {n}" for k, (o, n) in sorted(self.apps_changed.items())
            )
            lines.append(f"  apps changed: {changes}")
        if self.apps_added:
            lines.append(
                f"  apps added: {', '.join(f'{k} {v}' for k, v in sorted(self.apps_added.items()))}"
            )
        if self.apps_removed:
            removed = ", ".join(f"{k} {v}" for k, v in sorted(self.apps_removed.items()))
            lines.append(f"  apps removed: {removed}")
        return "\n".join(lines)


def diff_manifests(old: BuildManifest, new: BuildManifest) -> ManifestDiff:
    """What changed between two builds' manifests (steps matched by name)."""
    old_steps = {s.name: s for s in old.steps}
    new_steps = {s.name: s for s in new.steps}
    added = tuple(s.name for s in new.steps if s.name not in old_steps)
    removed = tuple(s.name for s in old.steps if s.name not in new_steps)
    changed = tuple(
        s.name
        for s in new.steps
        if s.name in old_steps
        and (s.content_hash, s.kind) != (old_steps[s.name].content_hash, old_steps[s.name].kind)
    )
    common_old = [s.name for s in old.steps if s.name in new_steps]
    common_new = [s.name for s in new.steps if s.name in old_steps]
    apps_added = {k: v for k, v in new.tools.items() if k not in old.tools}
    apps_removed = {k: v for k, v in old.tools.items() if k not in new.tools}
    apps_changed = {
        k: (old.tools[k], v) for k, v in new.tools.items() if k in old.tools and old.tools[k] != v
    }
    return ManifestDiff(
        old_version=old.version,
        new_version=new.version,
        base=(old.base, new.base) if old.base != new.base else None,
        catalogue_hashes=(
            (old.catalogue_hash, new.catalogue_hash)
            if old.catalogue_hash != new.catalogue_hash
            else None
        ),
        steps_added=added,
        steps_removed=removed,
        steps_changed=changed,
        steps_reordered=common_old != common_new,
        apps_added=apps_added,
        apps_removed=apps_removed,
        apps_changed=apps_changed,
    )
