"""Image build: from a catalogue image and its base to a staged, replicated gallery version.

One instance builds one version of one catalogue image (the per-image queue in
``build_queue.py`` makes sure builds of the same image never overlap). Phases: plan, gallery
image definition, version allocation, build VM (from the marketplace, a gallery version or a
session-host snapshot; or a clone of an authoritative source VM), customisation run commands,
pre-capture guardrails (BitLocker off and kept off, free disk, pending reboot), sysprep with a
"finished" signal by event *or* by polling, deallocate + generalize, a staged gallery version
(``excludeFromLatest``), replication to every target region, and clean-up of every temporary
resource whatever the outcome. Every wait is a durable timer or an external event.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from orchestrators._flow import (
    Flow,
    RetryPolicy,
    StepFailedError,
    call,
    call_once,
    event_payload,
    failure_text,
    now,
    poll_delay,
    progress,
)
from orchestrators.wait import wait
from shared import names
from shared.domain.naming import (
    RUN_GUARD_BITLOCKER,
    RUN_GUARD_HEALTH,
    RUN_SYSPREP,
    step_run_command,
)
from shared.domain.steps import check_capture_readiness, parse_guest_health

bp = df.Blueprint()

STOPPED_POWER_STATES = {"PowerState/stopped", "PowerState/deallocated"}
MAX_VM_ATTEMPTS = 3
SIGNALLED_POLL = timedelta(seconds=5)
GALLERY_POLL = timedelta(seconds=60)
# Replication "can take a few hours" (Azure's words): time on top of the build's own deadline.
REPLICATION_ALLOWANCE = timedelta(hours=12)
GALLERY_RETRY = RetryPolicy(max_attempts=14, first_interval=timedelta(seconds=5), backoff=1.5)


class BuildContext:
    """What the build has learnt so far; lives only inside one orchestrator execution."""

    def __init__(self, context: Any, inputs: dict[str, Any]) -> None:
        self.context = context
        self.image: str = inputs["image"]
        self.build_id: str = inputs["build_id"]
        self.request: dict[str, Any] = inputs.get("request") or {}
        self.plan: dict[str, Any] = {}
        self.status: dict[str, Any] = {"image": self.image, "build_id": self.build_id}
        self.phase_started = now(context)
        self.phase = "plan"
        self.timings: dict[str, float] = {}
        self.steps: list[dict[str, Any]] = []
        self.interval = timedelta(seconds=10)
        # Event-first waits poll only this often (0: resource events off, poll every interval).
        self.safety = timedelta(0)
        self.deadline = now(context) + timedelta(hours=4)

    def enter(self, phase: str, percent: int, operation: str, **extra: Any) -> None:
        current = now(self.context)
        if phase != self.phase:
            spent = (current - self.phase_started).total_seconds()
            self.timings[self.phase] = self.timings.get(self.phase, 0.0) + spent
            self.phase, self.phase_started = phase, current
        progress(self.context, self.status, phase, percent, operation, **extra)

    def finish_timings(self) -> dict[str, float]:
        self.enter("done", 100, "")
        return dict(self.timings)

    def ids(self) -> dict[str, Any]:
        return {"plan": self.plan, "build_id": self.build_id}

    def until(
        self,
        activity: str,
        payload: dict[str, Any],
        verdict: str,
        what: str,
        *,
        interval: timedelta | None = None,
        deadline: datetime | None = None,
        args: dict[str, Any] | None = None,
        resource_id: str | None = None,
        event_kind: str | None = None,
    ) -> Flow:
        """Wait for an operation with this build's poll interval and deadline by default.

        With ``resource_id`` and ``event_kind`` the wait is event-first (Azure's resource event
        ends it, the safety poll backs it up) when the plan turned resource events on.
        """
        result: dict[str, Any] = yield from wait(
            self.context,
            activity,
            payload,
            verdict,
            interval=interval or self.interval,
            deadline=deadline or self.deadline,
            what=what,
            args=args,
            resource_id=resource_id,
            event_kind=event_kind,
            safety_interval=self.safety,
        )
        return result


def _create_vm(b: BuildContext, os_disk_id: str | None, what: str) -> Flow:
    """Create the build VM and wait until it runs; a failed provisioning is retried afresh."""
    payload: dict[str, Any] = {**b.ids()}
    if os_disk_id:
        payload["os_disk_id"] = os_disk_id
    last_error = ""
    for attempt in range(1, MAX_VM_ATTEMPTS + 1):
        created = yield from call(b.context, names.ACT_CREATE_BUILD_VM, payload)
        vm_id: str = created["vm_id"]
        state = yield from b.until(
            names.ACT_GET_VM_STATE,
            {"vm_id": vm_id},
            "vm_running",
            what,
            resource_id=vm_id,
            event_kind=names.WAIT_KIND_WRITE,
        )
        if state.get("provisioning_state") != "Failed":
            if state.get("security_type") == "TrustedLaunch":
                raise StepFailedError(
                    "the build VM runs Trusted Launch, which turns BitLocker on and breaks "
                    "sysprep: build images as 'Trusted Launch supported' instead"
                )
            return vm_id
        # Provisioning failed: remove the broken VM (its NIC and disk go with it), try again.
        last_error = str(state.get("error") or "Azure reported Failed without an error")
        b.status["vm_error"] = last_error[:1000]
        b.enter(b.phase, 15, f"VM provisioning failed (attempt {attempt}); recreating")
        yield from _delete_and_wait(b, vm_id, "the failed build VM")
    raise StepFailedError(
        f"{what}: VM provisioning failed {MAX_VM_ATTEMPTS} times; the last error: {last_error}"
    )


def _delete_and_wait(b: BuildContext, resource_id: str, what: str) -> Flow:
    """Start deleting a resource this build owns and wait until it is gone."""
    yield from call(
        b.context,
        names.ACT_DELETE_RESOURCE,
        {"resource_id": resource_id, "build_id": b.build_id},
    )
    yield from b.until(
        names.ACT_GET_RESOURCE_STATE,
        {"resource_id": resource_id},
        "gone",
        f"deleting {what}",
        deadline=now(b.context) + timedelta(hours=1),
        resource_id=resource_id,
        event_kind=names.WAIT_KIND_DELETE,
    )


def _snapshot_to_disk(b: BuildContext, source_disk_id: str) -> Flow:
    """Copy an OS disk: snapshot it, then a managed disk from the snapshot."""
    names_ = b.plan["names"]
    snap = yield from call(
        b.context,
        names.ACT_CREATE_SNAPSHOT,
        {**b.ids(), "source_disk_id": source_disk_id, "name": names_["snapshot"]},
    )
    yield from b.until(
        names.ACT_GET_RESOURCE_STATE,
        {"resource_id": snap["snapshot_id"], "operation_url": snap.get("operation_url")},
        "provisioned",
        "snapshot of the source OS disk",
        resource_id=snap["snapshot_id"],
        event_kind=names.WAIT_KIND_WRITE,
    )
    disk = yield from call(
        b.context,
        names.ACT_CREATE_DISK_FROM_SNAPSHOT,
        {**b.ids(), "snapshot_id": snap["snapshot_id"], "name": names_["clone_disk"]},
    )
    yield from b.until(
        names.ACT_GET_RESOURCE_STATE,
        {"resource_id": disk["disk_id"], "operation_url": disk.get("operation_url")},
        "provisioned",
        "disk from the snapshot",
        resource_id=disk["disk_id"],
        event_kind=names.WAIT_KIND_WRITE,
    )
    return disk["disk_id"]


def _run_detail(state: dict[str, Any]) -> str:
    """What a run command said (its error, then its output), the last 2,000 characters."""
    parts = (str(state.get(k) or "").strip() for k in ("error", "output"))
    return " | ".join(p for p in parts if p)[-2000:]


def _run_script(b: BuildContext, vm_id: str, name: str, script: list[str], what: str) -> Flow:
    """Run one script as a managed run command and wait for its end; failure carries output."""
    started = now(b.context)
    yield from call(
        b.context,
        names.ACT_START_RUN_COMMAND,
        {"vm_id": vm_id, "name": name, "script": script, "timeout_seconds": 5400},
    )
    state = yield from b.until(
        names.ACT_GET_RUN_COMMAND,
        {"vm_id": vm_id, "name": name},
        "run_finished",
        what,
        # A managed run command's PUT (asyncExecution false) ends when its script ends.
        resource_id=f"{vm_id}/runCommands/{name}",
        event_kind=names.WAIT_KIND_WRITE,
    )
    record = {
        "name": name,
        "state": state.get("state"),
        "exit_code": state.get("exit_code"),
        "started": started.isoformat(),
        "ended": now(b.context).isoformat(),
    }
    if state.get("state") != "Succeeded":
        raise StepFailedError(
            f"{what} ended {state.get('state')} (exit code {state.get('exit_code')}): "
            f"{_run_detail(state)}"
        )
    return state, record


def _customise(b: BuildContext, vm_id: str) -> Flow:
    steps: list[dict[str, Any]] = b.plan["steps"]
    for index, step in enumerate(steps, start=1):
        percent = 20 + int(25 * index / max(len(steps), 1))
        b.enter("customise", percent, f"run command {step['name']} ({index}/{len(steps)})")
        # On a long-lived source VM, names carry the build id: an unchanged step from an
        # earlier build must run again, not be taken for done.
        token = b.build_id if vm_id == b.plan.get("source_vm_id") else None
        _, record = yield from _run_script(
            b,
            vm_id,
            step_run_command(index, token),
            step["script"],
            f"customisation step '{step['name']}'",
        )
        record.update(
            run_command=record["name"],
            name=step["name"],
            kind=step.get("kind"),
            content_hash=step.get("content_hash"),
        )
        b.steps.append(record)


HEALTH_RECHECKS = 6
HEALTH_RECHECK_WAIT = timedelta(minutes=5)


def _guardrails(b: BuildContext, vm_id: str) -> Flow:
    """Turn BitLocker off and keep it off, then refuse to sysprep a VM that is not ready.

    ``Disable-BitLocker`` only starts decryption, so while the volume is still decrypting the
    health check is repeated on a durable timer; any other reason (no room on C:, a pending
    reboot, an unknown state) fails the build with the reasons, before sysprep can fail on it.
    """
    b.enter("guardrails", 48, "disable BitLocker and keep it off")
    yield from _run_script(
        b, vm_id, RUN_GUARD_BITLOCKER, b.plan["guardrail_script"], "pre-capture guardrails"
    )
    min_free = float(b.plan.get("min_free_disk_gb") or 10.0)
    check = 0
    while True:
        check += 1
        b.enter("guardrails", 52, f"check BitLocker, free disk and pending reboot ({check})")
        state, _ = yield from _run_script(
            b,
            vm_id,
            f"{RUN_GUARD_HEALTH}-{check}",
            b.plan["health_script"],
            "pre-capture health check",
        )
        output = str(state.get("output") or "")
        health = parse_guest_health(output)
        reasons = check_capture_readiness(health, min_free)
        if not reasons:
            return output
        decrypting = "progress" in (health.bitlocker_status or "").lower()
        if not decrypting or check >= HEALTH_RECHECKS:
            raise StepFailedError("not ready for capture: " + "; ".join(reasons))
        yield b.context.create_timer(now(b.context) + HEALTH_RECHECK_WAIT)


def _sysprep(b: BuildContext, vm_id: str) -> Flow:
    """Sysprep, then wait for the 'finished' signal by event or by polling, with a deadline.

    The event only says "look now": it must name this build's VM, and the build still checks
    that the run command did not fail and the VM is stopped before it deallocates, so a stray
    or forged event can never get a VM captured that was not generalized. A signal that never
    comes (the VM's post refused, no identity) costs only the poll interval. A poll failing for
    a temporary reason is a poll without news, retried until the sysprep deadline.
    """
    b.enter("sysprep", 58, "sysprep /generalize /oobe /shutdown")
    yield from call(
        b.context,
        names.ACT_START_RUN_COMMAND,
        {"vm_id": vm_id, "name": RUN_SYSPREP, "script": b.plan["sysprep_script"]},
    )
    finished = b.context.wait_for_external_event(names.EVT_SYSPREP_FINISHED)
    deadline = now(b.context) + timedelta(minutes=int(b.plan.get("sysprep_timeout_minutes", 90)))
    signalled = False
    failures = 0
    retry_after: float | None = None
    # With the signal on its way and event-first waits on, polling is only the safety net.
    unsignalled = b.safety if b.safety and b.plan.get("sysprep_signal") else b.interval
    while True:
        pause = poll_delay(SIGNALLED_POLL if signalled else unsignalled, failures, retry_after)
        if signalled:
            yield b.context.create_timer(min(now(b.context) + pause, deadline))
        else:
            timer = b.context.create_timer(min(now(b.context) + pause, deadline))
            winner = yield b.context.task_any([finished, timer])
            if winner == finished:
                if not timer.is_completed:
                    timer.cancel()
                data = event_payload(finished.result)
                if str(data.get("vm_id", "")).lower() == vm_id.lower():
                    signalled = True
                    b.status["sysprep_signal"] = "event"
                else:
                    b.status["ignored_signal"] = str(data.get("vm_id") or "no vm_id")[:200]
                    finished = b.context.wait_for_external_event(names.EVT_SYSPREP_FINISHED)
        run = yield from call_once(
            b.context, names.ACT_GET_RUN_COMMAND, {"vm_id": vm_id, "name": RUN_SYSPREP}
        )
        vm = yield from call_once(b.context, names.ACT_GET_VM_STATE, {"vm_id": vm_id})
        if run.ok and vm.ok:
            failures, retry_after = 0, None
            b.status.pop("poll_error", None)
            stopped = (vm.result or {}).get("power_state") in STOPPED_POWER_STATES
            run_state = run.result or {}
            if run_state.get("state") in {"Failed", "TimedOut", "Canceled"} and not stopped:
                raise StepFailedError(f"sysprep failed: {_run_detail(run_state)}")
            if stopped:
                b.status.setdefault("sysprep_signal", "poll")
                return
        else:
            failures += 1
            retry_after = max(run.retry_after or 0.0, vm.retry_after or 0.0) or None
            b.status["poll_error"] = str(run.error or vm.error)[:500]
        if now(b.context) >= deadline:
            last = f"; the last status poll failed: {run.error or vm.error}" if failures else ""
            raise StepFailedError(f"sysprep: the VM did not shut down before the deadline{last}")


def _replicate(b: BuildContext, version_poll: dict[str, Any]) -> Flow:
    regions = [r["name"] for r in b.plan["target_regions"]]
    b.enter("replicate", 80, f"replicate to {', '.join(regions)}")
    final: dict[str, Any] = yield from b.until(
        names.ACT_GET_IMAGE_VERSION,
        version_poll,
        "replicated",
        "replication to every target region",
        args={"regions": regions},
        interval=max(b.interval, GALLERY_POLL),
        deadline=b.deadline + REPLICATION_ALLOWANCE,
        # The version's create operation ends when every region has replicated.
        resource_id=version_poll["version_id"],
        event_kind=names.WAIT_KIND_WRITE,
    )
    b.status["regions"] = final.get("regions")
    return final


@bp.orchestration_trigger(context_name="context", orchestration=names.ORCH_BUILD_IMAGE)
def build_image(context: df.DurableOrchestrationContext) -> Flow:
    """Build one staged gallery version of one catalogue image."""
    b = BuildContext(context, context.get_input() or {})
    outcome: dict[str, Any] = {"image": b.image, "build_id": b.build_id}
    try:
        b.enter("plan", 2, "resolve the catalogue entry and the base image")
        b.plan = yield from call(
            context,
            names.ACT_RESOLVE_BUILD_PLAN,
            {"image": b.image, "build_id": b.build_id, "request": b.request},
        )
        b.interval = timedelta(seconds=int(b.plan.get("poll_seconds", 10)))
        b.safety = timedelta(seconds=int(b.plan.get("safety_poll_seconds") or 0))
        b.deadline = now(context) + timedelta(minutes=int(b.plan.get("timeout_minutes", 240)))
        b.status["base"] = b.plan["source"]

        b.enter("gallery", 4, "create or get the gallery image definition")
        # A new gallery and definition take minutes to provision: more patience than default.
        gallery = yield from call(
            context, names.ACT_ENSURE_GALLERY_IMAGE, {"plan": b.plan}, GALLERY_RETRY
        )
        allocated = yield from call(context, names.ACT_ALLOCATE_VERSION, b.ids())
        version: str = allocated["version"]
        b.status["version"] = version
        outcome["version"] = version

        b.enter("source", 6, "prepare the build VM")
        source_vm_id = str(b.plan.get("source_vm_id") or "")
        if b.plan["capture_mode"] == "source-vm-clone":
            # Seed 001: the source VM stays the authoritative, up-to-date image VM; capture
            # happens from a temporary clone of its OS disk.
            src = yield from call(context, names.ACT_GET_VM_STATE, {"vm_id": source_vm_id})
            if not src.get("exists") or not src.get("os_disk_id"):
                raise StepFailedError(f"the source VM {source_vm_id} does not exist")
            b.enter("customise", 20, "customise the authoritative source VM")
            yield from _customise(b, source_vm_id)
            b.enter("source", 46, "clone the source VM's OS disk")
            disk_id = yield from _snapshot_to_disk(b, src["os_disk_id"])
            vm_id = yield from _create_vm(b, disk_id, "temporary capture VM")
        elif b.plan["source"]["kind"] == "snapshot":
            b.enter("source", 8, "snapshot the session host's OS disk")
            disk_id = yield from _snapshot_to_disk(b, b.plan["source"]["snapshot_source_id"])
            vm_id = yield from _create_vm(b, disk_id, "build VM from a session-host copy")
            yield from _customise(b, vm_id)
        else:
            b.enter("source", 8, "create the build VM")
            vm_id = yield from _create_vm(b, None, "build VM")
            yield from _customise(b, vm_id)

        health = yield from _guardrails(b, vm_id)
        outcome["health"] = health
        yield from _sysprep(b, vm_id)
        outcome["sysprep_signal"] = b.status.get("sysprep_signal")

        b.enter("capture", 62, "deallocate the build VM")
        yield from call(context, names.ACT_DEALLOCATE_VM, {"vm_id": vm_id})
        yield from b.until(
            names.ACT_GET_VM_STATE,
            {"vm_id": vm_id},
            "deallocated",
            "deallocating the build VM",
            resource_id=vm_id,
            event_kind=names.WAIT_KIND_DEALLOCATE,
        )
        b.enter("capture", 65, "generalize the build VM")
        yield from call(context, names.ACT_GENERALIZE_VM, {"vm_id": vm_id})

        b.enter("version", 68, f"create staged gallery version {version}")
        manifest = {
            "image": b.image,
            "version": version,
            "build_id": b.build_id,
            "base": b.plan["source"],
            "catalogue_hash": b.plan["catalogue_hash"],
            "steps": b.steps,
            "tools": dict(parse_guest_health(health).apps),
            "phase_seconds": dict(b.timings),
        }
        created = yield from call(
            context,
            names.ACT_CREATE_IMAGE_VERSION,
            {
                **b.ids(),
                "version": version,
                "source_vm_id": vm_id,
                "manifest": manifest,
                # Built date, display-name month and end of life follow orchestration time.
                "built_at": now(context).isoformat(),
                "requested_by": b.request.get("requested_by"),
            },
        )
        version_id: str = created["version_id"]
        outcome["version_id"] = version_id
        # Polls carry the create operation's URL: a failed create reports Azure's own error.
        version_poll = {"version_id": version_id, "operation_url": created.get("operation_url")}
        yield from b.until(
            names.ACT_GET_IMAGE_VERSION,
            version_poll,
            "provisioned",
            "gallery version creation",
            # Gallery operations take tens of minutes; Azure itself asks for 60 s between polls.
            interval=max(b.interval, GALLERY_POLL),
            # The version stays Creating until every region replicated: same allowance.
            deadline=b.deadline + REPLICATION_ALLOWANCE,
            resource_id=version_id,
            event_kind=names.WAIT_KIND_WRITE,
        )
        final = yield from _replicate(b, version_poll)
        outcome["regions"] = final.get("regions")
        outcome["gallery"] = gallery
        outcome["status"] = "staged"
        outcome["manifest"] = manifest
    except Exception as error:
        outcome["status"] = "failed"
        outcome["error"] = failure_text(error)
        outcome["failed_phase"] = b.phase
        b.status["error"] = outcome["error"]
    if outcome["status"] == "failed" and outcome.get("version_id"):
        # A version from a failed build must never be activated later: delete it.
        b.enter("cleanup", 94, "delete the failed build's gallery version")
        try:
            yield from _delete_and_wait(b, str(outcome["version_id"]), "the failed version")
            outcome["version_deleted"] = True
        except Exception as error:
            outcome["cleanup_error"] = failure_text(error)
    # Clean-up runs in every outcome (termination is covered by the janitor, see cleanup.py).
    b.enter("cleanup", 96, "delete temporary resources")
    try:
        outcome["cleanup"] = yield context.call_sub_orchestrator(
            names.ORCH_CLEANUP_BUILD,
            {
                "resource_group": b.plan.get("resource_group"),
                "build_id": b.build_id,
                "image": b.image,
                "poll_seconds": int(b.interval.total_seconds()),
                "safety_poll_seconds": int(b.safety.total_seconds()),
            },
            f"{context.instance_id}:cleanup",
        )
    except Exception as error:  # what is left, the janitor finds by tag
        outcome["cleanup_error"] = failure_text(error)
    outcome["phase_seconds"] = b.finish_timings()
    if outcome["status"] == "staged":
        yield from call(
            context,
            names.ACT_PUBLISH_EVENT,
            {
                "event_type": names.EG_IMAGE_VERSION_STAGED,
                "event_id": f"staged-{b.build_id}",
                "subject": f"images/{b.image}/versions/{outcome['version']}",
                "data": {
                    "image": b.image,
                    "version": outcome["version"],
                    "version_id": outcome["version_id"],
                    "build_id": b.build_id,
                    # The lifecycle events' schema (docs/events.md): staged is the first state.
                    "state": "staged",
                    "previous": None,
                    "actor": b.request.get("requested_by") or "imagefactory",
                    "reason": b.request.get("reason") or "",
                    "change_ticket": None,
                    "at": now(context).isoformat(),
                },
            },
        )
        return outcome
    # The failure event carries the error as the build saw it (Azure's code and message).
    try:
        yield from call(
            context,
            names.ACT_PUBLISH_EVENT,
            {
                "event_type": names.EG_BUILD_FAILED,
                "event_id": f"failed-{b.build_id}",
                "subject": f"images/{b.image}/builds/{b.build_id}",
                "data": {
                    "image": b.image,
                    "build_id": b.build_id,
                    "version": outcome.get("version"),
                    "phase": outcome["failed_phase"],
                    "error": outcome["error"],
                },
            },
        )
    except Exception as error:  # the build's own failure is what counts
        outcome["event_error"] = failure_text(error)
    raise StepFailedError(f"build of {b.image} failed: {outcome['error']}")
