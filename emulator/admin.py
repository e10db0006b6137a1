"""The admin API under ``/_emulator/...``: never ARM, no api-version, no token.

Routes (JSON unless noted; errors use ARM's error shape):

- ``GET  /_emulator/health``                  -> ``{"status": "ok", "now"}``
- ``POST /_emulator/scenario``                -> load a scenario (YAML or JSON body); 400 lists
  each bad field's dotted path
- ``GET  /_emulator/clock``                   -> ``{"now", "virtual", "pending": [...]}``
- ``POST /_emulator/clock/advance``           -> ``{"seconds": N}`` or ``{"by": "5m"}``
  (virtual clocks owned here only)
- ``GET|POST /_emulator/eventSubscriptions``, ``DELETE /_emulator/eventSubscriptions/{name}``
- ``GET /_emulator/events``                   -> published events (``?type=`` filter) and
  delivery records
- ``GET|POST|DELETE /_emulator/faults``, ``DELETE /_emulator/faults/{id}``
- ``GET|PUT /_emulator/throttling``           -> bucket settings (PUT replaces them)
- ``GET /_emulator/state``                    -> every resource (``?type=`` filter)
- ``GET /_emulator/metrics``                  -> requests per operation, statuses, 429s served
- ``GET /_emulator/report``                   -> invariants report (orphans + module sections)
- ``GET /_emulator/latency``                  -> effective latency table
- ``PUT /_emulator/builds/{buildId}``         -> ``{"state": "running"|"ended"}`` (ownership)
- ``GET /_emulator/builds``
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import yaml
from pydantic import ValidationError

from emulator.arm import ArmError, Request, Response
from emulator.core import Emulator
from emulator.events import iso
from emulator.latency import parse_duration
from emulator.scenario import ScenarioError, parse_scenario_text
from emulator.throttle import ThrottleSettings


def _validation_error(e: ValidationError) -> ArmError:
    details = [
        {
            "code": "InvalidField",
            "target": ".".join(str(p) for p in err["loc"]),
            "message": err["msg"],
        }
        for err in e.errors()
    ]
    lines = "; ".join(f"{d['target']}: {d['message']}" for d in details)
    return ArmError(400, "InvalidRequestContent", lines, details=details)


def _body_object(req: Request) -> dict[str, Any]:
    if isinstance(req.body, dict):
        return req.body
    if req.raw_body.strip():
        try:
            data = yaml.safe_load(req.raw_body)
        except yaml.YAMLError as e:
            raise ArmError(400, "InvalidRequestContent", f"Body is not JSON/YAML: {e}") from None
        if isinstance(data, dict):
            return data
    raise ArmError(400, "InvalidRequestContent", "The body must be a JSON object.")


def register(emu: Emulator) -> None:
    @emu.admin_route("GET", "/_emulator/health")
    def health(req: Request) -> Response:
        return Response(200, {"status": "ok", "now": emu.now_iso(), "url": emu.base_url})

    @emu.admin_route("POST", "/_emulator/scenario")
    def load(req: Request) -> Response:
        try:
            scenario = parse_scenario_text(req.raw_body or b"{}", "scenario")
            emu.load_scenario(scenario)
        except ScenarioError as e:
            details = [{"code": "InvalidField", "target": p, "message": m} for p, m in e.errors]
            raise ArmError(400, "InvalidScenario", str(e), details=details) from None
        return Response(200, {"name": scenario.name, "seed": scenario.seed})

    @emu.admin_route("GET", "/_emulator/clock")
    def clock(req: Request) -> Response:
        return Response(
            200, {"now": emu.now_iso(), "virtual": emu.clock.virtual, "pending": emu.pending()}
        )

    @emu.admin_route("POST", "/_emulator/clock/advance")
    def advance(req: Request) -> Response:
        advance_fn = getattr(emu.clock, "advance", None)
        if not emu.clock.virtual or advance_fn is None:
            raise ArmError(
                409,
                "ClockNotAdvanceable",
                "Only a virtual clock owned by this process can be advanced here.",
            )
        body = _body_object(req)
        raw = body.get("by", body.get("seconds"))
        if raw is None:
            raise ArmError(400, "InvalidRequestContent", "Give 'seconds' or 'by' (e.g. '5m').")
        try:
            delta: timedelta = parse_duration(raw)
        except ValueError as e:
            raise ArmError(400, "InvalidRequestContent", f"by: {e}") from None
        advance_fn(delta)
        emu.participant.notify()
        return Response(200, {"now": emu.now_iso()})

    @emu.admin_route("GET", "/_emulator/eventSubscriptions")
    def list_subs(req: Request) -> Response:
        return Response(200, {"value": emu.events.subscriptions()})

    @emu.admin_route("POST", "/_emulator/eventSubscriptions")
    def add_sub(req: Request) -> Response:
        from emulator.events import EventSubscriptionSpec

        try:
            spec = EventSubscriptionSpec.model_validate(_body_object(req))
        except ValidationError as e:
            raise _validation_error(e) from None
        emu.events.subscribe(spec)
        return Response(201, spec.model_dump(by_alias=True))

    @emu.admin_route("DELETE", "/_emulator/eventSubscriptions/{name}")
    def del_sub(req: Request) -> Response:
        if not emu.events.unsubscribe(req.params["name"]):
            raise ArmError(404, "NotFound", f"No event subscription {req.params['name']!r}.")
        return Response(204)

    @emu.admin_route("GET", "/_emulator/events")
    def events(req: Request) -> Response:
        wanted = req.query.get("type")
        return Response(
            200,
            {
                "value": [e.to_eventgrid() for e in emu.events.events(wanted)],
                "deliveries": [vars(d) for d in emu.events.deliveries],
                "deadLetters": [vars(d) for d in emu.events.dead_letters],
                "stats": vars(emu.events.stats),
            },
        )

    @emu.admin_route("GET", "/_emulator/faults")
    def list_faults(req: Request) -> Response:
        return Response(200, {"value": emu.faults.rules()})

    @emu.admin_route("POST", "/_emulator/faults")
    def add_fault(req: Request) -> Response:
        from emulator.faults import FaultRule

        try:
            rule = FaultRule.model_validate(_body_object(req))
            rid = emu.faults.add(rule)
        except ValidationError as e:
            raise _validation_error(e) from None
        except ValueError as e:
            raise ArmError(400, "InvalidRequestContent", str(e)) from None
        return Response(201, {"id": rid, **rule.model_dump(exclude_defaults=True)})

    @emu.admin_route("DELETE", "/_emulator/faults")
    def clear_faults(req: Request) -> Response:
        emu.faults.clear()
        return Response(204)

    @emu.admin_route("DELETE", "/_emulator/faults/{id}")
    def del_fault(req: Request) -> Response:
        try:
            rid = int(req.params["id"])
        except ValueError:
            raise ArmError(400, "InvalidRequestContent", "A fault id is an integer.") from None
        if not emu.faults.remove(rid):
            raise ArmError(404, "NotFound", f"No fault rule {rid}.")
        return Response(204)

    @emu.admin_route("GET", "/_emulator/throttling")
    def get_throttling(req: Request) -> Response:
        return Response(
            200,
            {
                **emu.throttle.settings.model_dump(),
                "throttled": emu.throttle.throttled,
                "throttledByBucket": dict(emu.throttle.throttled_by_bucket),
            },
        )

    @emu.admin_route("PUT", "/_emulator/throttling")
    def put_throttling(req: Request) -> Response:
        try:
            settings = ThrottleSettings.model_validate(_body_object(req))
        except ValidationError as e:
            raise _validation_error(e) from None
        emu.throttle.configure(settings)
        return Response(200, settings.model_dump())

    @emu.admin_route("GET", "/_emulator/state")
    def state(req: Request) -> Response:
        wanted = req.query.get("type", "").lower()
        items = [
            r
            for r in emu.store.snapshot()
            if not wanted or str(r.get("type", "")).lower() == wanted
        ]
        return Response(200, {"now": emu.now_iso(), "value": items})

    @emu.admin_route("GET", "/_emulator/metrics")
    def metrics(req: Request) -> Response:
        return Response(
            200,
            {
                **emu.metrics.as_dict(),
                "throttledByBucket": dict(emu.throttle.throttled_by_bucket),
                "events": vars(emu.events.stats),
            },
        )

    @emu.admin_route("GET", "/_emulator/report")
    def report(req: Request) -> Response:
        return Response(200, emu.report())

    @emu.admin_route("GET", "/_emulator/latency")
    def latency(req: Request) -> Response:
        return Response(200, emu.latency.table())

    @emu.admin_route("GET", "/_emulator/builds")
    def builds(req: Request) -> Response:
        return Response(200, {"value": [{"id": k, **v} for k, v in sorted(emu.builds.items())]})

    @emu.admin_route("PUT", "/_emulator/builds/{buildId}")
    def put_build(req: Request) -> Response:
        body = _body_object(req)
        state = str(body.get("state", "")).lower()
        if state not in ("running", "ended"):
            raise ArmError(400, "InvalidRequestContent", "state: must be 'running' or 'ended'")
        record = {"state": state, "updated": iso(emu.now())}
        emu.builds[req.params["buildId"].lower()] = record
        return Response(200, {"id": req.params["buildId"], **record})
