"""Build activities: one Azure call or query each, idempotent, never waiting for an operation.

Every activity takes one JSON object and returns one (contract: docs/build-activities.md),
validates its input with a small pydantic model (a bad field is an InputError naming it), reads
settings at call time and reaches Azure only through the gateways in ``shared.azure``. Creates
are create-or-get on deterministic names keyed by the build id (a retry or a replay never makes
a second resource); a ``create_*``/``start_*``/``deallocate_*`` starts the operation and returns,
a ``get_*`` checks it. Failures raise ``TemporaryError`` (the orchestrator retries) or
``PermanentError``/``InputError`` (the build fails); nothing is swallowed.
"""

from __future__ import annotations

import json
import logging
import secrets
import string
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import azure.durable_functions as df
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from activities import _plan
from activities._plan import BuildPlan
from activities._registry import registered
from shared import names
from shared.azure import compute, eventgrid, gallery
from shared.azure.errors import arm_reason
from shared.azure.models import (
    AttachSource,
    GallerySource,
    ImageDefinitionSpec,
    ImageVersionSpec,
    ImageVersionState,
    MarketplaceSource,
    ResourceState,
    TargetRegionSpec,
    VmSource,
    VmSpec,
)
from shared.domain.naming import BuildRole, build_resource_tags
from shared.domain.resources import TAG_BUILD_ID, TAG_IMAGE, ResourceId, tag_value
from shared.domain.versions import why_build_may_not_delete
from shared.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    PermanentError,
    TemporaryError,
    field_errors_from_pydantic,
)
from shared.settings import Settings, load_settings

bp = df.Blueprint()
log = logging.getLogger("imagefactory.activities.build")

M = TypeVar("M", bound=BaseModel)

ADMIN_USERNAME = "factoryadmin"
DEFAULT_RUN_COMMAND_TIMEOUT = 5400
_SPECIAL_CHARACTERS = "!@#%^*-_=+"


# ---- input handling ---------------------------------------------------------------------


class _Input(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


def parse(model: type[M], payload: object) -> M:
    """Validate an activity's input; InputError naming every bad field."""
    if isinstance(payload, str | bytes):
        try:
            payload = json.loads(payload)
        except ValueError:
            raise InputError.single("payload", "is not JSON", "invalid activity input") from None
    if not isinstance(payload, Mapping):
        raise InputError.single(
            "payload", f"must be a JSON object, got {type(payload).__name__}", "invalid input"
        )
    try:
        return model.model_validate(dict(payload))
    except ValidationError as error:
        raise InputError(
            field_errors_from_pydantic([dict(e) for e in error.errors()]),
            f"invalid input for {model.__name__}",
        ) from None


class PlanInput(_Input):
    plan: BuildPlan


class PlanBuildInput(_Input):
    plan: BuildPlan
    build_id: str = Field(min_length=1, max_length=64)


# ---- tags -------------------------------------------------------------------------------


def _resource_tags(plan: BuildPlan, build_id: str, role: BuildRole) -> dict[str, str]:
    """A temporary resource's tags: image, build id and role (clean-up finds it by them)."""
    return build_resource_tags(plan.image, build_id, role)


def _require_own(build_id: str, tags: Mapping[str, str], what: str) -> None:
    """An existing resource under this build's name is this build's only when its
    ``imagefactory:build-id`` tag says so (the factory tags everything it creates itself)."""
    found = tag_value(tags, TAG_BUILD_ID)
    if found is None:
        raise ConflictError(
            f"{what} already exists without an {TAG_BUILD_ID} tag: not created by build "
            f"{build_id}; it is left alone (rename or remove it)"
        )
    if found != build_id:
        raise ConflictError(f"{what} already exists and belongs to build {found}, not {build_id}")


def _registered(
    name: str,
) -> Callable[[Callable[[Any], dict[str, Any]]], Callable[[Any], dict[str, Any]]]:
    """Register an activity under ``name`` (with its trace span: activities/_registry.py)."""
    return registered(bp, name)


# ---- plan -------------------------------------------------------------------------------


class ResolveInput(_Input):
    image: str = Field(min_length=1)
    build_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]*$")
    request: _plan.BuildRequest = Field(default_factory=lambda: _plan.BuildRequest())


@_registered(names.ACT_RESOLVE_BUILD_PLAN)
def resolve_build_plan(payload: Any) -> dict[str, Any]:
    """The catalogue entry resolved against Azure (exact base version) into a build plan."""
    args = parse(ResolveInput, payload)
    settings = load_settings()
    plan = _plan.resolve(settings, args.image, args.build_id, args.request)
    return plan.model_dump(mode="json")


# ---- gallery ----------------------------------------------------------------------------


def _ready(kind: str, name: str, state: str | None) -> bool:
    """True when Succeeded; TemporaryError while creating; PermanentError when failed."""
    lowered = (state or "").lower()
    if lowered == "succeeded":
        return True
    if lowered == "failed":
        raise PermanentError(f"{kind} {name} is in provisioning state Failed")
    return False


@_registered(names.ACT_ENSURE_GALLERY_IMAGE)
def ensure_gallery_image(payload: Any) -> dict[str, Any]:
    """Create-or-get the gallery and the image definition; converges over retried calls.

    A missing gallery is created and, in the same call, its definition (ARM accepts the child
    once the parent exists, even while the parent is still being created; a refusal then is
    temporary). Until both are provisioned the call raises TemporaryError ("being created"), so
    the orchestrator's retry checks again after a durable timer. Never a second PUT of either.
    """
    plan = parse(PlanInput, payload).plan
    settings = load_settings()
    g = plan.gallery
    found = gallery.get_gallery(settings, g.resource_group, g.name)
    created: list[str] = []
    if not found.exists:
        gallery.begin_create_gallery(settings, g.resource_group, g.name, g.location, {})
        created.append(f"gallery {g.name}")
    gallery_ready = found.exists and _ready("gallery", g.name, found.provisioning_state)
    definition = gallery.get_image_definition(
        settings, g.resource_group, g.name, g.image_definition
    )
    if not definition.exists:
        try:
            gallery.begin_create_image_definition(settings, _definition_spec(plan))
        except (NotFoundError, ConflictError) as error:
            if gallery_ready:
                raise
            raise TemporaryError(
                f"gallery {g.name} is still being created; image definition "
                f"{g.image_definition} not ready: {arm_reason(error)}"
            ) from error
        created.append(f"image definition {g.name}/{g.image_definition}")
    else:
        _check_definition(plan, definition.security_type, definition.hyper_v_generation)
    if created:
        raise TemporaryError(f"creation started for {' and '.join(created)}; not ready yet")
    if not gallery_ready:
        raise TemporaryError(f"gallery {g.name} is {found.provisioning_state}; not ready yet")
    if not _ready("image definition", g.image_definition, definition.provisioning_state):
        raise TemporaryError(
            f"image definition {g.image_definition} is {definition.provisioning_state}; not ready"
        )
    return {"gallery_id": found.id, "image_definition_id": definition.id}


def _definition_spec(plan: BuildPlan) -> ImageDefinitionSpec:
    g = plan.gallery
    return ImageDefinitionSpec(
        resource_group=g.resource_group,
        gallery=g.name,
        name=g.image_definition,
        location=g.location,
        publisher=g.publisher,
        offer=g.offer,
        sku=g.sku,
        os_type=g.os_type,
        hyper_v_generation=g.hyper_v_generation,
        security_type=g.security_type,
        description=g.description,
        tags={TAG_IMAGE: plan.image},
    )


def _check_definition(plan: BuildPlan, security: str | None, generation: str | None) -> None:
    """An existing definition must match the catalogue (its properties cannot change)."""
    g = plan.gallery
    wanted_security = (g.security_type or "Standard").lower()
    if (security or "Standard").lower() != wanted_security:
        raise ConflictError(
            f"image definition {g.image_definition} has security type {security or 'Standard'}, "
            f"the catalogue asks for {g.security_type}"
        )
    if generation and generation.lower() != g.hyper_v_generation.lower():
        raise ConflictError(
            f"image definition {g.image_definition} is Hyper-V generation {generation}, "
            f"the catalogue asks for {g.hyper_v_generation}"
        )


# ---- versions ---------------------------------------------------------------------------


@_registered(names.ACT_ALLOCATE_VERSION)
def allocate_version(payload: Any) -> dict[str, Any]:
    """The next version for this build, recorded on the definition's tags (never reused)."""
    args = parse(PlanBuildInput, payload)
    settings = load_settings()
    version = _plan.allocate(settings, args.plan, args.build_id)
    return {"version": version}


# ---- build VM ---------------------------------------------------------------------------


class CreateVmInput(_Input):
    plan: BuildPlan
    build_id: str = Field(min_length=1, max_length=64)
    os_disk_id: str | None = None


def _admin_password() -> str:
    """A fresh random password meeting Azure's Windows rules; never logged or returned."""
    alphabet = string.ascii_letters + string.digits + _SPECIAL_CHARACTERS
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(24))
        if (
            any(c.islower() for c in candidate)
            and any(c.isupper() for c in candidate)
            and any(c.isdigit() for c in candidate)
            and any(c in _SPECIAL_CHARACTERS for c in candidate)
        ):
            return candidate


def _vm_source(plan: BuildPlan, os_disk_id: str | None) -> VmSource:
    if os_disk_id:
        ResourceId.parse(os_disk_id, "os_disk_id", compute.DISK_TYPE)
        return AttachSource(os_disk_id=os_disk_id)
    source = plan.source
    if source.kind == "marketplace":
        fields = {f: getattr(source, f) for f in ("publisher", "offer", "sku", "version")}
        missing = [f for f, value in fields.items() if not value]
        if missing:
            raise InputError.single(
                f"plan.source.{missing[0]}", "required for a marketplace source"
            )
        if str(fields["version"]).lower() == "latest":
            raise InputError.single("plan.source.version", "must be an exact version, not latest")
        return MarketplaceSource(
            str(fields["publisher"]),
            str(fields["offer"]),
            str(fields["sku"]),
            str(fields["version"]),
        )
    if source.kind == "gallery_version":
        if not source.image_version_id:
            raise InputError.single("plan.source.image_version_id", "required for this source")
        return GallerySource(source.image_version_id)
    raise InputError.single("os_disk_id", f"required when the plan's source is a {source.kind}")


@_registered(names.ACT_CREATE_BUILD_VM)
def create_build_vm(payload: Any) -> dict[str, Any]:
    """Create-or-get the build VM (Standard security; see docs/build-activities.md)."""
    args = parse(CreateVmInput, payload)
    plan = args.plan
    settings = load_settings()
    source = _vm_source(plan, args.os_disk_id)
    attach = isinstance(source, AttachSource)
    name = plan.names.clone_vm if attach else plan.names.vm
    nic = plan.names.clone_nic if attach else plan.names.nic
    vm_id = compute.vm_id(settings, plan.resource_group, name)
    existing = compute.get_vm(settings, vm_id)
    if existing.exists:
        _require_own(args.build_id, existing.tags, f"VM {name}")
        return {"vm_id": existing.id}
    spec = VmSpec(
        resource_group=plan.resource_group,
        name=name,
        location=plan.location,
        size=plan.vm_size,
        computer_name=plan.names.computer_name,
        nic_name=nic,
        subnet_id=plan.subnet_id,
        os_disk_name=plan.names.os_disk,
        source=source,
        tags=_resource_tags(plan, args.build_id, "capture-vm" if attach else "build-vm"),
        nic_tags=_resource_tags(plan, args.build_id, "nic"),
        admin_username=ADMIN_USERNAME,
        admin_password="" if attach else _admin_password(),
        os_disk_storage_type=plan.os_disk_storage_type,
        identity_id=plan.build_vm_identity_id,
    )
    created = compute.begin_create_vm(settings, spec)
    log.info("build %s: creating VM %s (%s)", args.build_id, name, source.kind)
    return {"vm_id": created}


class VmInput(_Input):
    vm_id: str = Field(min_length=1)


@_registered(names.ACT_GET_VM_STATE)
def get_vm_state(payload: Any) -> dict[str, Any]:
    args = parse(VmInput, payload)
    ResourceId.parse(args.vm_id, "vm_id", compute.VM_TYPE)
    state = compute.get_vm(load_settings(), args.vm_id)
    return {
        "exists": state.exists,
        "provisioning_state": state.provisioning_state,
        "power_state": state.power_state,
        "security_type": state.security_type,
        "os_disk_id": state.os_disk_id,
        "generalized": state.generalized,
        "error": state.error,
    }


@_registered(names.ACT_DEALLOCATE_VM)
def deallocate_vm(payload: Any) -> dict[str, Any]:
    """Start deallocating the VM (a repeat on a deallocated VM is harmless)."""
    args = parse(VmInput, payload)
    ResourceId.parse(args.vm_id, "vm_id", compute.VM_TYPE)
    compute.begin_deallocate_vm(load_settings(), args.vm_id)
    return {"started": True}


@_registered(names.ACT_GENERALIZE_VM)
def generalize_vm(payload: Any) -> dict[str, Any]:
    """Mark the sysprepped, deallocated VM generalized (skipped when it already is)."""
    args = parse(VmInput, payload)
    ResourceId.parse(args.vm_id, "vm_id", compute.VM_TYPE)
    settings = load_settings()
    state = compute.get_vm(settings, args.vm_id)
    if not state.exists:
        raise NotFoundError(f"VM {args.vm_id} does not exist")
    if not state.generalized:
        compute.generalize_vm(settings, args.vm_id)
    return {"generalized": True}


# ---- run commands -----------------------------------------------------------------------


class RunCommandInput(_Input):
    vm_id: str = Field(min_length=1)
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    script: list[str] = Field(min_length=1)
    timeout_seconds: int = Field(default=DEFAULT_RUN_COMMAND_TIMEOUT, ge=1, le=86400)


@_registered(names.ACT_START_RUN_COMMAND)
def start_run_command(payload: Any) -> dict[str, Any]:
    """Start a managed run command; an existing one with the same script is not re-run."""
    args = parse(RunCommandInput, payload)
    ResourceId.parse(args.vm_id, "vm_id", compute.VM_TYPE)
    settings = load_settings()
    existing = compute.get_run_command(settings, args.vm_id, args.name)
    if existing.exists and list(existing.script) == list(args.script):
        return {"run_command_id": existing.id}
    vm = compute.get_vm(settings, args.vm_id)
    if not vm.exists:
        raise NotFoundError(f"VM {args.vm_id} does not exist")
    run_id = compute.begin_run_command(
        settings, args.vm_id, args.name, args.script, args.timeout_seconds, vm.location or ""
    )
    return {"run_command_id": run_id}


class RunCommandRef(_Input):
    vm_id: str = Field(min_length=1)
    name: str = Field(min_length=1)


@_registered(names.ACT_GET_RUN_COMMAND)
def get_run_command(payload: Any) -> dict[str, Any]:
    args = parse(RunCommandRef, payload)
    ResourceId.parse(args.vm_id, "vm_id", compute.VM_TYPE)
    state = compute.get_run_command(load_settings(), args.vm_id, args.name)
    if not state.exists:
        raise NotFoundError(f"run command {args.name} does not exist on {args.vm_id}")
    return {
        "state": state.state,
        "exit_code": state.exit_code,
        "output": state.output,
        "error": state.error,
        "start_time": state.start_time.isoformat() if state.start_time else None,
        "end_time": state.end_time.isoformat() if state.end_time else None,
    }


# ---- disks and snapshots ----------------------------------------------------------------


class _CopyInput(_Input):
    plan: BuildPlan
    build_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=80)


class SnapshotInput(_CopyInput):
    source_disk_id: str = Field(min_length=1)


class DiskFromSnapshotInput(_CopyInput):
    snapshot_id: str = Field(min_length=1)


def _copy(
    args: _CopyInput, role: Literal["snapshot", "clone-disk"], source_id: str
) -> tuple[str, str | None]:
    """Create-or-get a snapshot of ``source_id`` or a disk copied from it.

    Returns its id and the create operation's status URL (None when it already existed).
    """
    settings = load_settings()
    plan = args.plan
    snapshot = role == "snapshot"
    make_id = compute.snapshot_id if snapshot else compute.disk_id
    copy_id = make_id(settings, plan.resource_group, args.name)
    existing = compute.get_resource_state(settings, copy_id)
    if existing.exists:
        _require_own(args.build_id, existing.tags, f"{role} {args.name}")
        return copy_id, None
    where = (settings, plan.resource_group, args.name, plan.location, source_id)
    tags = _resource_tags(plan, args.build_id, role)
    monitor = compute.OperationMonitor()
    if snapshot:
        compute.begin_create_snapshot(*where, tags, hook=monitor)
    else:
        compute.begin_create_disk_from_snapshot(
            *where, tags, storage_account_type=plan.os_disk_storage_type, hook=monitor
        )
    return copy_id, monitor.url


@_registered(names.ACT_CREATE_SNAPSHOT)
def create_snapshot(payload: Any) -> dict[str, Any]:
    """Create-or-get a full snapshot of an OS disk."""
    args = parse(SnapshotInput, payload)
    ResourceId.parse(args.source_disk_id, "source_disk_id")
    snapshot_id, operation_url = _copy(args, "snapshot", args.source_disk_id)
    return {"snapshot_id": snapshot_id, "operation_url": operation_url}


@_registered(names.ACT_CREATE_DISK_FROM_SNAPSHOT)
def create_disk_from_snapshot(payload: Any) -> dict[str, Any]:
    """Create-or-get a managed disk copied from a snapshot."""
    args = parse(DiskFromSnapshotInput, payload)
    ResourceId.parse(args.snapshot_id, "snapshot_id", compute.SNAPSHOT_TYPE)
    disk_id, operation_url = _copy(args, "clone-disk", args.snapshot_id)
    return {"disk_id": disk_id, "operation_url": operation_url}


class ResourceInput(_Input):
    resource_id: str = Field(min_length=1)
    operation_url: str | None = Field(default=None, max_length=2000)


def _is_gallery_version(resource_id: str) -> bool:
    return ResourceId.parse(resource_id, "resource_id").is_type(gallery.VERSION_TYPE)


@_registered(names.ACT_GET_RESOURCE_STATE)
def get_resource_state(payload: Any) -> dict[str, Any]:
    """Whether a VM, disk, snapshot, NIC or gallery version exists, and its provisioning."""
    args = parse(ResourceInput, payload)
    settings = load_settings()
    state: ResourceState | ImageVersionState
    if _is_gallery_version(args.resource_id):
        state = gallery.get_image_version(settings, args.resource_id)
    else:
        state = compute.get_resource_state(settings, args.resource_id)
    return {
        "exists": state.exists,
        "provisioning_state": state.provisioning_state,
        "error": state.error
        or _failure_detail(settings, state.provisioning_state, args.operation_url),
    }


# ---- image versions ---------------------------------------------------------------------


class CreateVersionInput(_Input):
    plan: BuildPlan
    build_id: str = Field(min_length=1, max_length=64)
    version: str = Field(pattern=r"^\d{1,10}\.\d{1,10}\.\d{1,10}$")
    source_vm_id: str = Field(min_length=1)
    manifest: dict[str, Any] = Field(default_factory=dict)
    display_name: str | None = Field(default=None, min_length=1, max_length=256)
    built_at: AwareDatetime | None = None
    requested_by: str | None = Field(default=None, max_length=200)


@_registered(names.ACT_CREATE_IMAGE_VERSION)
def create_image_version(payload: Any) -> dict[str, Any]:
    """Create-or-get the staged gallery version (excluded from latest, tagged, end of life)."""
    args = parse(CreateVersionInput, payload)
    ResourceId.parse(args.source_vm_id, "source_vm_id", compute.VM_TYPE)
    settings = load_settings()
    plan = args.plan
    g = plan.gallery
    version_id = gallery.image_version_id(
        settings, g.resource_group, g.name, g.image_definition, args.version
    )
    existing = gallery.get_image_version(settings, version_id)
    if existing.exists:
        _require_own(args.build_id, existing.tags, f"gallery version {args.version}")
        return {"version_id": existing.id}
    now = args.built_at or datetime.now(UTC)
    tags = _plan.staged_version_tags(
        plan, args.build_id, args.version, args.manifest, args.display_name, now, args.requested_by
    )
    spec = ImageVersionSpec(
        resource_group=g.resource_group,
        gallery=g.name,
        image_definition=g.image_definition,
        version=args.version,
        location=g.location,
        source_vm_id=args.source_vm_id,
        target_regions=tuple(
            TargetRegionSpec(r.name, r.replica_count, r.storage_account_type)
            for r in plan.target_regions
        ),
        end_of_life=now + timedelta(days=plan.end_of_life_days),
        tags=tags,
        replica_count=plan.replica_count,
        storage_account_type=plan.storage_account_type,
    )
    monitor = compute.OperationMonitor()
    version_id = gallery.begin_create_image_version(settings, spec, hook=monitor)
    # The operation's URL: where Azure keeps the error (code and message) if the create fails.
    return {"version_id": version_id, "operation_url": monitor.url}


class VersionInput(_Input):
    version_id: str = Field(min_length=1)
    operation_url: str | None = Field(default=None, max_length=2000)


def _failure_detail(settings: Settings, provisioning: str | None, url: str | None) -> str | None:
    """Azure's error for a failed operation (``Code: message``), read from its status URL."""
    if provisioning not in ("Failed", "Canceled") or not url:
        return None
    return compute.operation_error(settings, url)


@_registered(names.ACT_GET_IMAGE_VERSION)
def get_image_version(payload: Any) -> dict[str, Any]:
    """A version's provisioning and per-region replication; when the create failed, the
    operation's error in Azure's words."""
    args = parse(VersionInput, payload)
    settings = load_settings()
    state = gallery.get_image_version(settings, args.version_id)
    error = state.error or _failure_detail(settings, state.provisioning_state, args.operation_url)
    return {
        "exists": state.exists,
        "provisioning_state": state.provisioning_state,
        "regions": {name: r.to_dict() for name, r in state.regions.items()},
        "aggregated_state": state.aggregated_state,
        "error": error,
    }


# ---- clean-up ---------------------------------------------------------------------------


class ListResourcesInput(_Input):
    plan: BuildPlan | None = None
    resource_group: str | None = None
    build_id: str = Field(min_length=1, max_length=64)
    image: str | None = Field(default=None, min_length=1, max_length=64)


@_registered(names.ACT_LIST_BUILD_RESOURCES)
def list_build_resources(payload: Any) -> dict[str, Any]:
    """Every VM, disk, snapshot and NIC tagged with this build id, and the untagged NIC and OS
    disk Azure made for it, by their exact generated names (never a name prefix)."""
    args = parse(ListResourcesInput, payload)
    settings = load_settings()
    group = args.resource_group or (args.plan.resource_group if args.plan else None)
    group = group or settings.factory_resource_group
    image = args.image or (args.plan.image if args.plan else None)
    found = compute.build_resources(settings, group, args.build_id, image)
    return {"resources": [{"id": r.id, "type": r.type} for r in found]}


class DeleteInput(_Input):
    resource_id: str = Field(min_length=1)
    build_id: str | None = Field(default=None, min_length=1, max_length=64)


@_registered(names.ACT_DELETE_RESOURCE)
def delete_resource(payload: Any) -> dict[str, Any]:
    """Start deleting a build VM, disk, snapshot or NIC, or the gallery version this build
    staged (its tags must say so; anything else is refused with the reason)."""
    args = parse(DeleteInput, payload)
    settings = load_settings()
    if not _is_gallery_version(args.resource_id):
        return {"deleted": compute.begin_delete_resource(settings, args.resource_id)}
    version = gallery.get_image_version(settings, args.resource_id)
    if not version.exists:
        return {"deleted": False}
    refusal = why_build_may_not_delete(
        version.tags,
        args.build_id,
        blocked_before_end_of_life=version.block_deletion_before_end_of_life,
        end_of_life=version.end_of_life_date,
    )
    if refusal is not None:
        raise PermanentError(f"gallery version {version.id} is not deleted: {refusal}")
    deleted = gallery.begin_delete_image_version(settings, args.resource_id)
    log.info("build %s: deleting its staged gallery version %s", args.build_id, version.id)
    return {"deleted": deleted}


# ---- events -----------------------------------------------------------------------------


class PublishInput(_Input):
    event_type: str = Field(min_length=1, max_length=200)
    subject: str = Field(min_length=1, max_length=1000)
    data: dict[str, Any] = Field(default_factory=dict)
    event_id: str | None = None


@_registered(names.ACT_PUBLISH_EVENT)
def publish_event(payload: Any) -> dict[str, Any]:
    """Publish one custom event to the app's topic (``published: false`` without a topic)."""
    args = parse(PublishInput, payload)
    published = eventgrid.publish(
        load_settings(), args.event_type, args.subject, args.data, event_id=args.event_id
    )
    return {"published": published}
