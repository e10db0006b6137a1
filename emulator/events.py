"""Event Grid: resource events in the real schema, delivered by HTTP POST to local subscribers.

Every successful write/action/delete publishes ``Microsoft.Resources.ResourceWriteSuccess`` /
``ResourceActionSuccess`` / ``ResourceDeleteSuccess`` (``...Failure`` for failed ones) on the
subscription's system topic (``/subscriptions/{id}``), the way Azure's subscription-level
system topic does. Subscribers are registered by URL (loopback only) with Event Grid's filters
(``includedEventTypes``, ``subjectBeginsWith``, ``subjectEndsWith``) and schema (``eventgrid``:
a JSON array per POST; ``cloudevents``: one ``application/cloudevents+json`` event per POST).

Resource events are published when the operation *completes* (the LRO's end in host time, from
``emulator/lro.py``; synchronous actions such as ``generalize`` when they answer), as Azure's
subscription system topic does. Delivery is Event Grid's, as far as a subscriber can tell:

- **delayed**: each delivery leaves after a seeded delay in host time (:class:`DeliveryModel`,
  default 1-5 s, 5 % of them 5-30 s). Microsoft publishes no latency figure for system topics:
  Event Grid "tries to deliver each message at least once for each matching subscription
  immediately" (delivery-and-retry) with "near real-time" delivery; resource events arrive
  within seconds in practice (platform notes);
- **unordered**: delays are drawn per delivery, so two events seconds apart may swap
  ("Event Grid doesn't guarantee order for event delivery");
- **at least once**: an occasional delivery is repeated (``duplicate_probability``, default 2 %,
  the copy a few seconds later, the same event ``id``); the fault flag
  ``eventgrid_event_duplicated`` forces it;
- **lost**, as a seedable fault only: the flag ``eventgrid_event_lost`` (matched on
  ``event_type``, ``subject``, ``operation`` and ``subscription``) drops a delivery silently, so
  a subscriber's safety net (polling) gets exercised.

A scheduled or pending delivery counts as clock work (a scheduled one through the emulator's
scheduler, an in-flight POST keeps the participant busy), so virtual time cannot skip past an
undelivered event. Failed POSTs are retried on Event Grid's schedule (10 s, 30 s, 1 min, 5 min
... in host time) up to ``max_attempts``, then dead-lettered (:attr:`EventPublisher.dead_letters`).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import queue
import random
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from emulator.store import parse_resource_id

log = logging.getLogger(__name__)

WRITE_SUCCESS = "Microsoft.Resources.ResourceWriteSuccess"
WRITE_FAILURE = "Microsoft.Resources.ResourceWriteFailure"
ACTION_SUCCESS = "Microsoft.Resources.ResourceActionSuccess"
ACTION_FAILURE = "Microsoft.Resources.ResourceActionFailure"
DELETE_SUCCESS = "Microsoft.Resources.ResourceDeleteSuccess"
DELETE_FAILURE = "Microsoft.Resources.ResourceDeleteFailure"
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"

RETRY_SCHEDULE = [10, 30, 60, 300, 600, 1800, 3600]
LOST_FLAG = "eventgrid_event_lost"
DUPLICATED_FLAG = "eventgrid_event_duplicated"


@dataclass
class DeliveryModel:
    """How long Event Grid takes to deliver, and how often it delivers twice (seeded draws).

    ``delay``: uniform in ``[min_seconds, max_seconds]``; with ``tail_probability`` instead
    uniform in ``[max_seconds, tail_max_seconds]``. ``duplicate_probability``: a second
    delivery of the same event, ``duplicate_after`` later (uniform in its range).
    """

    min_seconds: float = 1.0
    max_seconds: float = 5.0
    tail_probability: float = 0.05
    tail_max_seconds: float = 30.0
    duplicate_probability: float = 0.02
    duplicate_after: tuple[float, float] = (1.0, 10.0)

    def delay(self, rng: random.Random) -> timedelta:
        if self.tail_probability and rng.random() < self.tail_probability:
            seconds = rng.uniform(self.max_seconds, self.tail_max_seconds)
        else:
            seconds = rng.uniform(self.min_seconds, self.max_seconds)
        return timedelta(seconds=round(seconds, 3))

    def duplicate(self, rng: random.Random) -> timedelta | None:
        if not self.duplicate_probability or rng.random() >= self.duplicate_probability:
            return None
        return timedelta(seconds=round(rng.uniform(*self.duplicate_after), 3))


IMMEDIATE = DeliveryModel(0.0, 0.0, 0.0, 0.0, 0.0)
"""No delay, no duplicates: for tests of the delivery mechanics themselves."""


def is_loopback_url(url: str) -> bool:
    """True for http(s) URLs whose host is 127.0.0.0/8, ::1 or localhost."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return False
    host = parsed.hostname
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class EventSubscriptionSpec(BaseModel):
    """A webhook subscription on the emulator's system topics."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1)
    endpoint: str
    included_event_types: list[str] | None = Field(default=None, alias="includedEventTypes")
    subject_begins_with: str | None = Field(default=None, alias="subjectBeginsWith")
    subject_ends_with: str | None = Field(default=None, alias="subjectEndsWith")
    schema_: Literal["eventgrid", "cloudevents"] = Field(default="eventgrid", alias="schema")
    validation_handshake: bool = Field(default=False, alias="validationHandshake")
    max_attempts: int = Field(default=5, ge=1, le=30, alias="maxAttempts")

    @field_validator("endpoint")
    @classmethod
    def _loopback(cls, v: str) -> str:
        if not is_loopback_url(v):
            raise ValueError("the endpoint must be an http(s) URL on the loopback interface")
        return v

    def matches(self, event_type: str, subject: str) -> bool:
        if self.included_event_types is not None and event_type.lower() not in {
            t.lower() for t in self.included_event_types
        }:
            return False
        if self.subject_begins_with and not subject.lower().startswith(
            self.subject_begins_with.lower()
        ):
            return False
        return not (
            self.subject_ends_with and not subject.lower().endswith(self.subject_ends_with.lower())
        )


@dataclass(frozen=True)
class Event:
    id: str
    event_type: str
    subject: str
    event_time: datetime
    data: dict[str, Any]
    topic: str
    data_version: str = ""
    metadata_version: str = "1"

    def to_eventgrid(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "topic": self.topic,
            "subject": self.subject,
            "eventType": self.event_type,
            "eventTime": iso(self.event_time),
            "data": self.data,
            "dataVersion": self.data_version,
            "metadataVersion": self.metadata_version,
        }

    def to_cloudevent(self) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": self.id,
            "source": self.topic,
            "subject": self.subject,
            "type": self.event_type,
            "time": iso(self.event_time),
            "datacontenttype": "application/json",
            "data": self.data,
        }


def iso(t: datetime) -> str:
    """ISO-8601 UTC with a trailing Z and 7 fractional digits, as Azure writes times."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


class EventHost(Protocol):
    """What the publisher needs from the emulator."""

    @property
    def tenant_id(self) -> str: ...

    def now(self) -> datetime: ...

    def new_id(self) -> str: ...

    def work_enter(self) -> None: ...

    def work_leave(self) -> None: ...

    def schedule_call(self, delay: timedelta, fn: Callable[[], None], label: str) -> object: ...

    def operation_context(self) -> dict[str, str]: ...


class _FaultSource(Protocol):
    def flag(self, kind: str, **match: object) -> bool: ...


@dataclass
class _Subscription:
    spec: EventSubscriptionSpec
    state: str = "Succeeded"  # or "AwaitingManualAction" (validating), "Failed"
    delivered: int = 0
    failed_attempts: int = 0


@dataclass
class _Job:
    sub_name: str
    event: Event | None  # None: the validation handshake
    attempt: int = 1


@dataclass
class DeliveryRecord:
    subscription: str
    event_id: str
    event_type: str
    attempts: int
    status: int | None
    error: str | None = None
    delivered_at: str | None = None


@dataclass
class _Stats:
    published: int = 0
    delivered: int = 0
    failed_attempts: int = 0
    dead_lettered: int = 0
    lost: int = 0
    duplicated: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


class EventPublisher:
    """Publishes events and delivers them to matching subscriptions on a background thread."""

    def __init__(self, host: EventHost, log_limit: int = 10000) -> None:
        self._host = host
        self._lock = threading.Lock()
        self._subs: dict[str, _Subscription] = {}
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._log_limit = log_limit
        self.log: list[Event] = []
        self.deliveries: list[DeliveryRecord] = []
        self.dead_letters: list[DeliveryRecord] = []
        self.stats = _Stats()
        self.timeout = 10.0
        self.model = DeliveryModel()
        self._rng = random.Random("eventgrid:0")
        self.lost: list[DeliveryRecord] = []

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="emulator-events", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def reset(self) -> None:
        """Forget subscriptions and records; reseed the delivery draws from the scenario."""
        seed = getattr(getattr(self._host, "scenario", None), "seed", 0)
        with self._lock:
            self._subs.clear()
            self.log.clear()
            self.deliveries.clear()
            self.dead_letters.clear()
            self.lost.clear()
            self.stats = _Stats()
            self._rng = random.Random(f"eventgrid:{seed}")

    # -- subscriptions ---------------------------------------------------------------------
    def subscribe(self, spec: EventSubscriptionSpec | dict[str, Any]) -> EventSubscriptionSpec:
        s = spec if isinstance(spec, EventSubscriptionSpec) else EventSubscriptionSpec(**spec)
        with self._lock:
            sub = _Subscription(s)
            self._subs[s.name.lower()] = sub
            if s.validation_handshake:
                sub.state = "AwaitingManualAction"
                self._enqueue(_Job(s.name, None))
        return s

    def unsubscribe(self, name: str) -> bool:
        with self._lock:
            return self._subs.pop(name.lower(), None) is not None

    def subscriptions(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    **s.spec.model_dump(by_alias=True),
                    "provisioningState": s.state,
                    "delivered": s.delivered,
                    "failedAttempts": s.failed_attempts,
                }
                for s in self._subs.values()
            ]

    # -- publishing ------------------------------------------------------------------------
    def publish(
        self,
        event_type: str,
        subject: str,
        data: dict[str, Any],
        *,
        topic: str | None = None,
        data_version: str = "",
    ) -> Event:
        """Publish one event; deliveries to matching subscribers start at once."""
        if topic is None:
            sub = parse_resource_id(subject).subscription
            topic = f"/subscriptions/{sub}" if sub else "/emulator"
        event = Event(
            id=self._host.new_id(),
            event_type=event_type,
            subject=subject,
            event_time=self._host.now(),
            data=data,
            topic=topic,
            data_version=data_version,
        )
        with self._lock:
            self.stats.published += 1
            self.stats.by_type[event_type] = self.stats.by_type.get(event_type, 0) + 1
            self.log.append(event)
            if len(self.log) > self._log_limit:
                del self.log[: len(self.log) - self._log_limit]
            targets = [
                t
                for t in self._subs.values()
                if t.state != "Failed" and t.spec.matches(event_type, subject)
            ]
        for target in targets:
            self._dispatch(target.spec.name, event)
        return event

    def _flag(self, kind: str, event: Event, subscription: str) -> bool:
        faults: _FaultSource | None = getattr(self._host, "faults", None)
        if faults is None:
            return False
        operation = event.data.get("operationName") if isinstance(event.data, dict) else None
        return faults.flag(
            kind,
            event_type=event.event_type,
            subject=event.subject,
            operation=str(operation or ""),
            subscription=subscription,
        )

    def _dispatch(self, sub_name: str, event: Event) -> None:
        """Schedule one subscription's delivery: delayed, maybe twice, maybe (a fault) never."""
        if self._flag(LOST_FLAG, event, sub_name):
            with self._lock:
                self.stats.lost += 1
                self.lost.append(
                    DeliveryRecord(sub_name, event.id, event.event_type, 0, None, "lost (fault)")
                )
            log.info("event %s (%s) to %s lost (fault)", event.id, event.event_type, sub_name)
            return
        with self._lock:
            delay = self.model.delay(self._rng)
            again = self.model.duplicate(self._rng)
        if again is None and self._flag(DUPLICATED_FLAG, event, sub_name):
            again = timedelta(seconds=self.model.duplicate_after[0])
        self._later(delay, _Job(sub_name, event))
        if again is not None:
            with self._lock:
                self.stats.duplicated += 1
            self._later(delay + again, _Job(sub_name, event))

    def _later(self, delay: timedelta, job: _Job) -> None:
        if delay <= timedelta(0):
            self._enqueue(job)
            return
        self._host.schedule_call(
            delay, lambda: self._enqueue(job), f"eventgrid-delivery:{job.sub_name}"
        )

    def _resource_event(
        self,
        kind: str,
        resource_id: str,
        operation_name: str,
        status: str,
        http_method: str,
        correlation_id: str | None,
    ) -> Event:
        rid = parse_resource_id(resource_id)
        ctx = self._host.operation_context()
        corr = correlation_id or ctx.get("correlation_id") or self._host.new_id()
        succeeded = status == "Succeeded"
        event_type = f"Microsoft.Resources.Resource{kind}{'Success' if succeeded else 'Failure'}"
        data = {
            "authorization": {
                "scope": resource_id,
                "action": operation_name,
                "evidence": {"role": "Contributor", "principalType": "ServicePrincipal"},
            },
            "claims": {"appid": "00000000-0000-0000-0000-00000000e1e1"},
            "correlationId": corr,
            "httpRequest": {
                "clientRequestId": ctx.get("client_request_id", ""),
                "clientIpAddress": "127.0.0.1",
                "method": ctx.get("method", http_method),
                "url": ctx.get("url", resource_id),
            },
            "resourceProvider": rid.provider or "",
            "resourceUri": resource_id,
            "operationName": operation_name,
            "status": status,
            "subscriptionId": rid.subscription or "",
            "tenantId": self._host.tenant_id,
        }
        return self.publish(event_type, resource_id, data, data_version="2")

    def resource_write(
        self,
        resource_id: str,
        *,
        operation_name: str | None = None,
        status: str = "Succeeded",
        correlation_id: str | None = None,
    ) -> Event:
        op = operation_name or f"{parse_resource_id(resource_id).type}/write"
        return self._resource_event("Write", resource_id, op, status, "PUT", correlation_id)

    def resource_action(
        self,
        resource_id: str,
        action: str,
        *,
        status: str = "Succeeded",
        correlation_id: str | None = None,
    ) -> Event:
        """``action`` is a short name ("deallocate") or a full operation name."""
        op = action if "/" in action else f"{parse_resource_id(resource_id).type}/{action}/action"
        return self._resource_event("Action", resource_id, op, status, "POST", correlation_id)

    def resource_delete(
        self,
        resource_id: str,
        *,
        operation_name: str | None = None,
        status: str = "Succeeded",
        correlation_id: str | None = None,
    ) -> Event:
        op = operation_name or f"{parse_resource_id(resource_id).type}/delete"
        return self._resource_event("Delete", resource_id, op, status, "DELETE", correlation_id)

    def events(self, event_type: str | None = None) -> list[Event]:
        with self._lock:
            return [e for e in self.log if event_type is None or e.event_type == event_type]

    # -- delivery --------------------------------------------------------------------------
    def _enqueue(self, job: _Job) -> None:
        self._host.work_enter()
        self._queue.put(job)

    def pending(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._deliver(job)
            except Exception:
                log.exception("event delivery crashed for subscription %s", job.sub_name)
            finally:
                self._host.work_leave()

    def _post(
        self, url: str, body: bytes, headers: dict[str, str], method: str = "POST"
    ) -> tuple[int, bytes, dict[str, str]]:
        req = urllib.request.Request(url, data=body, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return resp.status, resp.read(), dict(resp.headers.items())
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers.items())

    def _deliver(self, job: _Job) -> None:
        with self._lock:
            sub = self._subs.get(job.sub_name.lower())
        if sub is None:
            return
        spec = sub.spec
        if job.event is None:
            self._validate(sub)
            return
        with self._lock:
            if sub.state == "AwaitingManualAction":
                # Validation still pending: deliver after it (queue order guarantees this).
                pass
            if sub.state == "Failed":
                return
        event = job.event
        if spec.schema_ == "cloudevents":
            body = json.dumps(event.to_cloudevent()).encode()
            headers = {"Content-Type": "application/cloudevents+json; charset=utf-8"}
        else:
            body = json.dumps([event.to_eventgrid()]).encode()
            headers = {
                "Content-Type": "application/json",
                "aeg-event-type": "Notification",
                "aeg-data-version": event.data_version,
                "aeg-metadata-version": event.metadata_version,
            }
        headers["aeg-subscription-name"] = spec.name.upper()
        headers["aeg-delivery-count"] = str(job.attempt - 1)
        status: int | None = None
        error: str | None = None
        try:
            status, _, _ = self._post(spec.endpoint, body, headers)
        except (OSError, urllib.error.URLError) as e:
            error = str(e)
        ok = status is not None and 200 <= status < 300
        record = DeliveryRecord(
            spec.name,
            event.id,
            event.event_type,
            job.attempt,
            status,
            error if error else (None if ok else f"HTTP {status}"),
            iso(self._host.now()) if ok else None,
        )
        with self._lock:
            self.deliveries.append(record)
            if len(self.deliveries) > self._log_limit:
                del self.deliveries[: len(self.deliveries) - self._log_limit]
            if ok:
                sub.delivered += 1
                self.stats.delivered += 1
                return
            sub.failed_attempts += 1
            self.stats.failed_attempts += 1
            if job.attempt >= spec.max_attempts:
                self.stats.dead_lettered += 1
                self.dead_letters.append(record)
                log.warning("event %s to %s dead-lettered: %s", event.id, spec.name, record.error)
                return
        delay = RETRY_SCHEDULE[min(job.attempt - 1, len(RETRY_SCHEDULE) - 1)]
        retry = _Job(job.sub_name, event, job.attempt + 1)
        self._host.schedule_call(
            timedelta(seconds=delay),
            lambda: self._enqueue(retry),
            f"eventgrid-retry:{spec.name}",
        )

    def _validate(self, sub: _Subscription) -> None:
        spec = sub.spec
        code = self._host.new_id()
        ok = False
        try:
            if spec.schema_ == "cloudevents":
                _, _, headers = self._post(
                    spec.endpoint,
                    b"",
                    {"WebHook-Request-Origin": "eventgrid.azure.net"},
                    method="OPTIONS",
                )
                allowed = {k.lower(): v for k, v in headers.items()}.get(
                    "webhook-allowed-origin", ""
                )
                ok = allowed in ("*", "eventgrid.azure.net")
            else:
                event = {
                    "id": self._host.new_id(),
                    "topic": "/emulator",
                    "subject": "",
                    "data": {"validationCode": code, "validationUrl": None},
                    "eventType": VALIDATION_EVENT,
                    "eventTime": iso(self._host.now()),
                    "metadataVersion": "1",
                    "dataVersion": "2",
                }
                status, body, _ = self._post(
                    spec.endpoint,
                    json.dumps([event]).encode(),
                    {
                        "Content-Type": "application/json",
                        "aeg-event-type": "SubscriptionValidation",
                    },
                )
                if 200 <= status < 300:
                    answer = json.loads(body or b"{}")
                    ok = isinstance(answer, dict) and answer.get("validationResponse") == code
        except (OSError, ValueError) as e:
            log.warning("validation handshake with %s failed: %s", spec.endpoint, e)
        with self._lock:
            sub.state = "Succeeded" if ok else "Failed"
