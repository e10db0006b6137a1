"""Timer: notice when operations with a pending callback ended, and hand them to their notifier.

Each accepted request that named a ``callback_url`` has an ``api_notify`` instance waiting for
``OperationEnded`` (orchestrators/api.py). Every minute this watcher lists the waiting ones (one
query by the ``notify:`` prefix; nothing else when there are none) and checks what each follows:
an orchestration instance (approval, activation, rollback: ended when it no longer runs) or a
build request (ended when the queue refused it or the build it was given ended). Then
it raises ``OperationEnded`` with the outcome; delivery and retries are the notifier's. The
operations themselves never wait for a callback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from shared import names
from triggers._common import RUNNING, runtime_status

bp = df.Blueprint()
log = logging.getLogger("imagefactory.triggers.callbacks")
MAX_OUTCOME_BYTES = 8192


def _small(value: Any) -> Any:
    """The outcome as sent in a notice: whole when small, else a note that it was cut."""
    text = json.dumps(value, default=str)
    return value if len(text) <= MAX_OUTCOME_BYTES else {"truncated": True, "bytes": len(text)}


async def outcome_of(client: Any, operation: dict[str, Any]) -> dict[str, Any] | None:
    """The operation's outcome once it ended; None while it runs (or waits in a queue)."""
    if operation.get("kind") == "build":
        return await _build_outcome(client, operation)
    instance_id = str(operation.get("instance_id") or "")
    status = await client.get_status(instance_id)
    ended = runtime_status(status)
    if ended in RUNNING:
        return None
    return {
        "status": ended or "Unknown",
        "instance_id": instance_id,
        "outcome": _small(getattr(status, "output", None)),
    }


async def _build_outcome(client: Any, operation: dict[str, Any]) -> dict[str, Any] | None:
    """A build request ends when the queue refused it or the build it got ended."""
    request = await client.get_status(str(operation.get("instance_id") or ""))
    if runtime_status(request) is None:
        return {"status": "Unknown", "outcome": "the build request is gone"}
    answer = getattr(request, "custom_status", None)
    answer = answer if isinstance(answer, dict) else {}
    if answer.get("outcome") == "refused":
        return {"status": "Refused", "outcome": _small(answer)}
    build_id = answer.get("build_id")
    if not build_id:
        return None  # not answered yet
    instance_id = names.build_instance_id(str(build_id))
    build = await client.get_status(instance_id)
    ended = runtime_status(build)
    if ended is None or ended in RUNNING:
        return None  # queued, or running
    return {
        "status": ended,
        "instance_id": instance_id,
        "outcome": _small(getattr(build, "output", None)),
    }


async def watch_once(client: Any) -> int:
    """Raise ``OperationEnded`` to every waiting notifier whose operation ended; how many."""
    waiting = await client.get_status_by(instance_id_prefix=names.NOTIFY_INSTANCE_PREFIX)
    raised = 0
    for notifier in waiting or []:
        if runtime_status(notifier) not in RUNNING:
            continue
        custom = getattr(notifier, "custom_status", None)
        if not isinstance(custom, dict) or custom.get("state") != "waiting":
            continue
        try:
            outcome = await outcome_of(client, dict(custom.get("operation") or {}))
            if outcome is not None:
                await client.raise_event(notifier.instance_id, names.EVT_OPERATION_ENDED, outcome)
                raised += 1
        except Exception as exc:  # one broken notifier never stops the others
            log.warning("callback watch of %s failed: %s", notifier.instance_id, exc)
    return raised


@bp.timer_trigger(schedule="0 * * * * *", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def callback_watch(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    """Every minute: hand ended operations to their callback notifiers."""
    raised = await watch_once(client)
    if raised:
        log.info("%d callback notice(s) released", raised)
