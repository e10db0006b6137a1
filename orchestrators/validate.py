"""Validation of a staged version on real session hosts (deterministic orchestration).

``validate_version`` (instance ``validation:<image>:<version>``) moves the version to
``validating``, creates the catalogue's number of validation session hosts from the version's
exact id in the image's test host pool, drains each as soon as it registers, waits until each
reports healthy, runs the catalogue's smoke checks as managed run commands, optionally opens the
hosts to the test group for a soak and watches their health, and ends with ``validated`` or
``failed`` (the failing check's output as the reason). The validation's session hosts, VMs,
NICs and disks are removed in every outcome, before the verdict is recorded. Waits are
sub-orchestrations (orchestrators/wait.py); the version's state changes through the
lifecycle's ``set_version_state`` activity (called by name). docs/validation.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df
from pydantic import TypeAdapter

from orchestrators._flow import Flow, StepFailedError, call, failure_text, now
from orchestrators.lifecycle import record_transition
from orchestrators.wait import wait
from shared import names
from shared.domain.validation import (
    SmokeCheck,
    check_label,
    check_run_command_name,
    check_script,
    evaluate_check,
)

bp = df.Blueprint()

APP_ACTOR = "imagefactory"
RUN_COMMAND_TIMEOUT = timedelta(minutes=15)
VM_CREATE_TIMEOUT = timedelta(minutes=45)
CLEANUP_TIMEOUT = timedelta(minutes=60)
VERSION_SETTLE_TIMEOUT = timedelta(minutes=60)
SOAK_TICKS = 12  # health looks per soak, whatever its length (keeps the history short)

_CHECKS: TypeAdapter[list[SmokeCheck]] = TypeAdapter(list[SmokeCheck])


@dataclass
class _Run:
    """One validation's working state (rebuilt identically on every replay)."""

    context: Any
    request: dict[str, Any]
    plan: dict[str, Any]
    status: dict[str, Any] = field(default_factory=dict)
    vm_ids: list[str] = field(default_factory=list)
    host_names: dict[str, str] = field(default_factory=dict)  # vm id -> session host name
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=int(self.plan.get("poll_seconds") or 15))

    @property
    def pool(self) -> str:
        return str(self.plan["host_pool_id"])

    def phase(self, phase: str, detail: str = "") -> None:
        self.status.update(phase=phase, detail=detail, updated=now(self.context).isoformat())
        self.context.set_custom_status(dict(self.status))


def _version_settled(run: _Run) -> Flow:
    """Wait until the gallery version is not being updated (a tag update of the previous
    transition may still run; Azure refuses VMs from, and writes to, an updating version)."""
    yield from wait(
        run.context,
        names.ACT_GET_RESOURCE_STATE,
        {"resource_id": run.plan["version_id"]},
        "provisioned",
        interval=run.interval,
        deadline=now(run.context) + VERSION_SETTLE_TIMEOUT,
        what=f"gallery version {run.plan['version']} settled",
    )


def _transition(run: _Run, action: str, reason: str) -> Flow:
    req = run.request
    yield from _version_settled(run)
    result = yield from record_transition(
        run.context,
        {
            "image": req["image"],
            "version": req["version"],
            "action": action,
            "actor": req.get("actor") or APP_ACTOR,
            "reason": reason[:250],
            "change_ticket": req.get("change_ticket"),
            "at": now(run.context).isoformat(),
        },
    )
    return result


def _create_hosts(run: _Run) -> Flow:
    plan = run.plan
    run.phase("create-hosts", f"{len(plan['vm_names'])} host(s) from {plan['version_id']}")
    yield from _version_settled(run)
    expires = now(run.context) + timedelta(minutes=int(plan["register_timeout_minutes"]) + 120)
    yield from call(
        run.context,
        names.ACT_ENSURE_REGISTRATION_TOKEN,
        {"host_pool_id": run.pool, "valid_until": expires.isoformat()},
    )
    for name in plan["vm_names"]:
        created = yield from call(
            run.context,
            names.ACT_CREATE_VALIDATION_HOST,
            {
                "image": plan["image"],
                "version": plan["version"],
                "version_id": plan["version_id"],
                "host_pool_id": run.pool,
                "resource_group": plan["resource_group"],
                "location": plan["location"],
                "name": name,
                "vm_size": plan["vm_size"],
                "security_type": plan["security_type"],
                "os_disk_type": plan["os_disk_type"],
                "subnet_id": plan["subnet_id"],
            },
        )
        run.vm_ids.append(str(created["vm_id"]))
    deadline = now(run.context) + VM_CREATE_TIMEOUT
    for vm_id in run.vm_ids:
        state = yield from wait(
            run.context,
            names.ACT_GET_VM_STATE,
            {"vm_id": vm_id},
            "vm_running",
            interval=run.interval,
            deadline=deadline,
            what=f"validation host VM {vm_id.rsplit('/', 1)[-1]} running",
        )
        if state.get("provisioning_state") == "Failed":
            raise StepFailedError(
                f"validation host VM {vm_id.rsplit('/', 1)[-1]} failed to provision: "
                f"{state.get('error') or 'no detail'}"
            )


def _register_and_drain(run: _Run) -> Flow:
    """Each host: registered (then drained at once), then healthy, by the registration deadline."""
    deadline = now(run.context) + timedelta(minutes=int(run.plan["register_timeout_minutes"]))
    for vm_id in run.vm_ids:
        short = vm_id.rsplit("/", 1)[-1]
        run.phase("register", f"waiting for {short} to register")
        host = yield from wait(
            run.context,
            names.ACT_GET_VALIDATION_HOST,
            {"host_pool_id": run.pool, "vm_id": vm_id},
            "flag",
            args={"key": "registered"},
            interval=run.interval,
            deadline=deadline,
            what=f"validation host {short} registering in the test host pool",
        )
        run.host_names[vm_id] = str(host["name"])
        yield from _drain(run, vm_id, allow=False)
    for vm_id in run.vm_ids:
        short = vm_id.rsplit("/", 1)[-1]
        run.phase("health", f"waiting for {short} to report healthy")
        yield from wait(
            run.context,
            names.ACT_GET_VALIDATION_HOST,
            {"host_pool_id": run.pool, "vm_id": vm_id},
            "flag",
            args={"key": "healthy"},
            interval=run.interval,
            deadline=deadline,
            what=f"validation host {short} healthy (status Available, health checks passed)",
        )


def _drain(run: _Run, vm_id: str, *, allow: bool) -> Flow:
    yield from call(
        run.context,
        names.ACT_SET_SESSION_HOST_DRAIN,
        {"host_pool_id": run.pool, "name": run.host_names[vm_id], "allow_new_session": allow},
    )


def _run_checks(run: _Run) -> Flow:
    checks = _CHECKS.validate_python(run.plan.get("checks") or [])
    for vm_id in run.vm_ids:
        short = vm_id.rsplit("/", 1)[-1]
        for index, check in enumerate(checks):
            label = check_label(check, index)
            run.phase("checks", f"{label} on {short}")
            name = check_run_command_name(index)
            yield from call(
                run.context,
                names.ACT_START_RUN_COMMAND,
                {
                    "vm_id": vm_id,
                    "name": name,
                    "script": list(check_script(check)),
                    "timeout_seconds": int(RUN_COMMAND_TIMEOUT.total_seconds()),
                },
            )
            finished = yield from wait(
                run.context,
                names.ACT_GET_RUN_COMMAND,
                {"vm_id": vm_id, "name": name},
                "run_finished",
                interval=run.interval,
                deadline=now(run.context) + RUN_COMMAND_TIMEOUT + run.interval,
                what=f"{label} on {short}",
            )
            result = evaluate_check(check, finished)
            run.results.append(
                {"host": short, "check": label, "passed": result.passed, "detail": result.detail}
            )
            if not result.passed:
                raise StepFailedError(f"smoke check {label} failed on {short}: {result.detail}")


def _soak(run: _Run) -> Flow:
    minutes = int(run.plan.get("soak_minutes") or 0)
    if minutes <= 0:
        return
    group = run.plan.get("test_group")
    if group:
        for vm_id in run.vm_ids:
            yield from _drain(run, vm_id, allow=True)
    end = now(run.context) + timedelta(minutes=minutes)
    tick = max(run.interval, timedelta(minutes=minutes) / SOAK_TICKS)
    while now(run.context) < end:
        run.phase("soak", f"open to {group or 'nobody (drained)'} until {end.isoformat()}")
        yield run.context.create_timer(min(now(run.context) + tick, end))
        for vm_id in run.vm_ids:
            state = yield from call(
                run.context,
                names.ACT_GET_VALIDATION_HOST,
                {"host_pool_id": run.pool, "vm_id": vm_id},
            )
            if not state.get("healthy"):
                problems = ", ".join(state.get("problems") or []) or "no longer registered"
                raise StepFailedError(
                    f"validation host {vm_id.rsplit('/', 1)[-1]} turned unhealthy during the "
                    f"soak: {problems}"
                )
    if group:
        for vm_id in run.vm_ids:
            yield from _drain(run, vm_id, allow=False)


def _delete_and_wait(run: _Run, ids: list[str], deadline: datetime) -> Flow:
    for resource_id in ids:
        yield from call(run.context, names.ACT_DELETE_RESOURCE, {"resource_id": resource_id})
    for resource_id in ids:
        yield from wait(
            run.context,
            names.ACT_GET_RESOURCE_STATE,
            {"resource_id": resource_id},
            "gone",
            interval=run.interval,
            deadline=deadline,
            what=f"{resource_id.rsplit('/', 1)[-1]} deleted",
        )


def _cleanup(run: _Run) -> Flow:
    """Session hosts first (a host whose VM is gone stays listed as Unavailable), then the VMs
    (NIC and OS disk go with them), then anything still tagged with the validation id."""
    run.phase("cleanup", "removing validation hosts")
    plan = run.plan
    deadline = now(run.context) + CLEANUP_TIMEOUT
    vm_ids = list(run.vm_ids)
    for vm_id in vm_ids:
        host = yield from call(
            run.context,
            names.ACT_GET_VALIDATION_HOST,
            {"host_pool_id": run.pool, "vm_id": vm_id},
        )
        if host.get("registered"):
            yield from call(
                run.context,
                names.ACT_DELETE_SESSION_HOST,
                {"host_pool_id": run.pool, "name": host["name"]},
            )
    listing = {"resource_group": plan["resource_group"], "validation_id": plan["validation_id"]}
    found = yield from call(run.context, names.ACT_LIST_VALIDATION_RESOURCES, listing)
    vms = [r["id"] for r in found["resources"] if r["type"].lower().endswith("virtualmachines")]
    yield from _delete_and_wait(run, sorted(set(vms) | set(vm_ids)), deadline)
    found = yield from call(run.context, names.ACT_LIST_VALIDATION_RESOURCES, listing)
    yield from _delete_and_wait(run, sorted(r["id"] for r in found["resources"]), deadline)
    final = yield from call(run.context, names.ACT_LIST_VALIDATION_RESOURCES, listing)
    return [r["id"] for r in final["resources"]]


@bp.orchestration_trigger(context_name="context", orchestration=names.ORCH_VALIDATE_VERSION)
def validate_version(context: df.DurableOrchestrationContext) -> Flow:
    """Validate one staged version; output: outcome, reason, per-check results, clean-up."""
    request: dict[str, Any] = context.get_input() or {}
    image, version = str(request["image"]), str(request["version"])
    plan = yield from call(
        context, names.ACT_RESOLVE_VALIDATION_PLAN, {"image": image, "version": version}
    )
    run = _Run(
        context,
        request,
        plan,
        status={"image": image, "version": version, "validation_id": plan["validation_id"]},
    )
    run.phase("start", "version -> validating")
    yield from _transition(run, "start_validation", request.get("reason") or "validation started")
    outcome: dict[str, Any] = {
        "image": image,
        "version": version,
        "version_id": plan["version_id"],
        "validation_id": plan["validation_id"],
        "host_pool_id": run.pool,
    }
    try:
        yield from _create_hosts(run)
        yield from _register_and_drain(run)
        yield from _run_checks(run)
        yield from _soak(run)
        outcome.update(outcome="validated", reason="every smoke check passed")
    except Exception as error:  # a failed step is the verdict; clean-up still runs
        outcome.update(
            outcome="failed", reason=failure_text(error).removeprefix("StepFailedError: ")
        )
    outcome["checks"] = run.results
    try:
        outcome["cleanup"] = {"left": (yield from _cleanup(run))}
    except Exception as error:  # what is left stays tagged with the validation id
        outcome["cleanup"] = {"error": failure_text(error)}
    action = "pass_validation" if outcome["outcome"] == "validated" else "fail_validation"
    run.phase("verdict", f"version -> {outcome['outcome']}")
    state = yield from _transition(run, action, str(outcome["reason"]))
    outcome["state"] = state.get("state") if isinstance(state, dict) else None
    run.phase("done", str(outcome["outcome"]))
    return outcome
