"""Small orchestrations of the HTTP API: remembered answers and callback notices.

- ``api_answer`` (instance ``api-answer:<hash>``) holds the first answer to one principal's
  ``Idempotency-Key`` as its input and returns it: the durable store every app instance reads
  (triggers/_api.py), nothing to do at run time.
- ``api_notify`` (instance ``notify:<id>``) waits for ``OperationEnded`` (raised by the
  callback watcher, triggers/callbacks.py, when the operation it follows ended), then delivers
  the signed notice with ``deliver_callback``, retrying with back-off on durable timers (30 s
  doubling, capped at an hour) up to ``max_attempts``. It never touches the operation itself.
"""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from orchestrators._flow import Flow, event_payload, failure_text, now
from shared import names
from shared.domain.callbacks import retry_delay

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", orchestration=names.ORCH_API_ANSWER)
def api_answer(context: df.DurableOrchestrationContext) -> Any:
    """Keep the answer (the input is the record); return it."""
    return context.get_input()


@bp.orchestration_trigger(context_name="context", orchestration=names.ORCH_API_NOTIFY)
def api_notify(context: df.DurableOrchestrationContext) -> Flow:
    """Wait for the operation's end, then deliver its notice with retries."""
    spec: dict[str, Any] = context.get_input() or {}
    operation = spec.get("operation") or {}
    context.set_custom_status({"state": "waiting", "operation": operation})
    ended = yield context.wait_for_external_event(names.EVT_OPERATION_ENDED)
    outcome = event_payload(ended)
    notice = {
        "notice_id": spec.get("notice_id"),
        "event": "operation.ended",
        "operation": operation.get("name"),
        "kind": operation.get("kind"),
        "instance_id": outcome.get("instance_id") or operation.get("instance_id"),
        "image": operation.get("image"),
        "status": outcome.get("status"),
        "outcome": outcome.get("outcome"),
        "requested_by": spec.get("requested_by"),
        "ended_at": now(context).isoformat(),
    }
    max_attempts = int(spec.get("max_attempts") or 6)
    last: dict[str, Any] = {}
    for attempt in range(1, max_attempts + 1):
        context.set_custom_status(
            {"state": "delivering", "attempt": attempt, "operation": operation, "last": last}
        )
        try:
            last = yield context.call_activity(
                names.ACT_DELIVER_CALLBACK,
                {"url": spec.get("callback_url"), "notice": notice, "attempt": attempt},
            )
        except Exception as error:
            last = {"delivered": False, "error": failure_text(error)[:500]}
        if last.get("delivered"):
            context.set_custom_status({"state": "delivered", "attempt": attempt})
            return {"delivered": True, "attempts": attempt, "status": last.get("status")}
        if last.get("permanent") or attempt == max_attempts:
            break
        yield context.create_timer(now(context) + retry_delay(attempt))
    context.set_custom_status({"state": "undelivered", "last": last})
    return {"delivered": False, "attempts": attempt, "last": last}
