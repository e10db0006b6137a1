"""Function names shared by orchestrators, activities and triggers.

Orchestrators call activities and sub-orchestrators by these constants (they may not import
``activities``); the activities and triggers register under the same constants, so a rename is
one edit and a typo is an import error, not a runtime "unknown function".
"""

from __future__ import annotations

import hashlib
from typing import Final

# Orchestrators
ORCH_SAMPLE_FANOUT: Final = "sample_fanout"
ORCH_IMAGE_BUILD_QUEUE: Final = "image_build_queue"
ORCH_BUILD_IMAGE: Final = "build_image"
ORCH_CLEANUP_BUILD: Final = "cleanup_build"
ORCH_WAIT_FOR_OPERATION: Final = "wait_for_operation"
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

# External events raised to orchestrations
EVT_BUILD_REQUESTED: Final = "BuildRequested"
EVT_SYSPREP_FINISHED: Final = "SysprepFinished"
EVT_CANCEL: Final = "Cancel"

# Custom Event Grid event types this app publishes or accepts
EG_MARKETPLACE_IMAGE_PUBLISHED: Final = "ImageFactory.MarketplaceImagePublished"
EG_SYSPREP_FINISHED: Final = "ImageFactory.SysprepFinished"
EG_IMAGE_VERSION_STAGED: Final = "ImageFactory.ImageVersionStaged"


# Orchestration instance ids (one place, so triggers, tools and orchestrators agree)
def queue_instance_id(image: str) -> str:
    """The per-image build queue: ``image-builds:<image>``."""
    return f"image-builds:{image}"


def build_instance_id(build_id: str) -> str:
    """One build: ``build:<build id>`` (its waits and clean-up are children of it)."""
    return f"build:{build_id}"


def janitor_instance_id(build_id: str) -> str:
    """The janitor's clean-up of a build that no longer runs."""
    return f"janitor:{build_id}"


def build_request_instance_id(image: str, key: str) -> str:
    """One build request: ``build-request:<image>:<16 hex of the key's SHA-256>``.

    Derived from (image, key) only, so a repeated request maps to the same instance and is
    idempotent; the key is hashed so any key fits Durable's 100-character instance ids.
    """
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return f"build-request:{image}:{digest}"


def sequenced_build_id(image: str, sequence: int) -> str:
    """A build id from the image's queue sequence: ``<image>-000042`` (unique by construction)."""
    if sequence < 1:
        raise ValueError(f"a build sequence starts at 1, got {sequence}")
    return f"{image}-{sequence:06d}"
