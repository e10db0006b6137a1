"""The build plan: its typed shape, and how it is resolved from the catalogue and settings.

``resolve_build_plan`` returns the plan as a plain dict; every later activity receives it back
unchanged and validates it with :class:`BuildPlan` (a bad field becomes an InputError naming
``plan.<field>``). Fields are listed in docs/build-activities.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.app_catalogue import app_catalogue
from shared.azure import compute, gallery
from shared.azure.models import resource_id
from shared.domain.catalogue import CatalogueImage, catalogue_hash
from shared.domain.events import sysprep_finished_event
from shared.domain.manifest import BuildManifest, manifest_budget, manifest_tags
from shared.domain.naming import BuildResourceNames, build_resource_names, version_tags
from shared.domain.resources import TAG_LAST_ALLOCATED, check_tags, tag_value
from shared.domain.steps import health_check_script, pre_capture_script, sysprep_script
from shared.domain.versions import ImageVersion, next_version
from shared.errors import ConflictError, FieldError, InputError, NotFoundError, PermanentError
from shared.settings import Settings

CaptureMode = Literal["temporary-vm", "source-vm-clone"]
SourceKind = Literal["marketplace", "gallery_version", "snapshot"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PlanSource(_Part):
    """Where the build VM's OS disk comes from."""

    kind: SourceKind
    publisher: str | None = None
    offer: str | None = None
    sku: str | None = None
    version: str | None = None
    image_version_id: str | None = None
    snapshot_source_id: str | None = None


class PlanGallery(_Part):
    """The gallery image definition the build publishes a version of."""

    resource_group: str = Field(min_length=1)
    name: str = Field(min_length=1)
    image_definition: str = Field(min_length=1)
    security_type: str | None = "TrustedLaunchSupported"
    hyper_v_generation: str = "V2"
    os_type: str = "Windows"
    publisher: str = Field(min_length=1)
    offer: str = Field(min_length=1)
    sku: str = Field(min_length=1)
    location: str = Field(min_length=1)
    description: str | None = None


class PlanStep(_Part):
    name: str
    kind: str
    script: list[str]
    content_hash: str = ""


class PlanRegion(_Part):
    name: str = Field(min_length=1)
    replica_count: int = Field(default=1, ge=1, le=100)
    storage_account_type: str = "Standard_LRS"


class PlanNames(_Part):
    """Deterministic resource names for this build (keyed by the build id)."""

    vm: str = Field(min_length=1)
    nic: str = Field(min_length=1)
    os_disk: str = Field(min_length=1)
    snapshot: str = Field(min_length=1)
    clone_disk: str = Field(min_length=1)
    clone_vm: str = Field(min_length=1)
    clone_nic: str = Field(min_length=1)
    computer_name: str = Field(min_length=1, max_length=15)


class BuildPlan(_Part):
    """Everything a build needs to know, resolved once at its start."""

    image: str = Field(min_length=1)
    os: str = Field(min_length=1)
    workload: str = Field(min_length=1)
    owner: str
    catalogue_hash: str
    resource_group: str = Field(min_length=1)
    location: str = Field(min_length=1)
    vm_size: str = Field(min_length=1)
    subnet_id: str = Field(min_length=1)
    capture_mode: CaptureMode = "temporary-vm"
    source_vm_id: str | None = None
    source: PlanSource
    gallery: PlanGallery
    steps: list[PlanStep] = Field(default_factory=list)
    guardrail_script: list[str] = Field(default_factory=list)
    health_script: list[str] = Field(default_factory=list)
    sysprep_script: list[str] = Field(default_factory=list)
    target_regions: list[PlanRegion] = Field(min_length=1)
    timeout_minutes: int = Field(default=240, ge=1)
    sysprep_timeout_minutes: int = Field(default=90, ge=1)
    poll_seconds: int = Field(default=15, ge=1)
    # Event-first waits (SAFETY_POLL_SECONDS): 0 = no resource events, poll every poll_seconds.
    safety_poll_seconds: int = Field(default=0, ge=0)
    # The sysprep script signals its end (ImageFactory.SysprepFinished).
    sysprep_signal: bool = False
    min_free_disk_gb: float = Field(default=10.0, ge=0)
    end_of_life_days: int = Field(default=180, ge=1, le=3650)
    replica_count: int = Field(default=1, ge=1, le=100)
    storage_account_type: str = "Standard_LRS"
    os_disk_storage_type: str = "StandardSSD_LRS"
    names: PlanNames
    base_version: str | None = None
    version_tags: dict[str, str] = Field(default_factory=dict)
    # The build VM's user-assigned identity (its sysprep signal's token), when configured.
    build_vm_identity_id: str | None = None


class BuildRequest(_Part):
    """Why a build was asked for: the queue key, a reason, and an optional base version pin."""

    key: str = ""
    reason: str = ""
    base_version: str | None = None


# ---- version allocation -----------------------------------------------------------------

# Which build made the last allocation: a retried allocate_version of that build gets the same
# version back instead of a new one.
TAG_ALLOCATED_BY = "imagefactory:allocated-by"


def allocate(settings: Settings, plan: BuildPlan, build_id: str) -> str:
    """The next version of the plan's image definition, recorded on the definition's tags.

    Above every existing version *and* the highest ever allocated (kept in the definition's
    ``imagefactory:last-allocated-version`` tag), so a deleted version's number is never
    reused. Idempotent for one build: when the tags say this build made the last allocation,
    that version is returned again.
    """
    g = plan.gallery
    definition = gallery.get_image_definition(
        settings, g.resource_group, g.name, g.image_definition
    )
    if not definition.exists:
        raise NotFoundError(
            f"image definition {g.name}/{g.image_definition} does not exist "
            "(ensure_gallery_image creates it)"
        )
    last = tag_value(definition.tags, TAG_LAST_ALLOCATED)
    if last is not None and ImageVersion.try_parse(last) is None:
        raise PermanentError(
            f"image definition {g.image_definition}: tag {TAG_LAST_ALLOCATED} holds {last!r}, "
            "not a Major.Minor.Patch version; fix or remove the tag"
        )
    if last is not None and tag_value(definition.tags, TAG_ALLOCATED_BY) == build_id:
        return str(ImageVersion.parse(last))
    existing = [
        v.name
        for v in gallery.list_image_versions(settings, g.resource_group, g.name, g.image_definition)
        if ImageVersion.try_parse(v.name) is not None
    ]
    if last is not None:
        existing.append(last)
    version = next_version(existing)
    tags = {
        k: v
        for k, v in definition.tags.items()
        if k.lower() not in (TAG_LAST_ALLOCATED, TAG_ALLOCATED_BY)
    }
    tags.update({TAG_LAST_ALLOCATED: version, TAG_ALLOCATED_BY: build_id})
    gallery.begin_update_image_definition_tags(
        settings, g.resource_group, g.name, g.image_definition, tags
    )
    return version


# ---- gallery version tags ---------------------------------------------------------------


def base_image_of(plan: BuildPlan) -> str:
    """``publisher/offer/sku`` for a marketplace base, else the source resource id."""
    source = plan.source
    if source.kind == "marketplace":
        return f"{source.publisher}/{source.offer}/{source.sku}"
    if source.kind == "gallery_version":
        return source.image_version_id or ""
    return source.snapshot_source_id or plan.source_vm_id or ""


def staged_version_tags(
    plan: BuildPlan,
    build_id: str,
    version: str,
    manifest: Mapping[str, Any],
    display: str | None,
    built: datetime,
    requested_by: str | None = None,
) -> dict[str, str]:
    """The tags of a staged version: the standard ones (``naming.version_tags``, from the plan:
    the catalogue may have changed since the build started) and the build manifest's."""
    tags = version_tags(
        image=plan.image,
        owner=plan.owner,
        os_name=plan.os,
        workload=plan.workload,
        version=version,
        build_id=build_id,
        built=built,
        catalogue_hash=plan.catalogue_hash,
        base_image=base_image_of(plan),
        base_version=plan.base_version or plan.source.version,
        display=display,
        extra=plan.version_tags,
        requested_by=requested_by,
    )
    parsed = _manifest(manifest, plan, build_id, version)
    free = manifest_budget(len(tags))  # leaves room for the lifecycle's tags (lifecycle.py)
    if free < 1:
        raise PermanentError(f"no tags left for the build manifest ({len(tags)} standard tags)")
    tags.update(manifest_tags(parsed, max_parts=free))
    check_tags(tags)
    return tags


def _manifest(
    manifest: Mapping[str, Any], plan: BuildPlan, build_id: str, version: str
) -> BuildManifest:
    """The orchestrator's manifest dict, validated and checked against this version."""
    try:
        parsed = BuildManifest.from_dict(manifest)
    except InputError as error:
        raise InputError(
            [
                FieldError(f"manifest.{e.path}" if e.path else "manifest", e.reason)
                for e in error.errors
            ],
            "invalid build manifest",
        ) from None
    for field_name, expected, found in (
        ("image", plan.image, parsed.image),
        ("version", version, parsed.version),
        ("build_id", build_id, parsed.build_id),
    ):
        if found != expected:
            raise InputError.single(
                f"manifest.{field_name}", f"is {found!r}, but this version's is {expected!r}"
            )
    return parsed


# ---- resolving a plan -------------------------------------------------------------------


def _sysprep_vm_id(settings: Settings, image: CatalogueImage, names: BuildResourceNames) -> str:
    """The VM sysprep runs on: the build VM, or the capture VM built from a disk copy."""
    attach = image.build.capture_mode == "source-vm-clone" or image.source.kind == "snapshot"
    return compute.vm_id(
        settings, image.build.resource_group, names.clone_vm if attach else names.vm
    )


def _sysprep_signal(settings: Settings, build_id: str, vm_id: str, now: datetime) -> list[str]:
    """The sysprep script and how it says "finished" (only a hint: the build polls as well).

    With BUILD_VM_IDENTITY_ID and EVENTGRID_TOPIC_ENDPOINT: the VM takes a token for its
    identity from IMDS and publishes ImageFactory.SysprepFinished to the app's topic (Event
    Grid delivers it to the app). Otherwise, with SYSPREP_SIGNAL_URL: a plain POST there (no
    key: where it needs one it is refused, and the build notices the end by polling).
    Otherwise no signal.
    """
    event = sysprep_finished_event(build_id, vm_id, event_id=f"sysprep-{build_id}", event_time=now)
    if settings.build_vm_identity_id and settings.eventgrid_topic_endpoint:
        return list(
            sysprep_script(
                settings.eventgrid_topic_endpoint,
                [event],
                identity_id=settings.build_vm_identity_id,
            )
        )
    if not settings.sysprep_signal_url:
        return list(sysprep_script())
    return list(sysprep_script(settings.sysprep_signal_url, [event]))


def _marketplace(
    settings: Settings, image: CatalogueImage, request: BuildRequest
) -> tuple[PlanSource, str]:
    base = image.source.marketplace
    assert base is not None
    location = image.build.location
    urn = f"{base.publisher}/{base.offer}/{base.sku}"
    wanted = request.base_version
    if not base.follows_latest:
        if wanted is not None and wanted != base.version:
            raise ConflictError(
                f"image {image.name} is pinned to {urn} {base.version}; the request asks for "
                f"base version {wanted}"
            )
        wanted = base.version
    if wanted is None:
        version = compute.latest_marketplace_version(
            settings, location, base.publisher, base.offer, base.sku
        )
        if version is None:
            raise NotFoundError(f"marketplace image {urn} has no versions in {location}")
    else:
        listed = compute.marketplace_versions(
            settings, location, base.publisher, base.offer, base.sku
        )
        if wanted not in listed:
            raise NotFoundError(f"marketplace image {urn} has no version {wanted} in {location}")
        version = wanted
    source = PlanSource(
        kind="marketplace",
        publisher=base.publisher,
        offer=base.offer,
        sku=base.sku,
        version=version,
    )
    return source, version


def _gallery_version(
    settings: Settings, image: CatalogueImage, request: BuildRequest
) -> tuple[PlanSource, str]:
    ref = image.source.gallery_version
    assert ref is not None
    if ref.id is not None:
        version_id = ref.id
    else:
        if not (ref.gallery and ref.image and ref.version):
            raise InputError.single("source.gallery_version", "needs id or gallery/image/version")
        group = ref.resource_group or image.gallery.resource_group
        sub = ref.subscription_id or settings.subscription_id
        definition_id = resource_id(
            sub, group, "Microsoft.Compute/galleries/images", ref.gallery, ref.image
        )
        wanted = request.base_version or (None if ref.version == "latest" else ref.version)
        if wanted is None:
            found = gallery.list_image_versions(settings, group, ref.gallery, ref.image)
            usable = [
                v
                for v in found
                if (v.provisioning_state or "").lower() == "succeeded"
                and not v.exclude_from_latest
                and ImageVersion.try_parse(v.name) is not None
            ]
            if not usable:
                raise NotFoundError(
                    f"gallery image {ref.gallery}/{ref.image} has no latest version"
                )
            wanted = str(max(ImageVersion.parse(v.name) for v in usable))
        version_id = f"{definition_id}/versions/{wanted}"
    state = gallery.get_image_version(settings, version_id)
    if not state.exists:
        raise NotFoundError(f"gallery image version {version_id} does not exist")
    source = PlanSource(kind="gallery_version", image_version_id=state.id, version=state.name)
    return source, state.name


def _snapshot(settings: Settings, image: CatalogueImage) -> tuple[PlanSource, str | None]:
    ref = image.source.snapshot
    assert ref is not None
    if ref.snapshot_id is not None:
        return PlanSource(kind="snapshot", snapshot_source_id=ref.snapshot_id), None
    assert ref.session_host_vm_id is not None
    host = compute.get_vm(settings, ref.session_host_vm_id)
    if not host.exists or not host.os_disk_id:
        raise NotFoundError(f"session host {ref.session_host_vm_id} (or its OS disk) not found")
    return PlanSource(kind="snapshot", snapshot_source_id=host.os_disk_id), None


def resolve(settings: Settings, image_name: str, build_id: str, request: BuildRequest) -> BuildPlan:
    """The build plan for ``image_name``: catalogue entry + exact base version + names."""
    image = app_catalogue(settings).get(image_name)
    kind = image.source.kind
    base_version: str | None
    if kind == "marketplace":
        source, base_version = _marketplace(settings, image, request)
    elif kind == "gallery_version":
        source, base_version = _gallery_version(settings, image, request)
    else:
        source, base_version = _snapshot(settings, image)
    resource_names = build_resource_names(image.name, build_id)
    now = datetime.now(UTC)
    sysprep_vm = _sysprep_vm_id(settings, image, resource_names)
    g = image.gallery
    retention = image.retention
    return BuildPlan(
        image=image.name,
        os=image.os,
        workload=image.workload,
        owner=image.owner,
        catalogue_hash=catalogue_hash(image),
        resource_group=image.build.resource_group,
        location=image.build.location,
        vm_size=image.build.vm_size,
        subnet_id=image.build.subnet_id,
        capture_mode=image.build.capture_mode,
        source_vm_id=image.build.source_vm_id,
        source=source,
        gallery=PlanGallery(
            resource_group=g.resource_group,
            name=g.gallery_name,
            image_definition=g.image_definition,
            security_type=g.security_type,
            hyper_v_generation=g.hyper_v_generation,
            os_type="Windows",
            publisher=g.publisher,
            offer=g.offer,
            sku=g.sku,
            location=image.build.location,
            description=image.description,
        ),
        steps=[PlanStep(**step.to_dict()) for step in image.rendered_steps()],
        guardrail_script=list(pre_capture_script(include_health_check=False)),
        health_script=list(health_check_script()),
        sysprep_script=_sysprep_signal(settings, build_id, sysprep_vm, now),
        target_regions=[
            PlanRegion(
                name=r.name,
                replica_count=r.replica_count,
                storage_account_type=r.storage_account_type,
            )
            for r in image.target_regions
        ],
        timeout_minutes=image.build.timeout_minutes,
        sysprep_timeout_minutes=image.build.sysprep_timeout_minutes,
        poll_seconds=settings.poll_interval_seconds,
        safety_poll_seconds=settings.safety_poll_seconds,
        sysprep_signal=bool(
            settings.sysprep_signal_url
            or (settings.build_vm_identity_id and settings.eventgrid_topic_endpoint)
        ),
        min_free_disk_gb=image.build.min_free_disk_gb,
        end_of_life_days=(retention.end_of_life_days if retention else None) or 180,
        names=PlanNames(**resource_names.to_dict()),
        base_version=base_version,
        version_tags=dict(image.naming.tags),
        build_vm_identity_id=settings.build_vm_identity_id,
    )
