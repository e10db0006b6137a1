"""The per-image build queue: every accepted request reaches exactly one build, one at a time.

The queue of an image is a durable entity (``image_build_queue``, key: the image name): its
state changes one operation at a time, atomically, and survives anything, so no request can be
lost between two builds. A request is a small orchestration (``build_request``) whose instance
id is derived from (image, key), so a repeated request maps to the same instance:

1. it calls ``enqueue`` on the entity: the answer is ``accepted`` with a build id, ``duplicate``
   (the key is queued, running or already built) or ``refused`` (the key failed
   ``MAX_ATTEMPTS_PER_KEY`` times), and whether this request became the queue's *runner*;
2. the runner runs the queue: ``next`` hands it the next pending build (recording the outcome
   of the previous one in the same operation) or, when nothing is pending, releases the runner
   role, in one step; each build runs as the ``build_image`` sub-orchestration; the runner
   continues as new between builds, which is safe because it never waits for external events
   (entity answers belong to the execution that called).

A request that arrives while a runner exists is queued by ``enqueue`` itself; one that arrives
as the runner releases its role becomes the next runner. Build ids are the image plus the
entity's sequence (``win11-office-000042``): unique by construction. The HTTP API reads the
entity's state for ``GET /api/images/{image}/builds``.
"""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from orchestrators._flow import Flow, failure_text, now
from shared import names

bp = df.Blueprint()

MAX_ATTEMPTS_PER_KEY = 3
KEYS_KEPT = 500
RECENT_KEPT = 20

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REFUSED = "refused"
STAGED = "staged"
FAILED = "failed"


# -- the entity's state machine (pure: state and input in, new state and result out) ------------
def empty_state() -> dict[str, Any]:
    return {"seq": 0, "pending": [], "running": None, "runner": None, "keys": {}, "recent": []}


def _remember(state: dict[str, Any], entry: dict[str, Any]) -> None:
    state["recent"] = [*state["recent"], entry][-RECENT_KEPT:]


def _forget_old_keys(state: dict[str, Any]) -> None:
    """Keep at most KEYS_KEPT keys; the oldest finished ones go first (never a live one)."""
    keys: dict[str, Any] = state["keys"]
    excess = len(keys) - KEYS_KEPT
    for key in [k for k, v in keys.items() if v.get("status") in (STAGED, FAILED)][:excess]:
        del keys[key]


def enqueue(state: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """Accept, drop or refuse one request; the answer says whether the caller is the runner."""
    key = str(request["key"])
    at = request.get("at")
    keys: dict[str, Any] = state["keys"]
    known = keys.get(key)
    live = [item for item in (state["running"], *state["pending"]) if item and item["key"] == key]
    if live or (known is not None and known.get("status") == STAGED):
        build_id = live[0]["build_id"] if live else known.get("build_id") if known else None
        _remember(state, {"key": key, "dropped": "duplicate request", "at": at})
        return {"outcome": DUPLICATE, "build_id": build_id, "runner": False}
    attempts = int(known.get("attempts", 0)) if known else 0
    if attempts >= MAX_ATTEMPTS_PER_KEY:
        reason = f"failed {MAX_ATTEMPTS_PER_KEY} times: fix the cause, then use a new key"
        _remember(state, {"key": key, "dropped": reason, "at": at})
        return {"outcome": REFUSED, "reason": reason, "build_id": None, "runner": False}
    state["seq"] = int(state["seq"]) + 1
    build_id = names.sequenced_build_id(str(state["image"]), state["seq"])
    item = {"key": key, "build_id": build_id, "request": request.get("request") or {}, "at": at}
    state["pending"] = [*state["pending"], item]
    keys.pop(key, None)  # re-inserted last: the most recent keys are kept longest
    keys[key] = {"attempts": attempts, "status": "queued", "build_id": build_id}
    _forget_old_keys(state)
    runner = state["runner"] is None
    if runner:
        state["runner"] = request.get("requester")
    return {"outcome": ACCEPTED, "build_id": build_id, "runner": runner}


def _record(state: dict[str, Any], outcome: dict[str, Any], at: Any) -> None:
    """The running build ended with ``outcome``: its key's status, attempts and the log."""
    running = state["running"]
    state["running"] = None
    record = state["keys"].setdefault(running["key"], {"attempts": 0})
    record["status"] = outcome.get("status")
    record["build_id"] = running["build_id"]
    if outcome.get("status") == FAILED:
        record["attempts"] = int(record.get("attempts", 0)) + 1
    _remember(state, {"key": running["key"], **outcome, "at": at})


def next_build(state: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    """Record the runner's last outcome; hand it the next build, or release the runner role."""
    if state["runner"] != step.get("runner"):
        return {"build": None, "reason": f"the runner is {state['runner']}"}
    outcome = step.get("outcome")
    running = state["running"]
    if outcome and running and running["build_id"] == outcome.get("build_id"):
        _record(state, outcome, step.get("at"))
    elif running:
        return {"build": running}  # asked again without an outcome: the same build
    if not state["pending"]:
        state["runner"] = None
        return {"build": None}
    item = state["pending"][0]
    state["pending"] = state["pending"][1:]
    state["running"] = {**item, "started": step.get("at")}
    state["keys"].setdefault(item["key"], {"attempts": 0})["status"] = "running"
    return {"build": state["running"]}


def release(state: dict[str, Any], gone: dict[str, Any]) -> dict[str, Any]:
    """A runner that ended without releasing its role (terminated, failed): its running build
    counts as a failed attempt and the role is free for the next request."""
    if state["runner"] is None or state["runner"] != gone.get("runner"):
        return {"released": False}
    running = state["running"]
    if running:
        failed = {"build_id": running["build_id"], "status": FAILED, "error": "runner ended"}
        _record(state, failed, gone.get("at"))
    state["runner"] = None
    return {"released": True, "pending": len(state["pending"])}


def note_repeat(state: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """A request whose own orchestration still runs (the same key again): recorded, no change."""
    _remember(state, {"key": request.get("key"), "dropped": "duplicate request", "at": None})
    return {"noted": True}


_OPERATIONS = {"enqueue": enqueue, "next": next_build, "release": release, "repeat": note_repeat}


@bp.entity_trigger(context_name="context", entity_name=names.ENTITY_BUILD_QUEUE)
def image_build_queue(context: df.DurableEntityContext) -> None:
    """The queue of one image (key: the image name): enqueue, next, release, repeat."""
    state: dict[str, Any] = context.get_state(empty_state)
    state.setdefault("image", context.entity_key)
    operation = _OPERATIONS.get(str(context.operation_name))
    if operation is None:
        raise ValueError(f"unknown operation {context.operation_name!r} on the build queue")
    result = operation(state, context.get_input() or {})
    context.set_state(state)
    context.set_result(result)


# -- the request orchestration ----------------------------------------------------------------
@bp.orchestration_trigger(context_name="context", orchestration=names.ORCH_BUILD_REQUEST)
def build_request(context: df.DurableOrchestrationContext) -> Flow:
    """Enqueue one request; when it became the runner, run the image's queue until it is empty."""
    state: dict[str, Any] = context.get_input() or {}
    image = str(state["image"])
    key = str(state["key"])
    queue = df.EntityId(names.ENTITY_BUILD_QUEUE, image)
    answer: dict[str, Any] | None = state.get("answer")
    if answer is None:
        request = {
            "key": key,
            "request": state.get("request") or {},
            "requester": context.instance_id,
            "at": now(context).isoformat(),
        }
        answer = yield context.call_entity(queue, "enqueue", request)
        assert answer is not None
        context.set_custom_status({"image": image, "key": key, **answer})
        if not answer.get("runner"):
            return {"image": image, "key": key, **answer}
    step = {"runner": context.instance_id, "outcome": state.get("outcome")}
    given = yield context.call_entity(queue, "next", {**step, "at": now(context).isoformat()})
    build = (given or {}).get("build")
    if not build:
        return {"image": image, "key": key, **answer, "runner": "released"}
    build_id = str(build["build_id"])
    context.set_custom_status({"image": image, "key": key, **answer, "running": build_id})
    outcome: dict[str, Any] = {"build_id": build_id, "key": build["key"]}
    try:
        result = yield context.call_sub_orchestrator(
            names.ORCH_BUILD_IMAGE,
            {
                "image": image,
                "build_id": build_id,
                "request": {**(build.get("request") or {}), "key": build["key"]},
            },
            names.build_instance_id(build_id),
        )
        outcome.update(status=STAGED, version=(result or {}).get("version"))
    except Exception as exc:  # a failed build: its key may be requested again
        outcome.update(status=FAILED, error=failure_text(exc)[:500])
    context.continue_as_new({**state, "answer": answer, "outcome": outcome})
    return None
