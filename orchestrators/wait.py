"""Waiting for a long Azure operation: one small sub-orchestration per wait.

A build waits for many operations (VM creation, run commands, deallocation, the gallery version,
replication to every region). Polling each of them inline would grow the build's history by a
few events every ten seconds, and the Durable SDK replays the whole history at every step, so a
multi-hour build would replay thousands of events hundreds of times. Each wait therefore runs as
its own sub-orchestration: its history holds only its own polls, the build's history one event
per wait. Verdicts are named (a sub-orchestration's input must be JSON) and pure.

A poll is not the operation: a poll that fails for a temporary reason (429, 503, a time-out)
is only a poll without news. The wait backs off (respecting Retry-After) and keeps polling until
its own deadline; only the deadline, a permanent error or the verdict ends it. A failed
operation's error (Azure's code and message) is carried word for word into the failure.

Event-first (docs/events.md, "Resource events"): a wait given the resource it watches and the
kind of operation (``write``, ``delete``, ``deallocate``) is named after them
(``shared.names.resource_wait_instance_id``), so ``on_resource_event`` can raise Azure's
resource event to it without any state; it then polls only every ``SAFETY_POLL_SECONDS`` in
case an event is late or lost. An event is a hint: the wait decides on its own GET.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from orchestrators._flow import (
    Flow,
    StepFailedError,
    Verdict,
    call_once,
    failure_text,
    now,
    poll_delay,
)
from shared import names

bp = df.Blueprint()

TERMINAL_RUN_STATES = {"Succeeded", "Failed", "TimedOut", "Canceled"}


def _failed_regions(state: dict[str, Any]) -> list[str]:
    per_region: dict[str, Any] = state.get("regions") or {}
    return [
        f"{region}" + (f" ({details})" if (details := (s or {}).get("details")) else "")
        for region, s in sorted(per_region.items())
        if (s or {}).get("state") == "Failed"
    ]


def _provisioned(state: dict[str, Any], args: dict[str, Any]) -> Verdict:
    provisioning = state.get("provisioning_state")
    if provisioning == "Failed":
        regions = _failed_regions(state)
        where = f"replication failed in {', '.join(regions)}" if regions else ""
        detail = "; ".join(x for x in (str(state.get("error") or ""), where) if x)
        # Azure said nothing more than "Failed" (no operation error, no region details).
        return f"provisioning failed: {detail or 'Azure reported Failed without an error'}"
    return bool(state.get("exists")) and provisioning == "Succeeded"


def _vm_running(state: dict[str, Any], args: dict[str, Any]) -> Verdict:
    # A failed VM is a verdict the caller handles (it recreates the VM), not a failure here.
    if state.get("provisioning_state") == "Failed":
        return True
    return (
        state.get("provisioning_state") == "Succeeded"
        and state.get("power_state") == "PowerState/running"
    )


def _gone(state: dict[str, Any], args: dict[str, Any]) -> Verdict:
    return not state.get("exists")


def _deallocated(state: dict[str, Any], args: dict[str, Any]) -> Verdict:
    return state.get("power_state") == "PowerState/deallocated"


def _run_finished(state: dict[str, Any], args: dict[str, Any]) -> Verdict:
    return state.get("state") in TERMINAL_RUN_STATES


def _replicated(state: dict[str, Any], args: dict[str, Any]) -> Verdict:
    per_region: dict[str, Any] = state.get("regions") or {}
    failed = _failed_regions(state)
    if failed:
        return f"replication failed in {', '.join(failed)}"
    wanted = [str(r) for r in args.get("regions") or per_region]
    return all((per_region.get(r) or {}).get("state") == "Completed" for r in wanted)


def _flag(state: dict[str, Any], args: dict[str, Any]) -> Verdict:
    # Done when the answer's field ``args["key"]`` is true (a session host registered, healthy).
    return bool(state.get(str(args.get("key"))))


VERDICTS: dict[str, Callable[[dict[str, Any], dict[str, Any]], Verdict]] = {
    "provisioned": _provisioned,
    "vm_running": _vm_running,
    "gone": _gone,
    "deallocated": _deallocated,
    "run_finished": _run_finished,
    "replicated": _replicated,
    "flag": _flag,
}


_CHILD_PREFIX = re.compile(
    r"^(?:Orchestrator function '[^']*' failed: |StepFailedError: |PermanentError: )+"
)


def _child_reason(text: str) -> str:
    """A failed wait's own words, without the SDK's and the error model's prefixes."""
    return _CHILD_PREFIX.sub("", text)


def wait(
    context: Any,
    activity: str,
    payload: dict[str, Any],
    verdict: str,
    *,
    interval: timedelta,
    deadline: datetime,
    what: str,
    args: dict[str, Any] | None = None,
    resource_id: str | None = None,
    event_kind: str | None = None,
    safety_interval: timedelta | None = None,
) -> Flow:
    """Wait (in a sub-orchestration) until ``verdict`` holds for ``activity``'s answer.

    Without ``resource_id``/``event_kind``/``safety_interval`` it polls every ``interval``.
    With all three (and a safety interval above zero) it is *event-first*: its instance id is
    :func:`shared.names.resource_wait_instance_id` of the resource and the kind of operation
    (``write``, ``delete``, an action name), so the resource-event trigger can raise Azure's
    event to it; the wait then polls only every ``safety_interval``, in case an event is late
    or lost, and re-reads the resource (one GET) whenever an event says "look now".
    """
    if verdict not in VERDICTS:
        raise StepFailedError(f"{what}: unknown verdict {verdict!r}")
    spec: dict[str, Any] = {
        "activity": activity,
        "payload": payload,
        "verdict": verdict,
        "args": args or {},
        "interval_seconds": max(1, int(interval.total_seconds())),
        "deadline": deadline.isoformat(),
        "what": what,
    }
    safety = int(safety_interval.total_seconds()) if safety_interval else 0
    if resource_id and event_kind and safety > 0:
        spec["safety_seconds"] = max(safety, spec["interval_seconds"])
        spec["resource_id"] = resource_id
        spec["event_kind"] = event_kind
        child = names.resource_wait_instance_id(resource_id, event_kind)
    else:
        child = f"{context.instance_id}:wait:{context.new_uuid()[:12]}"
    try:
        state: dict[str, Any] = yield context.call_sub_orchestrator(
            names.ORCH_WAIT_FOR_OPERATION, spec, child
        )
    except Exception as error:  # a failed child surfaces as a plain exception
        raise StepFailedError(_child_reason(failure_text(error))) from None
    return state


# Polls per execution before the wait continues as new: keeps every replay short.
POLLS_PER_EXECUTION = 20


@bp.orchestration_trigger(context_name="context", orchestration=names.ORCH_WAIT_FOR_OPERATION)
def wait_for_operation(context: df.DurableOrchestrationContext) -> Flow:
    """Check one activity until a named verdict holds; return the last state.

    Each round checks the state once (one activity call, one GET), then waits: for the poll
    interval, or, when the wait is event-first (``safety_seconds`` in its input), for whichever
    comes first of a ``ResourceChanged`` event and the slow safety poll. An event is only a
    hint: the next round's GET decides. A poll failing for a temporary reason is retried after
    a back-off (never shorter than Azure's Retry-After) until the wait's deadline; a permanent
    failure ends the wait. After ``POLLS_PER_EXECUTION`` rounds it continues as new (carrying
    the count of failed polls in a row), so a wait of hours never builds a long history.
    Events that arrive during the continue-as-new are dropped (as Azure's host does): the new
    execution starts with a GET, so nothing depends on them.
    """
    spec: dict[str, Any] = context.get_input() or {}
    check = VERDICTS[spec["verdict"]]
    args: dict[str, Any] = spec.get("args") or {}
    what = str(spec["what"])
    interval = timedelta(seconds=int(spec["interval_seconds"]))
    safety = int(spec.get("safety_seconds") or 0)
    deadline = datetime.fromisoformat(spec["deadline"])
    failures = int(spec.get("failures") or 0)
    hint: Any = None
    for _ in range(POLLS_PER_EXECUTION):
        polled = yield from call_once(context, spec["activity"], spec["payload"])
        current = now(context)
        if not polled.ok:
            failures += 1
            context.set_custom_status(
                {
                    "what": what,
                    "poll_error": str(polled.error)[:500],
                    "failed_polls": failures,
                    "at": current.isoformat(),
                }
            )
            if current >= deadline:
                raise StepFailedError(
                    f"{what}: not finished by the deadline {deadline.isoformat()}; the last "
                    f"{failures} status polls failed: {polled.error}"
                )
            # A failing poll backs off on a timer only: an event cannot make ARM answer sooner.
            delay = poll_delay(interval, failures, polled.retry_after)
            yield context.create_timer(min(current + delay, deadline))
            continue
        failures = 0
        state: dict[str, Any] = polled.result or {}
        # Progress only: guest output (which may hold anything a script printed) stays out.
        shown = {k: v for k, v in state.items() if k not in {"output", "error"}}
        context.set_custom_status({"what": what, "state": shown, "at": current.isoformat()})
        outcome = check(state, args)
        if outcome is True:
            return state
        if isinstance(outcome, str):
            raise StepFailedError(f"{what}: {outcome}")
        if current >= deadline:
            raise StepFailedError(f"{what}: not finished by the deadline {deadline.isoformat()}")
        if not safety:
            yield context.create_timer(min(current + interval, deadline))
            continue
        # Event-first: the event (a hint) or the safety poll, whichever comes first. An event
        # raised while the activity ran is kept by the host and completes this wait at once.
        if hint is None or hint.is_completed:
            hint = context.wait_for_external_event(names.EVT_RESOURCE_CHANGED)
        timer = context.create_timer(min(current + timedelta(seconds=safety), deadline))
        winner = yield context.task_any([hint, timer])
        if winner == hint and not timer.is_completed:
            timer.cancel()
    context.continue_as_new({**spec, "failures": failures})
    return None
