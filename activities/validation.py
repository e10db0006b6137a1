"""Validation activities: one Azure call each, idempotent, plain dicts across the boundary.

Used by ``orchestrators/validate.py``: the validation plan (catalogue + the test host pool),
a registration token that outlives the wait, validation session host VMs created from the
staged version's exact id, their session hosts (read with health, drained, removed) and the
resources a validation left behind. Run commands, resource deletion and resource state reuse
the build's activities (activities/build.py). The one activity that makes two calls is
:func:`create_validation_host`: it reads the pool's registration token and sends the VM PUT in
the same step, so the token never enters an orchestration's history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import azure.durable_functions as df
from pydantic import AwareDatetime, Field

from activities.build import ADMIN_USERNAME, _admin_password, _Input, parse
from shared import names
from shared.app_catalogue import find_image
from shared.azure import compute, hosts
from shared.azure.gallery import image_version_id
from shared.domain.resources import tag_value
from shared.domain.validation import (
    TAG_VALIDATION_ID,
    host_health,
    validation_id,
    validation_tags,
    validation_token,
    validation_vm_name,
)
from shared.errors import ConflictError, NotFoundError
from shared.settings import load_settings

bp = df.Blueprint()
log = logging.getLogger("imagefactory.activities.validation")


Activity = Callable[[Any], dict[str, Any]]


def registrar(blueprint: df.Blueprint) -> Callable[[str], Callable[[Activity], Activity]]:
    """A decorator factory: register an activity of ``blueprint`` under a name (function name =
    activity name = the constant in shared/names.py)."""

    def registered(name: str) -> Callable[[Activity], Activity]:
        def wrap(fn: Activity) -> Activity:
            blueprint.function_name(name=name)(
                blueprint.activity_trigger(input_name="payload", activity=name)(fn)
            )
            return fn

        return wrap

    return registered


_registered = registrar(bp)

Version = Field(pattern=r"^\d{1,10}\.\d{1,10}\.\d{1,10}$")


class VersionInput(_Input):
    image: str = Field(min_length=1, max_length=64)
    version: str = Version


@_registered(names.ACT_RESOLVE_VALIDATION_PLAN)
def resolve_validation_plan(payload: Any) -> dict[str, Any]:
    """The validation of one version: hosts, checks, the test pool's template and location."""
    args = parse(VersionInput, payload)
    settings = load_settings()
    image = find_image(args.image, settings)
    if image.validation is None:
        raise NotFoundError(f"image {args.image!r} has no validation section in the catalogue")
    val = image.validation
    pool_id = val.host_pool.resource_id(settings.subscription_id)
    pool = hosts.get_host_pool(settings, pool_id)
    if not pool.exists:
        raise NotFoundError(f"the test host pool {pool_id} does not exist")
    template = hosts.template_settings(pool.vm_template)
    token = validation_token(args.image, args.version)
    return {
        "image": args.image,
        "version": args.version,
        "version_id": image_version_id(
            settings,
            image.gallery.resource_group,
            image.gallery.gallery_name,
            image.gallery.image_definition,
            args.version,
        ),
        "validation_id": validation_id(args.image, args.version),
        "host_pool_id": pool_id,
        "resource_group": val.host_pool.resource_group,
        "location": pool.location or image.build.location,
        "vm_size": val.vm_size or template.get("vm_size") or image.build.vm_size,
        "security_type": template.get("security_type", "TrustedLaunch"),
        "os_disk_type": template.get("os_disk_type", "Premium_LRS"),
        "subnet_id": template.get("subnet_id") or image.build.subnet_id,
        "vm_names": [validation_vm_name(token, n) for n in range(1, val.hosts + 1)],
        "soak_minutes": val.soak_minutes,
        "test_group": val.test_group,
        "register_timeout_minutes": val.register_timeout_minutes,
        "checks": [c.model_dump(mode="json") for c in val.checks],
        "poll_seconds": settings.poll_interval_seconds,
    }


class PoolInput(_Input):
    host_pool_id: str = Field(min_length=1)


class TokenInput(PoolInput):
    valid_until: AwareDatetime


@_registered(names.ACT_ENSURE_REGISTRATION_TOKEN)
def ensure_registration_token(payload: Any) -> dict[str, Any]:
    """Renew the pool's registration token unless it already outlives ``valid_until``.

    A token still valid long enough is kept: other work (a rollout) may be using it.
    """
    args = parse(TokenInput, payload)
    settings = load_settings()
    pool = hosts.get_host_pool(settings, args.host_pool_id)
    if not pool.exists:
        raise NotFoundError(f"host pool {args.host_pool_id} does not exist")
    if pool.token_expires is not None and pool.token_expires >= args.valid_until:
        return {"renewed": False, "expires": pool.token_expires.isoformat()}
    expires: datetime = args.valid_until
    hosts.renew_registration_token(settings, args.host_pool_id, expires)
    return {"renewed": True, "expires": expires.isoformat()}


class CreateHostInput(_Input):
    image: str = Field(min_length=1, max_length=64)
    version: str = Version
    version_id: str = Field(min_length=1)
    host_pool_id: str = Field(min_length=1)
    resource_group: str = Field(min_length=1)
    location: str = Field(min_length=1)
    name: str = Field(pattern=r"^vm-val-[0-9a-f]{6}-[1-9]$")
    vm_size: str = Field(min_length=1)
    security_type: str = "TrustedLaunch"
    os_disk_type: str = "Premium_LRS"
    subnet_id: str = Field(min_length=1)


@_registered(names.ACT_CREATE_VALIDATION_HOST)
def create_validation_host(payload: Any) -> dict[str, Any]:
    """Create-or-get a validation session host VM from the exact staged version."""
    args = parse(CreateHostInput, payload)
    settings = load_settings()
    vm_id = compute.vm_id(settings, args.resource_group, args.name)
    existing = compute.get_vm(settings, vm_id)
    wanted = validation_id(args.image, args.version)
    if existing.exists:
        found = tag_value(existing.tags, TAG_VALIDATION_ID)
        if found != wanted:
            raise ConflictError(
                f"VM {args.name} already exists and is not validation {wanted}'s "
                f"({TAG_VALIDATION_ID}={found!r}); it is left alone"
            )
        return {"vm_id": existing.id}
    spec = hosts.SessionHostVmSpec(
        pool_id=args.host_pool_id,
        resource_group=args.resource_group,
        name=args.name,
        location=args.location,
        image_version_id=args.version_id,
        subnet_id=args.subnet_id,
        admin_username=ADMIN_USERNAME,
        admin_password=_admin_password(),
        vm_size=args.vm_size,
        security_type=args.security_type,
        os_disk_type=args.os_disk_type,
        tags=validation_tags(args.image, args.version),
    )
    created = hosts.create_session_host_vm(settings, spec)
    log.info("validation %s: creating session host VM %s", wanted, args.name)
    return {"vm_id": created}


class HostInput(PoolInput):
    vm_id: str = Field(min_length=1)


def _host_of(host_pool_id: str, vm_id: str) -> hosts.SessionHostState | None:
    for host in hosts.list_session_hosts(load_settings(), host_pool_id):
        if host.vm_id.lower() == vm_id.lower():
            return host
    return None


@_registered(names.ACT_GET_VALIDATION_HOST)
def get_validation_host(payload: Any) -> dict[str, Any]:
    """The session host a VM became (if it registered): status, drain mode, health."""
    args = parse(HostInput, payload)
    host = _host_of(args.host_pool_id, args.vm_id)
    if host is None:
        return {"exists": False, "registered": False, "healthy": False}
    health = host_health(host.name, host.status, host.health_checks)
    return {
        "exists": True,
        "registered": True,
        "name": host.name,
        "status": host.status,
        "allow_new_session": host.allow_new_session,
        "healthy": health.healthy,
        "problems": list(health.problems),
    }


class DrainInput(PoolInput):
    name: str = Field(min_length=1, max_length=260)
    allow_new_session: bool


@_registered(names.ACT_SET_SESSION_HOST_DRAIN)
def set_session_host_drain(payload: Any) -> dict[str, Any]:
    """Drain mode off (``allow_new_session: true``) or on."""
    args = parse(DrainInput, payload)
    hosts.set_drain(load_settings(), args.host_pool_id, args.name, args.allow_new_session)
    return {"allow_new_session": args.allow_new_session}


class SessionHostRef(PoolInput):
    name: str = Field(min_length=1, max_length=260)


@_registered(names.ACT_DELETE_SESSION_HOST)
def delete_session_host(payload: Any) -> dict[str, Any]:
    """Remove a session host from its pool (a host already gone is success)."""
    args = parse(SessionHostRef, payload)
    return {"deleted": hosts.delete_session_host(load_settings(), args.host_pool_id, args.name)}


class ListInput(_Input):
    resource_group: str = Field(min_length=1)
    validation_id: str = Field(min_length=1, max_length=128)


@_registered(names.ACT_LIST_VALIDATION_RESOURCES)
def list_validation_resources(payload: Any) -> dict[str, Any]:
    """Every VM, NIC and disk tagged with this validation id in the pool's resource group."""
    args = parse(ListInput, payload)
    found = compute.list_group_resources(load_settings(), args.resource_group)
    mine = [
        {"id": r.id, "type": r.type}
        for r in found
        if tag_value(r.tags, TAG_VALIDATION_ID) == args.validation_id
    ]
    return {"resources": mine}
