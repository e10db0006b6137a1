"""Version lifecycle orchestrations: approve, activate, roll back, expire an approval.

Deterministic generators (time from the orchestration, waits as durable timers). Every state
change goes through the ``set_version_state`` activity and is then published as
``ImageFactory.ImageVersion<State>`` (docs/events.md).

- ``activate_version`` (instance ``activation:<image>``, one per image at a time): the approved
  version becomes active (included in ``latest`` in every region), then the previously active
  one becomes backup, then each served host pool's ``vmTemplate`` points at the exact version.
  Every step is idempotent and checks before it writes, so a host killed between the gallery
  update and the host pool update finishes the same way when it replays, and running the
  activation again converges on the same end state.
- ``roll_back`` (same instance id): the active version is marked ``rolled-back`` (out of
  ``latest`` first: a broken image must stop spreading), the backup (or a named backup or
  deprecated version) becomes active again, host pool templates follow. A broken current
  version (gone, failed, stuck) does not stop the rollback.
- ``decide_approval`` (``approval:<image>:<version>``): an approver's decision.
- ``approval_timeout`` (``approval-timeout:<image>:<version>``): after the catalogue's
  ``auto_approve_after_days`` the version is auto-approved, or after ``approval_timeout_days``
  without a decision it is rejected (expired).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from orchestrators._flow import Flow, RetryPolicy, StepFailedError, call, failure_text, now
from shared import names
from shared.domain.lifecycle import (
    APP_ACTOR,
    ROLLBACK_SOURCES,
    Action,
    allowed_actions,
    rollback_target,
)
from shared.domain.versions import VersionState

bp = df.Blueprint()

# A version is Updating for minutes after each PATCH; the next change waits for it.
LIFECYCLE_RETRY = RetryPolicy(
    max_attempts=14, first_interval=timedelta(seconds=15), max_interval=timedelta(minutes=2)
)
SETTLE_POLL = timedelta(seconds=30)
SETTLE_LIMIT = timedelta(hours=1)
_BUSY = frozenset({"creating", "updating", "deleting"})


def _set_state(
    context: Any,
    request: dict[str, Any],
    version: str,
    action: Action,
    *,
    actor: str | None = None,
    reason: str | None = None,
) -> Flow:
    """One transition (``set_version_state``) and its event; returns the activity's answer."""
    at = now(context).isoformat()
    change = {
        "image": request["image"],
        "version": version,
        "action": action.value,
        "actor": actor or request["actor"],
        "reason": reason if reason is not None else str(request.get("reason") or ""),
        "change_ticket": request.get("change_ticket"),
        "at": at,
    }
    result: dict[str, Any] = yield from record_transition(context, change)
    return result


def record_transition(context: Any, change: dict[str, Any]) -> Flow:
    """``set_version_state`` with ``change`` (the activity's contract), then its event
    ``ImageFactory.ImageVersion<State>``; every capability that moves a version uses this."""
    result: dict[str, Any] = yield from call(
        context, names.ACT_SET_VERSION_STATE, change, LIFECYCLE_RETRY
    )
    event = {
        "image": change["image"],
        "version": change["version"],
        "state": result["state"],
        "previous": result.get("previous"),
        "actor": change["actor"],
        "reason": change["reason"],
        "change_ticket": change.get("change_ticket"),
        "at": change["at"],
    }
    try:
        yield from call(context, names.ACT_PUBLISH_LIFECYCLE_EVENT, event)
    except Exception as error:  # the change stands; a lost notice must not undo it
        result = {**result, "event_error": failure_text(error)}
    return result


def _overview(context: Any, image: str) -> Flow:
    result: dict[str, Any] = yield from call(
        context, names.ACT_LIST_IMAGE_VERSIONS, {"image": image}
    )
    return result


def _read_host_pools(context: Any, host_pools: list[str]) -> Flow:
    """Each served host pool's id and vmTemplate, read before anything changes: a host pool
    that cannot be found stops the change before the gallery is touched."""
    pools: list[dict[str, Any]] = []
    for ref in host_pools:
        pool = yield from call(context, names.ACT_GET_HOST_POOL_TEMPLATE, {"host_pool": ref})
        pools.append(pool)
    return pools


def _point_host_pools(context: Any, pools: list[dict[str, Any]], version_id: str) -> Flow:
    """Each host pool's vmTemplate -> the exact version id (a write only where needed)."""
    done: list[dict[str, Any]] = []
    for pool in pools:
        changed = yield from call(
            context,
            names.ACT_SET_HOST_POOL_IMAGE,
            {
                "host_pool_id": pool["id"],
                "vm_template": pool.get("vm_template"),
                "version_id": version_id,
            },
        )
        done.append({"host_pool": pool["id"], "changed": changed.get("changed")})
    return done


def _settle(context: Any, image: str, touched: set[str]) -> Flow:
    """Wait (durable timers) until no touched version is still Updating, so that ``latest``
    resolves as the states say once the orchestration ends. Returns the final overview."""
    deadline = now(context) + SETTLE_LIMIT
    while True:
        overview: dict[str, Any] = yield from _overview(context, image)
        busy = [
            v["version"]
            for v in overview["versions"]
            if v["version"] in touched and (v.get("provisioning_state") or "").lower() in _BUSY
        ]
        if not busy or now(context) >= deadline:
            overview["still_updating"] = busy
            return overview
        yield context.create_timer(now(context) + SETTLE_POLL)


def _refused(image: str, version: str | None, state: str | None, reason: str) -> dict[str, Any]:
    allowed: list[str] = []
    if state:
        try:
            allowed = [a.value for a in allowed_actions(VersionState(state))]
        except ValueError:
            allowed = []
    return {
        "status": "refused",
        "image": image,
        "version": version,
        "state": state,
        "allowed_actions": allowed,
        "reason": reason,
    }


def _progress(context: Any, request: dict[str, Any], phase: str, **extra: Any) -> None:
    context.set_custom_status(
        {"image": request["image"], "phase": phase, "updated": now(context).isoformat(), **extra}
    )


@bp.orchestration_trigger(context_name="context", orchestration=names.ORCH_ACTIVATE_VERSION)
def activate_version(context: df.DurableOrchestrationContext) -> Flow:
    """Approved -> active; the active one -> backup; host pools -> the exact version."""
    request: dict[str, Any] = context.get_input() or {}
    image, version = request["image"], request["version"]
    _progress(context, request, "read", version=version)
    overview = yield from _overview(context, image)
    versions = {v["version"]: v for v in overview["versions"]}
    target = versions.get(version)
    if target is None:
        return _refused(image, version, None, f"image {image} has no version {version}")
    if target["state"] not in (VersionState.APPROVED, VersionState.ACTIVE):
        return _refused(
            image, version, target["state"], "only an approved version can be activated"
        )
    try:
        served = yield from _read_host_pools(context, overview["host_pools"])
    except StepFailedError as error:
        return _refused(image, version, target["state"], failure_text(error))
    touched = {version}
    _progress(context, request, "activate", version=version)
    if target["state"] == VersionState.APPROVED:
        yield from _set_state(context, request, version, Action.ACTIVATE)
    backups: list[str] = []
    for other in overview["versions"]:
        if other["state"] == VersionState.ACTIVE and other["version"] != version:
            _progress(context, request, "demote", version=version, demoting=other["version"])
            yield from _set_state(
                context,
                request,
                other["version"],
                Action.DEMOTE_TO_BACKUP,
                reason=f"replaced by {version}",
            )
            backups.append(other["version"])
            touched.add(other["version"])
    _progress(context, request, "host-pools", version=version)
    pools = yield from _point_host_pools(context, served, target["id"])
    _progress(context, request, "settle", version=version)
    final = yield from _settle(context, image, touched)
    return {
        "status": "active",
        "image": image,
        "version": version,
        "version_id": target["id"],
        "backups": backups,
        "host_pools": pools,
        "latest": final["latest"],
        "still_updating": final["still_updating"],
    }


@bp.orchestration_trigger(context_name="context", orchestration=names.ORCH_ROLL_BACK)
def roll_back(context: df.DurableOrchestrationContext) -> Flow:
    """Active -> rolled-back; a backup (or deprecated) version -> active; host pools follow."""
    request: dict[str, Any] = context.get_input() or {}
    image = request["image"]
    _progress(context, request, "read")
    overview = yield from _overview(context, image)
    found = rollback_target(overview["versions"], request.get("to_version"))
    target = dict(found) if found is not None else None
    if target is None:
        wanted = request.get("to_version")
        reason = (
            f"image {image} has no version {wanted}"
            if wanted
            else f"image {image} has no backup version to roll back to"
        )
        return _refused(image, wanted, None, reason)
    if target["state"] not in ROLLBACK_SOURCES | {VersionState.ACTIVE}:
        return _refused(
            image,
            target["version"],
            target["state"],
            "a rollback re-activates a backup or deprecated version",
        )
    version = target["version"]
    try:
        served = yield from _read_host_pools(context, overview["host_pools"])
    except StepFailedError as error:
        return _refused(image, version, target["state"], failure_text(error))
    touched = {version}
    rolled: list[dict[str, Any]] = []
    reason = str(request.get("reason") or "rollback")
    for current in overview["versions"]:
        if current["state"] != VersionState.ACTIVE or current["version"] == version:
            continue
        _progress(context, request, "roll-back", version=version, current=current["version"])
        entry: dict[str, Any] = {"version": current["version"]}
        try:
            yield from _set_state(context, request, current["version"], Action.ROLL_BACK)
            entry["state"] = VersionState.ROLLED_BACK.value
            touched.add(current["version"])
        except Exception as error:  # a broken current version must not block the way back
            entry["error"] = failure_text(error)
        rolled.append(entry)
    if target["state"] != VersionState.ACTIVE:
        _progress(context, request, "reactivate", version=version)
        yield from _set_state(
            context, request, version, Action.REACTIVATE, reason=f"rollback: {reason}"
        )
    _progress(context, request, "host-pools", version=version)
    pools = yield from _point_host_pools(context, served, target["id"])
    _progress(context, request, "settle", version=version)
    final = yield from _settle(context, image, touched)
    return {
        "status": "rolled-back",
        "image": image,
        "version": version,
        "version_id": target["id"],
        "rolled_back": rolled,
        "host_pools": pools,
        "latest": final["latest"],
        "still_updating": final["still_updating"],
    }


@bp.orchestration_trigger(context_name="context", orchestration=names.ORCH_DECIDE_APPROVAL)
def decide_approval(context: df.DurableOrchestrationContext) -> Flow:
    """An approver's decision on a validated version (approve or reject)."""
    request: dict[str, Any] = context.get_input() or {}
    action = Action.APPROVE if request["decision"] == "approve" else Action.REJECT
    try:
        result = yield from _set_state(
            context, request, request["version"], action, reason=request.get("comment") or ""
        )
    except StepFailedError as error:
        return _refused(request["image"], request["version"], None, failure_text(error))
    return {
        "status": "decided",
        "decision": request["decision"],
        "image": request["image"],
        "version": request["version"],
        "state": result["state"],
        "previous": result.get("previous"),
        "actor": request["actor"],
        "change_ticket": request.get("change_ticket"),
        "at": now(context).isoformat(),
    }


def _parse_time(text: str | None, fallback: datetime) -> datetime:
    if not text:
        return fallback
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return fallback
    return parsed if parsed.tzinfo else fallback


@bp.orchestration_trigger(context_name="context", orchestration=names.ORCH_APPROVAL_TIMEOUT)
def approval_timeout(context: df.DurableOrchestrationContext) -> Flow:
    """After the catalogue's deadline, a still-validated version is auto-approved or expires."""
    request: dict[str, Any] = context.get_input() or {}
    image, version = request["image"], request["version"]
    overview = yield from _overview(context, image)
    found = next((v for v in overview["versions"] if v["version"] == version), None)
    if found is None or found["state"] != VersionState.VALIDATED:
        return {"status": "decided", "state": found["state"] if found else None}
    policy = overview["lifecycle"]
    auto_days = policy.get("auto_approve_after_days")
    timeout_days = int(policy["approval_timeout_days"])
    validated_at = _parse_time(request.get("validated_at") or found.get("state_at"), now(context))
    days = int(auto_days) if auto_days else timeout_days
    context.set_custom_status({"image": image, "version": version, "waiting_days": days})
    yield context.create_timer(validated_at + timedelta(days=days))
    overview = yield from _overview(context, image)
    found = next((v for v in overview["versions"] if v["version"] == version), None)
    if found is None or found["state"] != VersionState.VALIDATED:
        return {"status": "decided", "state": found["state"] if found else None}
    request = {**request, "actor": APP_ACTOR, "change_ticket": None}
    if auto_days:
        action, reason = Action.AUTO_APPROVE, f"auto-approved after {days} days validated"
    else:
        action, reason = Action.EXPIRE_APPROVAL, f"no approval decision within {days} days"
    result = yield from _set_state(context, request, version, action, reason=reason)
    return {"status": "expired" if not auto_days else "auto-approved", **result}
