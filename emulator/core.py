"""The emulator's framework: ARM routing and conventions, scheduling in host time, reports.

Resource modules (compute, marketplace, gallery, avd, users ...) expose
``register(emu: Emulator) -> None`` and add routes with ``@emu.route(method, template, op=...)``.
The framework applies ARM's conventions before a handler runs (bearer token, ``api-version``,
subscription, throttling, injected faults, JSON body) and after (request ids, rate-limit
headers, ``Retry-After`` in virtual time), serialises every handler under :attr:`Emulator.lock`,
and counts requests per operation. Long operations go through :meth:`Emulator.begin_lro`,
delays through :meth:`Emulator.schedule`, which runs work at host-clock times as a participant
of the shared clock (see docs/contracts.md, section 1).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import random
import re
import threading
import traceback
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from devhost.clock import BaseClock, Participant
from emulator.arm import (
    ArmError,
    Headers,
    Request,
    Response,
    as_int,
    as_list,
    as_object,
    as_str,
    bad_request,
    check_name,
    conflict,
    operation_not_allowed,
    parent_not_found,
    resource_not_found,
)
from emulator.events import EventPublisher, iso
from emulator.faults import FaultInjector
from emulator.latency import LatencyModel, LatencySpec
from emulator.lro import LroManager, OperationHandle
from emulator.scenario import Scenario, load_scenario
from emulator.store import ResourceStore, parse_resource_id, resource_type_of
from emulator.throttle import Throttler

__all__ = [
    "LISTENER_TOPICS",
    "ArmError",
    "Emulator",
    "EmulatorOptions",
    "Handler",
    "Listener",
    "OperationHandle",
    "Request",
    "Response",
    "ScheduledItem",
    "as_int",
    "as_list",
    "as_object",
    "as_str",
    "bad_request",
    "check_name",
    "conflict",
    "iso",
    "operation_not_allowed",
    "parent_not_found",
    "parse_resource_id",
    "resource_not_found",
    "resource_type_of",
]

log = logging.getLogger(__name__)

Handler = Callable[[Request], Response]
# A listener hears (resource id, state) when something happens to a resource.
Listener = Callable[[str, str], None]
# The topics modules may listen to (add_listener refuses others, so typos fail loudly).
LISTENER_TOPICS = {
    # (vm_id, power): every power change of a VM: "starting", "running" (booted),
    # "stopping", "stopped" (power off or a guest shutdown), "deallocating", "deallocated",
    # and "deleted" when the VM is gone.
    "vm.power": "a VM's power state changed",
    # (vm_id, step kind): a run-command step finished inside the VM's guest (the kind is the
    # step's latency name, e.g. "guest.registry"); never the command text (it may hold secrets).
    "vm.guest": "a run-command step changed a VM's guest",
}
BUILD_TAG = "imagefactory:build-id"
BUILD_STATE_TAG = "imagefactory:build-state"
ENDED_STATES = {"ended", "succeeded", "failed", "canceled", "cancelled", "completed"}
DEFAULT_OWNED_TYPES = [
    "Microsoft.Compute/virtualMachines",
    "Microsoft.Compute/disks",
    "Microsoft.Compute/snapshots",
    "Microsoft.Network/networkInterfaces",
]


@dataclass(frozen=True)
class EmulatorOptions:
    """Knobs that are not part of a scenario.

    ``retry_after``: how ``Retry-After`` values (seconds of host time) reach clients.
    ``"seconds"`` sends them as they are; ``"milliseconds"`` replaces them with
    ``retry-after-ms: virtual_retry_after_ms`` (real time) and keeps the host-time value in
    ``x-ms-emulator-retry-after``, because the SDK sleeps *real* seconds and its Compute
    deserializer rejects fractional ``Retry-After``; ``"auto"`` picks milliseconds under a
    virtual clock and seconds under a real one.
    """

    require_auth: bool = True
    retry_after: Literal["auto", "seconds", "milliseconds"] = "auto"
    virtual_retry_after_ms: int = 20
    page_size: int | None = None  # None: the scenario's page_size


@dataclass
class ScheduledItem:
    due: datetime
    seq: int
    fn: Callable[[], None]
    label: str
    cancelled: bool = False
    done: bool = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: ScheduledItem) -> bool:
        return (self.due, self.seq) < (other.due, other.seq)


@dataclass
class _Route:
    method: str
    template: str
    op: str
    api_versions: set[str] | None
    regex: re.Pattern[str]
    names: list[str]
    literals: int
    handler: Handler


_ARM_NAME_RULE = (
    'The name cannot contain <, >, *, %, &, :, \\, ?, +, /, #, |, " or control characters, '
    "cannot end with '.' and can be up to 260 characters long."
)
_WWW_AUTH = (
    'Bearer authorization_uri="https://login.microsoftonline.com/common", error="invalid_token"'
)
_PARAM = re.compile(r"^\{(\w+)\}$")


def _compile(template: str) -> tuple[re.Pattern[str], list[str], int]:
    parts = [p for p in template.strip("/").split("/") if p]
    rx = []
    names = []
    literals = 0
    for p in parts:
        m = _PARAM.match(p)
        if m:
            names.append(m.group(1))
            rx.append("([^/]+)")
        else:
            literals += 1
            rx.append(re.escape(p))
    return re.compile("^/" + "/".join(rx) + "/?$", re.IGNORECASE), names, literals


@dataclass
class Metrics:
    requests: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, dict[str, int]] = field(default_factory=dict)
    throttled: int = 0
    faults_injected: int = 0
    unexpected_errors: int = 0
    last_unexpected: list[str] = field(default_factory=list)

    def count(self, op: str, status: int) -> None:
        self.requests[op] = self.requests.get(op, 0) + 1
        by = self.statuses.setdefault(op, {})
        by[str(status)] = by.get(str(status), 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "operations": {
                op: {"total": n, "statuses": dict(self.statuses.get(op, {}))}
                for op, n in sorted(self.requests.items())
            },
            "requests": dict(sorted(self.requests.items())),
            "statuses": {k: dict(v) for k, v in sorted(self.statuses.items())},
            "throttled": self.throttled,
            "faultsInjected": self.faults_injected,
            "unexpectedErrors": self.unexpected_errors,
        }


class Emulator:
    """State, routing and time of one emulated Azure control plane."""

    def __init__(
        self,
        clock: BaseClock,
        scenario: Scenario | None = None,
        options: EmulatorOptions | None = None,
    ) -> None:
        self.clock = clock
        self.options = options or EmulatorOptions()
        self.lock = threading.RLock()
        self.scenario = scenario or Scenario()
        self.rng = random.Random(self.scenario.seed)
        self._id_rng = random.Random(f"ids:{self.scenario.seed}")
        self._id_lock = threading.Lock()
        self.store = ResourceStore()
        self.latency = LatencyModel(self.scenario.seed)
        self.faults = FaultInjector(self.scenario.seed)
        self.throttle = Throttler(self.clock.now)
        self.metrics = Metrics()
        self.base_url = "https://127.0.0.1"
        self._routes: list[_Route] = []
        self._admin_routes: list[_Route] = []
        self._seeders: list[Callable[[Scenario], None]] = []
        self._resetters: list[Callable[[], None]] = []
        self._report_sections: dict[str, Callable[[], Any]] = {}
        self._owned_types: list[str] = list(DEFAULT_OWNED_TYPES)
        self._owner_rules: list[Callable[[dict[str, Any]], str | None]] = []
        self._listeners: dict[str, list[Listener]] = {t: [] for t in LISTENER_TOPICS}
        self.seeded_ids: set[str] = set()
        self.builds: dict[str, dict[str, Any]] = {}
        # Module-private state objects by module name (e.g. the marketplace catalogue).
        self.modules: dict[str, Any] = {}
        # scheduling
        self._sched_lock = threading.Lock()
        self._heap: list[ScheduledItem] = []
        self._seq = itertools.count()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.schedule_errors: list[str] = []
        self._local = threading.local()
        self.participant: Participant = clock.participant("emulator", self.next_due)
        self.events = EventPublisher(self)
        self.lro = LroManager(self)
        self.add_report_section("orphans", lambda: self._ownership()["orphans"])
        self.add_report_section("ownership", lambda: self._ownership()["ownership"])

    # -- identity and time -----------------------------------------------------------------
    @property
    def tenant_id(self) -> str:
        return self.scenario.tenant_id

    def now(self) -> datetime:
        return self.clock.now()

    def now_iso(self) -> str:
        return iso(self.clock.now())

    def new_id(self) -> str:
        """A deterministic (seeded) UUID string."""
        with self._id_lock:
            return str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))

    @property
    def page_size(self) -> int:
        return self.options.page_size or self.scenario.page_size

    # -- registration ----------------------------------------------------------------------
    def route(
        self, method: str, template: str, *, op: str, api_versions: set[str] | None = None
    ) -> Callable[[Handler], Handler]:
        """Register a handler for an ARM route. Literal segments match case-insensitively.

        ``op`` names the operation for metrics, faults and throttling; it may contain
        ``{param}`` placeholders filled from the route's values. ``api_versions``: the versions
        accepted (None: any).
        """

        def deco(fn: Handler) -> Handler:
            rx, names, literals = _compile(template)
            self._routes.append(
                _Route(method.upper(), template, op, api_versions, rx, names, literals, fn)
            )
            return fn

        return deco

    def admin_route(self, method: str, template: str) -> Callable[[Handler], Handler]:
        """Register an admin handler under ``/_emulator/...`` (no api-version, no auth)."""
        if not template.lower().startswith("/_emulator/"):
            raise ValueError("admin routes live under /_emulator/")

        def deco(fn: Handler) -> Handler:
            rx, names, literals = _compile(template)
            op = "admin:" + template
            self._admin_routes.append(
                _Route(method.upper(), template, op, None, rx, names, literals, fn)
            )
            return fn

        return deco

    def add_report_section(self, name: str, fn: Callable[[], Any]) -> None:
        self._report_sections[name] = fn

    def add_seeder(self, fn: Callable[[Scenario], None]) -> None:
        """``fn(scenario)`` runs (under the lock) each time a scenario is loaded."""
        self._seeders.append(fn)

    def add_resetter(self, fn: Callable[[], None]) -> None:
        """``fn()`` clears a module's private state before a scenario is (re)loaded."""
        self._resetters.append(fn)

    def add_owned_resource_type(self, rtype: str) -> None:
        """Include a resource type in orphan detection (VMs, disks, NICs, snapshots by default)."""
        if rtype.lower() not in {t.lower() for t in self._owned_types}:
            self._owned_types.append(rtype)

    def add_owner_rule(self, fn: Callable[[dict[str, Any]], str | None]) -> None:
        """``fn(resource)`` names the owner of an untagged resource (e.g. an AVD host pool),
        or None; owned resources are not reported as untracked."""
        self._owner_rules.append(fn)

    def add_listener(self, topic: str, fn: Listener) -> None:
        """``fn(resource_id, state)`` runs (under the lock, at that virtual instant) each time
        ``topic`` is emitted; see :data:`LISTENER_TOPICS`. Listeners outlive scenario loads."""
        if topic not in self._listeners:
            raise ValueError(
                f"unknown listener topic {topic!r}; known: {', '.join(sorted(LISTENER_TOPICS))}"
            )
        self._listeners[topic].append(fn)

    def emit(self, topic: str, resource_id: str, state: str) -> None:
        """Tell ``topic``'s listeners (call under the lock). A listener that raises is logged
        and reported in ``scheduleErrors``; the others still run and the caller goes on."""
        for fn in list(self._listeners[topic]):
            try:
                fn(resource_id, state)
            except Exception as e:
                log.exception("listener of %s failed for %s", topic, resource_id)
                self.schedule_errors.append(
                    f"listener {topic} {resource_id} {state}: {type(e).__name__}: {e}"
                )

    def mark_seeded(self, resource_id: str) -> None:
        """A resource the scenario created (never reported as untracked)."""
        self.seeded_ids.add(resource_id.lower())

    # -- scheduling (a clock participant) --------------------------------------------------
    def next_due(self) -> datetime | None:
        with self._sched_lock:
            while self._heap and self._heap[0].cancelled:
                heapq.heappop(self._heap)
            return self._heap[0].due if self._heap else None

    def schedule(self, delay: timedelta, fn: Callable[[], None], label: str) -> ScheduledItem:
        """Run ``fn`` under :attr:`lock` at host time now + delay."""
        if delay < timedelta(0):
            delay = timedelta(0)
        item = ScheduledItem(self.clock.now() + delay, next(self._seq), fn, label)
        with self._sched_lock:
            heapq.heappush(self._heap, item)
        self._wake.set()
        self.participant.notify()
        return item

    def schedule_at(self, when: datetime, fn: Callable[[], None], label: str) -> ScheduledItem:
        return self.schedule(when - self.clock.now(), fn, label)

    def schedule_call(self, delay: timedelta, fn: Callable[[], None], label: str) -> object:
        return self.schedule(delay, fn, label)

    def pending(self) -> list[dict[str, str]]:
        with self._sched_lock:
            items = sorted(i for i in self._heap if not i.cancelled)
        return [{"due": iso(i.due), "label": i.label} for i in items]

    def _pop_due(self) -> ScheduledItem | None:
        with self._sched_lock:
            while self._heap and self._heap[0].cancelled:
                heapq.heappop(self._heap)
            if self._heap and self._heap[0].due <= self.clock.now():
                return heapq.heappop(self._heap)
            return None

    def _run_scheduler(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            with self.participant.busy():
                item = self._pop_due()
                if item is not None:
                    self._run_item(item)
                    continue
            due = self.next_due()
            self.clock.wait_until(due, wake=self._wake, real_timeout=1.0)

    def _run_item(self, item: ScheduledItem) -> None:
        with self.lock:
            try:
                item.fn()
            except Exception as e:
                text = f"{item.label}: {type(e).__name__}: {e}"
                log.exception("scheduled work %s failed", item.label)
                self.schedule_errors.append(text)
            finally:
                item.done = True

    def work_enter(self) -> None:
        self.participant.enter()

    def work_leave(self) -> None:
        self.participant.leave()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run_scheduler, name="emulator-scheduler", daemon=True
            )
            self._thread.start()
            self.events.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.events.stop()
        self.participant.close()

    # -- scenario --------------------------------------------------------------------------
    def load_scenario(self, source: Any) -> Scenario:
        """Replace the world with a scenario's (state, faults, subscriptions, schedules)."""
        scenario = load_scenario(source)
        with self.lock:
            with self._sched_lock:
                for item in self._heap:
                    item.cancelled = True
                self._heap.clear()
            self.scenario = scenario
            self.rng = random.Random(scenario.seed)
            with self._id_lock:
                self._id_rng = random.Random(f"ids:{scenario.seed}")
            self.store.clear()
            self.seeded_ids.clear()
            self.builds.clear()
            self.lro.reset()
            self.metrics = Metrics()
            self.latency.reseed(scenario.seed)
            self.latency.clear_overrides()
            self.latency.scale = scenario.latency_scale
            for name, ov in scenario.latency.items():
                self.latency.override(name, LatencySpec(ov.mean, ov.jitter))
            self.faults.reseed(scenario.seed)
            self.faults.clear()
            for rule in scenario.faults:
                self.faults.add(rule)
            self.throttle.configure(scenario.throttling)
            self.throttle.reset()
            self.events.reset()
            for sub in scenario.event_subscriptions:
                self.events.subscribe(sub)
            for reset in self._resetters:
                reset()
            for seed in self._seeders:
                seed(scenario)
            self.seeded_ids.update(str(r["id"]).lower() for r in self.store.all())
        self.participant.notify()
        return scenario

    # -- LROs --------------------------------------------------------------------------------
    def begin_lro(
        self,
        resource_id: str,
        *,
        duration: timedelta,
        on_complete: Callable[[], Any] | None,
        op: str,
        status_code: int = 201,
        body: Any = None,
        fail: ArmError | None = None,
        location_result: bool = False,
        location: str | None = None,
        on_fail: Callable[[ArmError], None] | None = None,
        retry_after: int | None = None,
        publish_event: bool = False,
    ) -> Response:
        """Start a long-running operation; returns the initial response.

        The response carries ``Azure-AsyncOperation`` + ``Location`` + ``Retry-After``. After
        ``duration`` of host time ``on_complete()`` runs under the lock (raise ArmError in it to
        fail the operation); with ``location_result`` its return value is the body the Location
        URL serves (e.g. a RunCommandResult). ``fail`` (or an ``lro_failure`` fault rule, which
        is consulted when ``fail`` is None) ends the operation Failed instead, after calling
        ``on_fail(error)``. ``publish_event`` publishes the Event Grid resource event for ``op``
        (write/action/delete by its suffix) when the operation ends.
        """
        return self.lro.begin(
            resource_id,
            duration=duration,
            on_complete=on_complete,
            op=op,
            status_code=status_code,
            body=body,
            fail=fail,
            location_result=location_result,
            location=location,
            on_fail=on_fail,
            retry_after=retry_after,
            publish_event=publish_event,
        )

    def begin_manual_lro(
        self,
        resource_id: str,
        *,
        op: str,
        status_code: int = 202,
        body: Any = None,
        location_result: bool = False,
        location: str | None = None,
        retry_after: int = 10,
        publish_event: bool = False,
    ) -> tuple[Response, OperationHandle]:
        """Like :meth:`begin_lro` for work of unknown length: the operation stays InProgress
        until ``handle.succeed(result)`` or ``handle.fail(ArmError)`` (call those under the
        lock, e.g. from scheduled work). An ``lro_failure`` fault turns ``succeed`` into a
        failure."""
        return self.lro.begin_manual(
            resource_id,
            op=op,
            status_code=status_code,
            body=body,
            location_result=location_result,
            location=location,
            retry_after=retry_after,
            publish_event=publish_event,
        )

    # -- per-request context -----------------------------------------------------------------
    def current_request(self) -> Request | None:
        return getattr(self._local, "request", None)

    def operation_context(self) -> dict[str, str]:
        ctx = getattr(self._local, "ctx", None)
        return dict(ctx) if ctx else {}

    @contextmanager
    def operation_scope(self, correlation_id: str, method: str, url: str) -> Iterator[None]:
        old = getattr(self._local, "ctx", None)
        self._local.ctx = {"correlation_id": correlation_id, "method": method, "url": url}
        try:
            yield
        finally:
            self._local.ctx = old

    # -- paging ----------------------------------------------------------------------------
    def paged(self, req: Request, items: list[Any], page_size: int | None = None) -> Response:
        """``{"value": [...], "nextLink": ...}`` with a ``$skiptoken`` continuation."""
        size = page_size or self.page_size
        try:
            start = int(req.query.get("$skiptoken", "0") or "0")
        except ValueError:
            raise bad_request("The $skiptoken is invalid.", code="InvalidSkipToken") from None
        page = items[start : start + size]
        body: dict[str, Any] = {"value": page}
        if start + size < len(items):
            q = {k: v for k, v in req.query.items() if k not in ("$skiptoken",)}
            q["$skiptoken"] = str(start + size)
            body["nextLink"] = f"{self.base_url}{req.path}?{urllib.parse.urlencode(q)}"
        return Response(200, body)

    # -- reports -----------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = {"now": iso(self.clock.now())}
            for name, fn in self._report_sections.items():
                try:
                    out[name] = fn()
                except Exception as e:
                    log.exception("report section %s failed", name)
                    out[name] = {"error": f"{type(e).__name__}: {e}"}
            out["scheduleErrors"] = list(self.schedule_errors)
            out["unexpectedErrors"] = list(self.metrics.last_unexpected)
            return out

    def build_state(self, build_id: str, resource: dict[str, Any] | None = None) -> str:
        """``running``, ``ended`` or ``unknown`` for a build id (admin registry, then tags)."""
        reg = self.builds.get(build_id.lower())
        if reg is not None:
            return "ended" if str(reg.get("state", "")).lower() in ENDED_STATES else "running"
        tags = (resource or {}).get("tags") or {}
        state = next((str(v) for k, v in tags.items() if k.lower() == BUILD_STATE_TAG), None)
        if state is not None:
            return "ended" if state.lower() in ENDED_STATES else "running"
        return "unknown"

    def _ownership(self) -> dict[str, Any]:
        """``orphans``: leftovers (a list, empty when clean) of an ended build or of nobody;
        ``ownership``: what running builds (or builds of unknown state) own."""
        owned = {t.lower() for t in self._owned_types}
        orphans: list[dict[str, Any]] = []
        running: list[str] = []
        unknown: list[str] = []
        for r in self.store.all():
            if str(r.get("type", "")).lower() not in owned:
                continue
            rid = str(r["id"])
            tags = r.get("tags") or {}
            build = next((str(v) for k, v in tags.items() if k.lower() == BUILD_TAG), None)
            if build is None:
                if rid.lower() in self.seeded_ids or any(rule(r) for rule in self._owner_rules):
                    continue
                orphans.append({"id": rid, "type": r.get("type"), "reason": "untracked"})
                continue
            state = self.build_state(build, r)
            if state == "ended":
                orphans.append(
                    {"id": rid, "type": r.get("type"), "reason": "build-ended", "buildId": build}
                )
            elif state == "running":
                running.append(rid)
            else:
                unknown.append(rid)
        return {
            "orphans": orphans,
            "ownership": {"ownedByRunningBuild": running, "taggedUnknownBuild": unknown},
        }

    # -- request dispatch --------------------------------------------------------------------
    def _retry_after_style(self) -> str:
        style = self.options.retry_after
        if style == "auto":
            return "milliseconds" if self.clock.virtual else "seconds"
        return style

    def _finish_headers(self, headers: dict[str, str]) -> dict[str, str]:
        ra = next((k for k in headers if k.lower() == "retry-after"), None)
        if ra is not None and self._retry_after_style() == "milliseconds":
            value = headers.pop(ra)
            headers["x-ms-emulator-retry-after"] = value
            headers["retry-after-ms"] = str(self.options.virtual_retry_after_ms)
        return headers

    def _match(
        self, routes: list[_Route], method: str, path: str
    ) -> tuple[_Route | None, dict[str, str], bool]:
        best: tuple[_Route, dict[str, str]] | None = None
        path_matched = False
        for r in routes:
            m = r.regex.match(path)
            if not m:
                continue
            path_matched = True
            if r.method != method:
                continue
            if best is None or r.literals > best[0].literals:
                values = [urllib.parse.unquote(v) for v in m.groups()]
                best = (r, dict(zip(r.names, values, strict=True)))
        if best is None:
            return None, {}, path_matched
        return best[0], best[1], path_matched

    def handle(
        self, method: str, target: str, headers: Headers, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request to (status, headers, body bytes). Never raises."""
        with self.participant.busy():
            status, out_headers, payload = self._handle(method.upper(), target, headers, body)
        return status, out_headers, payload

    def _handle(
        self, method: str, target: str, headers: Headers, raw: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        request_id = str(uuid.uuid4())
        correlation = headers.get("x-ms-correlation-request-id") or request_id
        base_headers = {
            "x-ms-request-id": request_id,
            "x-ms-correlation-request-id": correlation,
        }
        split = urllib.parse.urlsplit(target)
        path = split.path or "/"
        query = {k.lower(): v for k, v in urllib.parse.parse_qsl(split.query, True)}
        admin = path.lower().startswith("/_emulator/") or path.lower() == "/_emulator"
        op = "unknown"
        try:
            req, route = self._prepare(method, path, query, headers, raw, admin)
            req.request_id = request_id
            req.correlation_id = correlation
            op = req.op
            if not admin:
                vm_id = self._vm_of(req)
                try:
                    base_headers.update(self.throttle.admit(method, op, req.subscription, vm_id))
                except ArmError as e:
                    if e.status == 429:
                        self.metrics.throttled += 1
                        wait = int(e.headers.get("Retry-After", "1"))
                        # Give the clock something to jump to, so buckets refill in virtual time.
                        self.schedule(timedelta(seconds=wait), lambda: None, "throttle-refill")
                    raise
                try:
                    self.faults.check(op, req.resource_id)
                except ArmError:
                    self.metrics.faults_injected += 1
                    raise
            with self.lock:
                self._local.request = req
                old_ctx = getattr(self._local, "ctx", None)
                self._local.ctx = {
                    "correlation_id": correlation,
                    "method": method,
                    "url": f"{self.base_url}{target}",
                    "client_request_id": headers.get("x-ms-client-request-id", ""),
                }
                try:
                    resp = route.handler(req)
                    payload = self._encode(resp.body)
                finally:
                    self._local.request = None
                    self._local.ctx = old_ctx
            out = {**base_headers, **resp.headers}
            status = resp.status
        except ArmError as e:
            status = e.status
            out = {**base_headers, **e.headers, "x-ms-failure-cause": "gateway"}
            payload = self._encode(e.body())
        except Exception as e:  # last resort: a bug must not take the server down
            log.exception("unexpected error handling %s %s", method, target)
            self.metrics.unexpected_errors += 1
            self.metrics.last_unexpected.append(
                f"{method} {path}: {type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}"
            )
            del self.metrics.last_unexpected[:-20]
            status = 500
            out = dict(base_headers)
            payload = self._encode(
                {
                    "error": {
                        "code": "InternalServerError",
                        "message": "The server encountered an internal error; see the "
                        "emulator's log and /_emulator/report.",
                    }
                }
            )
        with self.lock:
            self.metrics.count(op, status)
        if payload:
            out.setdefault("Content-Type", "application/json; charset=utf-8")
        return status, self._finish_headers(out), payload

    @staticmethod
    def _encode(body: Any) -> bytes:
        if body is None:
            return b""
        if isinstance(body, bytes):
            return body
        if isinstance(body, str):
            return body.encode("utf-8")
        return json.dumps(body, separators=(",", ":")).encode("utf-8")

    def _vm_of(self, req: Request) -> str | None:
        """The VM a request concerns, for Compute's per-VM throttling buckets."""
        rid = req.resource_id
        if req.op.lower().endswith(("/operations/read", "/operationresults/read")):
            target = self.lro.target_of(req.params.get("opid", ""))
            if target is None:
                return None
            rid = target
        p = parse_resource_id(rid)
        if p.types and p.types[0].lower() == "virtualmachines" and len(p.names) >= 1:
            return (
                f"/subscriptions/{p.subscription}/resourceGroups/{p.resource_group}"
                f"/providers/{p.provider}/virtualMachines/{p.names[0]}"
            )
        return None

    def _prepare(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: Headers,
        raw: bytes,
        admin: bool,
    ) -> tuple[Request, _Route]:
        if admin:
            route, params, path_matched = self._match(self._admin_routes, method, path)
            if route is None:
                if path_matched:
                    raise ArmError(
                        405,
                        "MethodNotAllowed",
                        f"The admin resource does not support http method '{method}'.",
                    )
                raise ArmError(404, "NotFound", f"No admin route {path}.")
            body = self._parse_body(raw, headers, lenient=True)
            return (
                Request(
                    method,
                    path,
                    params,
                    query,
                    headers,
                    body,
                    "",
                    None,
                    op=route.op,
                    base_url=self.base_url,
                    raw_body=raw,
                ),
                route,
            )
        if self.options.require_auth:
            auth = headers.get("authorization", "")
            if not auth.lower().startswith("bearer ") or not auth[7:].strip():
                raise ArmError(
                    401,
                    "AuthenticationFailed",
                    "Authentication failed. The 'Authorization' header is missing."
                    if not auth
                    else "Authentication failed. Invalid format of the 'Authorization' header.",
                    {"WWW-Authenticate": _WWW_AUTH},
                )
        api_version = query.get("api-version")
        if not api_version:
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        subscription = None
        segs = [s for s in path.split("/") if s]
        if len(segs) >= 2 and segs[0].lower() == "subscriptions":
            subscription = urllib.parse.unquote(segs[1])
            known = {s.lower() for s in self.scenario.subscription_ids}
            if known and subscription.lower() not in known:
                raise ArmError(
                    404,
                    "SubscriptionNotFound",
                    f"The subscription '{subscription}' could not be found.",
                )
        route, params, path_matched = self._match(self._routes, method, path)
        if route is None:
            if path_matched:
                raise ArmError(
                    405,
                    "HttpMethodNotAllowed",
                    f"The requested resource does not support http method '{method}'.",
                )
            rid = parse_resource_id(path)
            if rid.provider and rid.types:
                raise ArmError(
                    404,
                    "InvalidResourceType",
                    f"The resource type '{'/'.join(rid.types)}' could not be found in the "
                    f"namespace '{rid.provider}' for api version '{api_version}'.",
                )
            raise ArmError(404, "NotFound", f"The requested path '{path}' was not found.")
        if route.api_versions is not None and api_version not in route.api_versions:
            supported = ",".join(sorted(route.api_versions, reverse=True))
            raise ArmError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{api_version}' is invalid. The supported versions are "
                f"'{supported}'.",
            )
        op = route.op
        if "{" in op:
            try:
                op = op.format(**params)
            except (KeyError, IndexError):
                op = route.op
        if method in ("PUT", "PATCH"):
            last = [s for s in path.split("/") if s][-1]
            # ARM-level rule only; modules apply their resource type's own naming rules.
            check_name(
                urllib.parse.unquote(last),
                kind=resource_type_of(path) or "resource",
                max_length=260,
                rule=_ARM_NAME_RULE,
            )
        body = self._parse_body(raw, headers, lenient=False)
        req = Request(
            method,
            path,
            params,
            query,
            headers,
            body,
            api_version,
            subscription,
            op=op,
            base_url=self.base_url,
            raw_body=raw,
        )
        return req, route

    @staticmethod
    def _parse_body(raw: bytes, headers: Headers, lenient: bool) -> Any:
        if not raw or not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            if lenient:
                return None
            raise ArmError(
                400,
                "InvalidRequestContent",
                "The request content was invalid and could not be deserialized: "
                f"'{type(e).__name__}: {e}'.",
            ) from None
