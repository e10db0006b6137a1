"""The per-image build queue: builds of one image run one at a time, each request once.

One long-lived instance per catalogue image (instance id ``image-builds:<image>``). Requests
arrive as ``BuildRequested`` external events carrying an idempotency key (the marketplace
version for automatic rebuilds, a client key for manual ones). A key seen before is dropped,
so the same event delivered twice starts one build; a request arriving while a build runs
waits its turn. A key whose build failed may come again (the hourly watch re-announces the
marketplace version) and is retried, at most three times. After each build the queue
continues as new, carrying only the pending requests and the most recent keys, so its
history stays small forever.
"""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from orchestrators._flow import Flow, event_payload, failure_text, now
from shared import names

bp = df.Blueprint()

KEYS_KEPT = 200
MAX_ATTEMPTS_PER_KEY = 3


@bp.orchestration_trigger(context_name="context", orchestration=names.ORCH_IMAGE_BUILD_QUEUE)
def image_build_queue(context: df.DurableOrchestrationContext) -> Flow:
    """Run the image's queued build requests one at a time, dropping repeats."""
    state: dict[str, Any] = context.get_input() or {}
    image: str = state["image"]
    seen: list[str] = list(state.get("seen") or [])
    pending: list[dict[str, Any]] = list(state.get("pending") or [])
    history: list[dict[str, Any]] = list(state.get("history") or [])[-20:]
    failures: dict[str, int] = dict(state.get("failures") or {})

    def drop(key: str, reason: str) -> None:
        history.append({"key": key, "dropped": reason, "at": now(context).isoformat()})

    def accept(request: dict[str, Any]) -> None:
        key = str(request.get("key") or "")
        if key and (key in seen or any(p.get("key") == key for p in pending)):
            drop(key, "duplicate request")
        elif key and failures.get(key, 0) >= MAX_ATTEMPTS_PER_KEY:
            drop(key, f"failed {MAX_ATTEMPTS_PER_KEY} times: fix the cause, then use a new key")
        else:
            pending.append(request)

    def carry() -> dict[str, Any]:
        kept = dict(list(failures.items())[-KEYS_KEPT:])
        return {
            "image": image,
            "seen": seen,
            "pending": pending,
            "history": history,
            "failures": kept,
        }

    def show(current: dict[str, Any] | None) -> None:
        context.set_custom_status(
            {
                "image": image,
                "running": current,
                "queued": [p.get("key") for p in pending],
                "recent": history[-5:],
            }
        )

    if not pending:
        show(None)
        request = yield context.wait_for_external_event(names.EVT_BUILD_REQUESTED)
        accept(event_payload(request))
    if not pending:
        context.continue_as_new(carry())
        return None

    request = pending.pop(0)
    key = str(request.get("key") or context.new_uuid())
    build_id = f"{image}-{context.new_uuid()[:8]}"
    seen = [*seen, key][-KEYS_KEPT:]
    show({"key": key, "build_id": build_id})
    build = context.call_sub_orchestrator(
        names.ORCH_BUILD_IMAGE,
        {"image": image, "build_id": build_id, "request": {**request, "key": key}},
        names.build_instance_id(build_id),
    )
    # Keep taking requests while the build runs: they queue, duplicates are dropped.
    while True:
        arrival = context.wait_for_external_event(names.EVT_BUILD_REQUESTED)
        winner = yield context.task_any([build, arrival])
        if winner == build:
            break
        accept(event_payload(arrival.result))
        show({"key": key, "build_id": build_id})
    entry: dict[str, Any] = {"key": key, "build_id": build_id, "at": now(context).isoformat()}
    result = build.result
    if isinstance(result, BaseException):  # a failed build: its task holds the exception
        entry.update(status="failed", error=failure_text(result)[:500])
        # The same request may be tried again (the hourly watch re-announces the marketplace
        # version), up to MAX_ATTEMPTS_PER_KEY times.
        failures[key] = failures.get(key, 0) + 1
        seen = [k for k in seen if k != key]
    else:
        entry.update(status="staged", version=(result or {}).get("version"))
    history.append(entry)
    context.continue_as_new(carry())
    return None
