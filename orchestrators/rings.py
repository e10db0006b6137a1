"""Ring-by-ring promotion of one version (deterministic orchestration).

``promote_rings`` (instance ``rings:<image>:<version>``) moves the same version through the
catalogue's rings in order (for example ``test -> pilot -> broad``). For each ring: wait while
an earlier version still soaks there (a later version never overtakes it unless the request
says ``force``; a later version already there stops this one), activate the version for the
ring through the lifecycle's ``set_version_state`` (action ``promote_ring``: an approved
version becomes active, an active one stays so), point every pool of
the ring at the exact version (``vmTemplate``; the pools' ring tags say which version soaks
there until when), soak, then judge the ring's health gate: session host health across the
ring's pools and the share of failed connections in the soak window. Pass: the next ring, at
once. Fail: the promotion holds (the pools' ring state ``held``, the output and custom status
say which ring and why) and ends; nothing further moves. docs/validation.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from orchestrators._flow import Flow, call, failure_text, now
from orchestrators.lifecycle import record_transition
from orchestrators.validate import APP_ACTOR
from shared import names
from shared.domain.validation import evaluate_gate, ring_blocker

bp = df.Blueprint()

MAX_WAIT_FOR_RING = timedelta(days=14)


def _status(context: Any, base: dict[str, Any], **values: Any) -> None:
    base.update(values, updated=now(context).isoformat())
    context.set_custom_status(dict(base))


def _wait_for_ring(
    context: Any, request: dict[str, Any], ring: dict[str, Any], status: dict[str, Any]
) -> Flow:
    """Until no earlier version soaks in the ring; a refusal text when it can never enter."""
    give_up = now(context) + MAX_WAIT_FOR_RING
    interval = timedelta(seconds=int(ring["poll_seconds"]))
    while True:
        blocker = None
        for pool_id in ring["host_pool_ids"]:
            claim = yield from call(context, names.ACT_GET_RING_CLAIM, {"host_pool_id": pool_id})
            blocker = ring_blocker(
                claim.get("tags") or {}, request["version"], force=bool(request.get("force"))
            )
            if blocker:
                break
        if blocker is None:
            return None
        if blocker.final or now(context) >= give_up:
            return blocker.reason
        _status(context, status, ring=ring["name"], phase="waiting", detail=blocker.reason)
        yield context.create_timer(now(context) + max(interval, timedelta(minutes=5)))


def _gate(context: Any, ring: dict[str, Any], since: datetime, until: datetime) -> Flow:
    unhealthy: list[str] = []
    connections = failed = 0
    available = True
    for pool_id in ring["host_pool_ids"]:
        health = yield from call(context, names.ACT_GET_RING_HEALTH, {"host_pool_id": pool_id})
        unhealthy += [str(u) for u in health.get("unhealthy") or []]
        counts = yield from call(
            context,
            names.ACT_GET_CONNECTION_COUNTS,
            {"host_pool_id": pool_id, "since": since.isoformat(), "until": until.isoformat()},
        )
        available = available and bool(counts.get("available"))
        connections += int(counts.get("connections") or 0)
        failed += int(counts.get("failed") or 0)
    gate = ring["gate"]
    verdict = evaluate_gate(
        max_unhealthy_hosts=int(gate["max_unhealthy_hosts"]),
        max_failed_connection_share=float(gate["max_failed_connection_share"]),
        unhealthy=unhealthy,
        connections=connections,
        failed_connections=failed,
    )
    return {
        "passed": verdict.passed,
        "reasons": list(verdict.reasons),
        "unhealthy_hosts": verdict.unhealthy_hosts,
        "connections": connections,
        "failed_connections": failed,
        "failed_connection_share": verdict.failed_connection_share,
        "connection_signal": "log-analytics" if available else "unavailable",
    }


def _mark(context: Any, ring: dict[str, Any], state: str) -> Flow:
    for pool_id in ring["host_pool_ids"]:
        yield from call(
            context, names.ACT_SET_RING_STATE, {"host_pool_id": pool_id, "state": state}
        )


@bp.orchestration_trigger(context_name="context", orchestration=names.ORCH_PROMOTE_RINGS)
def promote_rings(context: df.DurableOrchestrationContext) -> Flow:
    """Promote one version ring by ring; output: per-ring gate results, promoted or held."""
    request: dict[str, Any] = context.get_input() or {}
    image, version = str(request["image"]), str(request["version"])
    plan = yield from call(
        context, names.ACT_RESOLVE_RING_PLAN, {"image": image, "version": version}
    )
    status: dict[str, Any] = {"image": image, "version": version, "state": "promoting"}
    results: list[dict[str, Any]] = []
    output: dict[str, Any] = {"image": image, "version": version, "rings": results}
    for ring in plan["rings"]:
        ring = {**ring, "poll_seconds": plan["poll_seconds"]}
        blocker = yield from _wait_for_ring(context, request, ring, status)
        if blocker:
            output.update(status="held", ring=ring["name"], reason=blocker)
            _status(context, status, state="held", ring=ring["name"], detail=blocker)
            return output
        try:
            yield from record_transition(
                context,
                {
                    "image": image,
                    "version": version,
                    "action": "promote_ring",
                    "actor": request.get("actor") or APP_ACTOR,
                    "reason": f"ring {ring['name']}: {request.get('reason') or 'promotion'}"[:250],
                    "change_ticket": request.get("change_ticket"),
                    "at": now(context).isoformat(),
                },
            )
        except Exception as error:  # refused by the lifecycle: hold, say why
            reason = f"activation refused: {failure_text(error)}"
            output.update(status="held", ring=ring["name"], reason=reason)
            _status(context, status, state="held", ring=ring["name"], detail=reason)
            return output
        start = now(context)
        soak_until = start + timedelta(minutes=int(ring["soak_minutes"]))
        for pool_id in ring["host_pool_ids"]:
            yield from call(
                context,
                names.ACT_SET_RING_HOST_POOL_IMAGE,
                {
                    "host_pool_id": pool_id,
                    "version_id": plan["version_id"],
                    "version": version,
                    "ring": ring["name"],
                    "soak_until": soak_until.isoformat(),
                },
            )
        _status(context, status, ring=ring["name"], phase="soaking", until=soak_until.isoformat())
        if soak_until > start:
            yield context.create_timer(soak_until)
        gate = yield from _gate(context, ring, start, now(context))
        results.append(
            {
                "ring": ring["name"],
                "started": start.isoformat(),
                "ended": now(context).isoformat(),
                **gate,
            }
        )
        if not gate["passed"]:
            yield from _mark(context, ring, "held")
            reason = "; ".join(gate["reasons"])
            output.update(status="held", ring=ring["name"], reason=f"health gate failed: {reason}")
            _status(context, status, state="held", ring=ring["name"], detail=output["reason"])
            return output
        yield from _mark(context, ring, "passed")
        _status(context, status, ring=ring["name"], phase="passed")
    output.update(status="promoted", ring=plan["rings"][-1]["name"])
    _status(context, status, state="promoted", ring=output["ring"], detail="every ring passed")
    return output
