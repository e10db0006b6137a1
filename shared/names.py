"""Function names shared by orchestrators, activities and triggers.

Orchestrators call activities and sub-orchestrators by these constants (they may not import
``activities``); the activities and triggers register under the same constants, so a rename is
one edit and a typo is an import error, not a runtime "unknown function".
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

# Orchestrators
ORCH_SAMPLE_FANOUT: Final = "sample_fanout"
ORCH_BUILD_IMAGE: Final = "build_image"
ORCH_CLEANUP_BUILD: Final = "cleanup_build"
ORCH_WAIT_FOR_OPERATION: Final = "wait_for_operation"
# Version lifecycle (docs/lifecycle.md)
ORCH_ACTIVATE_VERSION: Final = "activate_version"
ORCH_ROLL_BACK: Final = "roll_back"
ORCH_DECIDE_APPROVAL: Final = "decide_approval"
ORCH_APPROVAL_TIMEOUT: Final = "approval_timeout"
ORCH_RETENTION: Final = "retention_run"

ORCH_VALIDATE_VERSION: Final = "validate_version"
ORCH_PROMOTE_RINGS: Final = "promote_rings"

ORCH_BUILD_REQUEST: Final = "build_request"

# Durable entities
ENTITY_BUILD_QUEUE: Final = "image_build_queue"  # one per image (key: the image name)

# Activities: the sample
ACT_SAMPLE_WORK: Final = "sample_work"

# Activities: image build (one Azure call or query each; plain dicts in and out)
ACT_RESOLVE_BUILD_PLAN: Final = "resolve_build_plan"
ACT_ENSURE_GALLERY_IMAGE: Final = "ensure_gallery_image"
ACT_ALLOCATE_VERSION: Final = "allocate_version"
ACT_CREATE_BUILD_VM: Final = "create_build_vm"
ACT_GET_VM_STATE: Final = "get_vm_state"
ACT_START_RUN_COMMAND: Final = "start_run_command"
ACT_GET_RUN_COMMAND: Final = "get_run_command"
ACT_CREATE_SNAPSHOT: Final = "create_snapshot"
ACT_CREATE_DISK_FROM_SNAPSHOT: Final = "create_disk_from_snapshot"
ACT_GET_RESOURCE_STATE: Final = "get_resource_state"
ACT_DEALLOCATE_VM: Final = "deallocate_vm"
ACT_GENERALIZE_VM: Final = "generalize_vm"
ACT_CREATE_IMAGE_VERSION: Final = "create_image_version"
ACT_GET_IMAGE_VERSION: Final = "get_image_version"
ACT_LIST_BUILD_RESOURCES: Final = "list_build_resources"
ACT_DELETE_RESOURCE: Final = "delete_resource"
ACT_PUBLISH_EVENT: Final = "publish_event"

# Activities: version lifecycle (one Azure call each; contract in docs/lifecycle.md)
ACT_SET_VERSION_STATE: Final = "set_version_state"
ACT_LIST_IMAGE_VERSIONS: Final = "list_image_versions"
ACT_GET_HOST_POOL_TEMPLATE: Final = "get_host_pool_template"
ACT_SET_HOST_POOL_IMAGE: Final = "set_host_pool_image"
ACT_PUBLISH_LIFECYCLE_EVENT: Final = "publish_lifecycle_event"

# Activities: validation on real session hosts, and ring promotion
ACT_RESOLVE_VALIDATION_PLAN: Final = "resolve_validation_plan"
ACT_ENSURE_REGISTRATION_TOKEN: Final = "ensure_registration_token"  # noqa: S105 - a name
ACT_CREATE_VALIDATION_HOST: Final = "create_validation_host"
ACT_GET_VALIDATION_HOST: Final = "get_validation_host"
ACT_SET_SESSION_HOST_DRAIN: Final = "set_session_host_drain"
ACT_DELETE_SESSION_HOST: Final = "delete_session_host"
ACT_LIST_VALIDATION_RESOURCES: Final = "list_validation_resources"
ACT_RESOLVE_RING_PLAN: Final = "resolve_ring_plan"
ACT_SET_RING_HOST_POOL_IMAGE: Final = "set_ring_host_pool_image"
ACT_GET_RING_HEALTH: Final = "get_ring_health"
ACT_GET_CONNECTION_COUNTS: Final = "get_connection_counts"
ACT_GET_RING_CLAIM: Final = "get_ring_claim"
ACT_SET_RING_STATE: Final = "set_ring_state"

# External events raised to orchestrations
EVT_SYSPREP_FINISHED: Final = "SysprepFinished"
EVT_CANCEL: Final = "Cancel"
EVT_RING_RESUME: Final = "RingResume"
# An Azure resource event (ResourceWriteSuccess ...) about the resource a wait watches: a hint
# to look now (triggers/resource_events.py raises it; orchestrators/wait.py confirms by a GET).
EVT_RESOURCE_CHANGED: Final = "ResourceChanged"

# Custom Event Grid event types this app publishes or accepts
EG_MARKETPLACE_IMAGE_PUBLISHED: Final = "ImageFactory.MarketplaceImagePublished"
EG_SYSPREP_FINISHED: Final = "ImageFactory.SysprepFinished"
EG_IMAGE_VERSION_STAGED: Final = "ImageFactory.ImageVersionStaged"
# Every lifecycle transition: EG_IMAGE_VERSION_PREFIX + the state (lifecycle.event_type_of).
EG_IMAGE_VERSION_PREFIX: Final = "ImageFactory.ImageVersion"
EG_IMAGE_VERSION_VALIDATED: Final = "ImageFactory.ImageVersionValidated"
EG_BUILD_FAILED: Final = "ImageFactory.BuildFailed"
EG_RETENTION_COMPLETED: Final = "ImageFactory.RetentionCompleted"


# Orchestration instance ids (one place, so triggers, tools and orchestrators agree)
def build_instance_id(build_id: str) -> str:
    """One build: ``build:<build id>`` (its waits and clean-up are children of it)."""
    return f"build:{build_id}"


def janitor_instance_id(build_id: str) -> str:
    """The janitor's clean-up of a build that no longer runs."""
    return f"janitor:{build_id}"


def activation_instance_id(image: str) -> str:
    """Activations and rollbacks of one image, one at a time: ``activation:<image>``."""
    return f"activation:{image}"


def approval_instance_id(image: str, version: str) -> str:
    """The decision on one validated version: ``approval:<image>:<version>``."""
    return f"approval:{image}:{version}"


def approval_timer_instance_id(image: str, version: str) -> str:
    """The approval deadline of one validated version: ``approval-timeout:<image>:<version>``."""
    return f"approval-timeout:{image}:{version}"


# Activities: retention (docs/retention.md; one Azure call or query each)
ACT_RETENTION_POLICY: Final = "retention_policy"
ACT_LIST_RETENTION_VERSIONS: Final = "retention_list_versions"
ACT_LIST_HOST_POOL_USAGE: Final = "retention_host_pool_usage"
ACT_LIST_SESSION_HOST_USAGE: Final = "retention_session_host_usage"
ACT_LIST_VMS: Final = "retention_list_vms"
ACT_LIST_LEFTOVERS: Final = "retention_list_leftovers"
ACT_DEPRECATE_VERSION: Final = "retention_deprecate_version"
ACT_DELETE_VERSION: Final = "retention_delete_version"
ACT_DELETE_LEFTOVER: Final = "retention_delete_leftover"


def retention_instance_id(run_id: str) -> str:
    """One retention run: ``retention:<run id>`` (the timer's run id is its schedule time)."""
    return f"retention:{run_id}"


def validation_instance_id(image: str, version: str) -> str:
    """The validation of one version: ``validation:<image>:<version>``."""
    return f"validation:{image}:{version}"


def rings_instance_id(image: str, version: str) -> str:
    """The ring-by-ring promotion of one version: ``rings:<image>:<version>``."""
    return f"rings:{image}:{version}"


BUILD_REQUEST_PREFIX: Final = "build-request:"


def build_request_instance_id(image: str, key: str) -> str:
    """One build request: ``build-request:<image>:<16 hex of the key's SHA-256>``.

    Derived from (image, key) only, so a repeated request maps to the same instance and is
    idempotent; the key is hashed so any key fits Durable's 100-character instance ids.
    """
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return f"{BUILD_REQUEST_PREFIX}{image}:{digest}"


def sequenced_build_id(image: str, sequence: int) -> str:
    """A build id from the image's queue sequence: ``<image>-000042`` (unique by construction)."""
    if sequence < 1:
        raise ValueError(f"a build sequence starts at 1, got {sequence}")
    return f"{image}-{sequence:06d}"


# Waits for an Azure operation that resource events can end (docs/events.md, "Resource events").
# The kind of operation a resource event reports: ``write`` (create or update), ``delete``, or
# an action's name (``deallocate``, ``start`` ...), taken from the event's ``operationName``.
WAIT_KIND_WRITE: Final = "write"
WAIT_KIND_DELETE: Final = "delete"
WAIT_KIND_DEALLOCATE: Final = "deallocate"

_UNSAFE = re.compile(r"[^a-z0-9.-]+")


def resource_event_kind(event_type: str, operation_name: str) -> str | None:
    """The kind of a resource event: ``write``, ``delete``, an action's name, or None."""
    kind = event_type.rsplit(".", 1)[-1].lower()
    if kind.startswith("resourcewrite"):
        return WAIT_KIND_WRITE
    if kind.startswith("resourcedelete"):
        return WAIT_KIND_DELETE
    if kind.startswith("resourceaction"):
        parts = operation_name.strip("/").split("/")
        if len(parts) >= 3 and parts[-1].lower() == "action":
            return parts[-2].lower()
    return None


def resource_wait_instance_id(resource_id: str, kind: str) -> str:
    """The wait for ``kind`` on one resource: ``rwait:<kind>:<name>:<digest>``.

    A pure function of the resource id (case-insensitive, as ARM ids are) and the kind, so the
    resource-event trigger finds the waiting orchestration from the event alone, without any
    state of its own. At most one such wait runs at a time (a build waits for one operation on
    a resource at a time; a later wait of the same kind replaces the completed one). The digest
    keeps the id short and free of ``/``; the name is there for people reading the logs.
    """
    rid = resource_id.strip().rstrip("/").lower()
    digest = hashlib.sha256(rid.encode()).hexdigest()[:20]
    name = _UNSAFE.sub("-", rid.rsplit("/", 1)[-1])[:40].strip("-") or "resource"
    return f"rwait:{_UNSAFE.sub('-', kind.lower())[:24]}:{name}:{digest}"


# The HTTP API (triggers/_api.py, docs/api.md): remembered answers and callback notices
ORCH_API_ANSWER: Final = "api_answer"
ORCH_API_NOTIFY: Final = "api_notify"
ACT_DELIVER_CALLBACK: Final = "deliver_callback"
EVT_OPERATION_ENDED: Final = "OperationEnded"
NOTIFY_INSTANCE_PREFIX: Final = "notify:"


def api_answer_instance_id(digest: str) -> str:
    """The remembered answer to one ``Idempotency-Key`` of one principal: ``api-answer:<hash>``."""
    return f"api-answer:{digest}"


def notify_instance_id(operation_id: str) -> str:
    """The callback notice of one accepted request: ``notify:<operation id>``."""
    return f"{NOTIFY_INSTANCE_PREFIX}{operation_id}"
