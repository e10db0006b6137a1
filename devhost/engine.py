"""The orchestration engine: the Durable Task host's job, done locally over a durable store.

It runs the app's orchestrators through the real ``azure-functions-durable`` SDK exactly as the
Functions host does over the out-of-process protocol: each *episode* sends the whole history
(old events with ``IsPlayed``, then ``OrchestratorStarted`` and the new events), reads back the
SDK's state (``isDone``/``actions``/``output``/``error``/``customStatus``, schema V2: one
append-only action list) and turns new actions into history events and work: activity calls on a
worker pool, sub-orchestrations, durable timers due in *host time* (``clock.now()``), external
event waits, continue-as-new. Everything an episode changes is one store commit (write-ahead), so
a killed process resumes every in-flight orchestration on :meth:`Engine.start`.

Sequence numbers follow the SDK's own allocation: every yielded task takes the next id in the
order of the action list (compound actions flattened, external-event waits take none); a failed
attempt of a ``*WithRetry`` call takes one more id for its back-off timer and, when that timer
fires with attempts left, one for the rescheduled attempt. Those retry events are always placed
first among an episode's new events, so the ids the SDK allocates while replaying them are known
before the user code resumes. A replay that schedules something else than the history at the
same position fails the instance as non-deterministic.

Retries (``*WithRetry``): in SDK 1.7 the SDK counts the attempts itself and expects, after
*every* failed attempt (the last one too), a back-off timer to fire before it either schedules
the next attempt or raises the last error; so ``maxNumberOfAttempts`` attempts and as many
timers. The engine times the back-off as DTFx does: ``firstRetryIntervalInMilliseconds``, times
``backoffCoefficient ** (attempt - 1)`` and capped at ``maxRetryIntervalInMilliseconds`` when a
client sends those (1.7's ``RetryOptions`` does not). ``retryTimeoutInMilliseconds`` is not
honoured: DTFx would then give up without the timer, which leaves the 1.7 SDK waiting forever.

External events are matched to waits case-insensitively; an event nobody waits for yet is kept
within the execution and delivered, oldest first, once a wait for its name is scheduled. When the
execution continues as new, events it has received and not consumed are *discarded*, as the
Functions host does for the Python SDK 1.x, whose ``continue_as_new`` cannot ask to keep them
(azure-functions-durable-python#331); events raised after the continue-as-new is committed go to
the new execution. Timers the orchestrator cancels are dropped.

Durable entities follow the extension's out-of-process protocol. An entity is an instance with
the id ``@<name lowercased>@<key>`` whose row keeps the scheduler state (``exists`` and the
entity's state JSON) as its input, as the extension's entity scheduler carries it across its
continue-as-new. Operation requests (signals from clients, ``CallEntity``/``SignalEntity``
actions of orchestrations) are messages to that instance, processed one batch at a time in
arrival order: one call of the entity function gets the batch (``self``, ``exists``, ``state``,
``batch`` of ``name``/``input``/``isSignal``/``id``), its result (``entityExists``,
``entityState``, ``results``) becomes the new state and, for each call, a response to the
calling execution; state, consumed requests and responses are one store commit. An
orchestration's ``CallEntity`` is recorded as ``EventSent`` (``EventId`` = its sequence number,
``Input`` = the request with its ``id``); the response comes back as ``EventRaised`` named by
that id carrying ``{"result": ..., "exceptionType": "Error"}`` (the latter only for a failed
operation), which the SDK turns into the task's value or exception. A ``SignalEntity`` action
takes a sequence number too (``EventSent`` with that ``EventId``), as the extension's context
numbers it and SDK 1.7 counts it (``_record_fire_and_forget_action``). Durable HTTP calls are
not supported: an orchestrator that uses them fails with a message saying so.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import itertools
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from devhost import history as h
from devhost.clock import BaseClock, Participant
from devhost.functions import ACTIVITY, ENTITY, ORCHESTRATION, FunctionIndex, FunctionInfo
from devhost.invoke import (
    ActivityOutcome,
    AsyncRunner,
    install_fast_timestamps,
    run_activity,
    run_entity_batch,
    run_orchestrator,
)
from devhost.store import (
    ACTIVE_STATUSES,
    COMPLETED,
    CONTINUED_AS_NEW,
    FAILED,
    FINISHED_STATUSES,
    PENDING,
    RUNNING,
    TERMINATED,
    ActivityWork,
    Commit,
    InstanceFilter,
    InstanceRecord,
    Message,
    Store,
)

log = logging.getLogger("devhost.engine")

# ActionType numbers (azure.durable_functions.models.actions.ActionType).
CALL_ACTIVITY = 0
CALL_ACTIVITY_WITH_RETRY = 1
CALL_SUB_ORCHESTRATOR = 2
CALL_SUB_ORCHESTRATOR_WITH_RETRY = 3
CONTINUE_AS_NEW = 4
CREATE_TIMER = 5
WAIT_FOR_EXTERNAL_EVENT = 6
CALL_ENTITY = 7
CALL_HTTP = 8
SIGNAL_ENTITY = 9
WHEN_ANY = 11
WHEN_ALL = 12
ACTION_NAMES = {
    CALL_ACTIVITY: "CallActivity",
    CALL_ACTIVITY_WITH_RETRY: "CallActivityWithRetry",
    CALL_SUB_ORCHESTRATOR: "CallSubOrchestrator",
    CALL_SUB_ORCHESTRATOR_WITH_RETRY: "CallSubOrchestratorWithRetry",
    CONTINUE_AS_NEW: "ContinueAsNew",
    CREATE_TIMER: "CreateTimer",
    WAIT_FOR_EXTERNAL_EVENT: "WaitForExternalEvent",
    CALL_ENTITY: "CallEntity",
    CALL_HTTP: "CallHttp",
    SIGNAL_ENTITY: "SignalEntity",
    WHEN_ANY: "WhenAny",
    WHEN_ALL: "WhenAll",
}

# What the Functions host sends with Azure Storage: the SDK splits longer timers itself.
MAX_SHORT_TIMER = timedelta(days=6)
LONG_TIMER_INTERVAL = timedelta(days=3)

# Message kinds (pending work for an orchestrator).
MSG_START = "ExecutionStarted"
MSG_TASK_COMPLETED = "TaskCompleted"
MSG_TASK_FAILED = "TaskFailed"
MSG_SUB_COMPLETED = "SubOrchestrationInstanceCompleted"
MSG_SUB_FAILED = "SubOrchestrationInstanceFailed"
MSG_TIMER = "TimerFired"
MSG_EVENT = "EventRaised"
MSG_TERMINATE = "Terminate"
MSG_ENTITY_OP = "EntityOperation"  # a request to an entity (signal or call)
MSG_ENTITY_RESPONSE = "EntityResponse"  # an entity's answer to a calling orchestration
_RESULT_KINDS = frozenset({MSG_TASK_COMPLETED, MSG_TASK_FAILED, MSG_SUB_COMPLETED, MSG_SUB_FAILED})

# An episode cheaper than this (real seconds) is never deferred to batch more results.
DEFER_MIN_COST = 0.005


def entity_instance_id(name: str, key: str) -> str:
    """The scheduler id of an entity: ``@<name lowercased>@<key>`` (EntityId.get_scheduler_id)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("entity name must be a non-empty string")
    if not isinstance(key, str) or not key:
        raise ValueError("entity key must be a non-empty string")
    if "@" in name:
        raise ValueError(f"entity name {name!r} must not contain '@'")
    return f"@{name.lower()}@{key}"


def split_entity_id(instance_id: str) -> tuple[str, str] | None:
    """``(name, key)`` of an entity's scheduler id, None when it is no entity id."""
    if not instance_id.startswith("@"):
        return None
    name, sep, key = instance_id[1:].partition("@")
    if not sep or not name or not key:
        return None
    return name, key


class InstanceNotFoundError(LookupError):
    """No orchestration instance with that id."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        super().__init__(f"no orchestration instance with id {instance_id!r}")


class InstanceExistsError(RuntimeError):
    """An instance with that id is still Pending or Running (Durable's start dedupe)."""

    def __init__(self, instance_id: str, status: str) -> None:
        self.instance_id = instance_id
        self.status = status
        super().__init__(f"an orchestration instance with id {instance_id!r} is already {status}")


class InstanceCompletedError(RuntimeError):
    """The instance has finished (Completed, Failed or Terminated): it takes no events."""

    def __init__(self, instance_id: str, status: str) -> None:
        self.instance_id = instance_id
        self.status = status
        super().__init__(f"orchestration instance {instance_id!r} is already {status}")


def _timespan(value: timedelta) -> str:
    """A .NET ``TimeSpan.ToString("c")``: ``d.hh:mm:ss``."""
    total = int(value.total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{days}.{text}" if days else text


def _api_time(value: datetime) -> str:
    """createdTime / lastUpdatedTime as the Durable HTTP API writes them."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serializable: {exc}") from None


def _flatten(actions: Any) -> list[dict[str, Any]]:
    """The SDK's action list (schema V2: one inner list), compound actions flattened in order."""
    out: list[dict[str, Any]] = []

    def walk(items: Any) -> None:
        if not isinstance(items, list):
            return
        for item in items:
            if isinstance(item, list):
                walk(item)
            elif isinstance(item, dict):
                if item.get("actionType") in (WHEN_ANY, WHEN_ALL):
                    walk(item.get("compoundActions") or [])
                else:
                    out.append(item)

    walk(actions)
    return out


def _signature(action: dict[str, Any]) -> tuple[int, str]:
    kind = int(action.get("actionType", -1))
    if kind == WAIT_FOR_EXTERNAL_EVENT:
        return kind, str(action.get("externalEventName") or "")
    if kind in (CALL_ENTITY, SIGNAL_ENTITY):
        return kind, f"{action.get('instanceId')}:{action.get('operation')}"
    return kind, str(action.get("functionName") or "")


def _describe(signature: tuple[int, str]) -> str:
    kind, name = signature
    label = ACTION_NAMES.get(kind, f"action type {kind}")
    return f"{label} {name!r}" if name else label


@dataclass
class _Meta:
    """The engine's per-execution bookkeeping, persisted with the instance row."""

    seq: int = 0
    actions: list[tuple[int, str]] = field(default_factory=list)
    last_started: str | None = None
    open: dict[int, str] = field(default_factory=dict)
    timers: dict[int, int] = field(default_factory=dict)  # timer id -> message id
    action_timers: dict[int, int] = field(default_factory=dict)  # action index -> timer id
    chains: dict[int, dict[str, Any]] = field(default_factory=dict)
    chain_of: dict[int, int] = field(default_factory=dict)  # attempt or retry-timer id -> chain
    waits: dict[str, int] = field(default_factory=dict)
    delivered: dict[str, int] = field(default_factory=dict)
    wait_names: dict[str, str] = field(default_factory=dict)
    buffer: list[dict[str, Any]] = field(default_factory=list)
    entity_calls: dict[str, int] = field(default_factory=dict)  # request id -> task id

    def to_json(self) -> str:
        return json.dumps(
            {
                "seq": self.seq,
                "actions": [list(a) for a in self.actions],
                "last_started": self.last_started,
                "open": {str(k): v for k, v in self.open.items()},
                "timers": {str(k): v for k, v in self.timers.items()},
                "action_timers": {str(k): v for k, v in self.action_timers.items()},
                "chains": {str(k): v for k, v in self.chains.items()},
                "chain_of": {str(k): v for k, v in self.chain_of.items()},
                "waits": self.waits,
                "delivered": self.delivered,
                "wait_names": self.wait_names,
                "buffer": self.buffer,
                "entity_calls": self.entity_calls,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> _Meta:
        raw: dict[str, Any] = json.loads(text or "{}")

        def ints(key: str) -> dict[int, Any]:
            return {int(k): v for k, v in (raw.get(key) or {}).items()}

        return cls(
            seq=int(raw.get("seq", 0)),
            actions=[(int(a[0]), str(a[1])) for a in raw.get("actions", [])],
            last_started=raw.get("last_started"),
            open={k: str(v) for k, v in ints("open").items()},
            timers={k: int(v) for k, v in ints("timers").items()},
            action_timers={k: int(v) for k, v in ints("action_timers").items()},
            chains=ints("chains"),
            chain_of={k: int(v) for k, v in ints("chain_of").items()},
            waits=dict(raw.get("waits") or {}),
            delivered=dict(raw.get("delivered") or {}),
            wait_names=dict(raw.get("wait_names") or {}),
            buffer=list(raw.get("buffer") or []),
            entity_calls={str(k): int(v) for k, v in (raw.get("entity_calls") or {}).items()},
        )


@dataclass
class _Runtime:
    """An instance as the dispatcher works on it: the row, its bookkeeping, its encoded history."""

    record: InstanceRecord
    meta: _Meta
    parts: list[str]  # history events, encoded with IsPlayed: true
    cost: float = 0.0  # real seconds the last episode spent in the SDK
    outstanding: int = 0  # activity and sub-orchestration results still to come


@dataclass
class _Episode:
    """What one episode decides, before it is committed."""

    commit: Commit
    runtime: _Runtime | None = None
    messages: list[Message] = field(default_factory=list)  # committed with it, to admit after
    activities: list[ActivityWork] = field(default_factory=list)
    cancelled_timers: list[int] = field(default_factory=list)
    children: set[str] = field(default_factory=set)
    forget: list[str] = field(default_factory=list)  # replaced child instances
    evict: bool = False


class Engine:
    """Runs orchestrations of one app over a :class:`~devhost.store.Store` in host time."""

    def __init__(
        self,
        index: FunctionIndex,
        store: Store,
        clock: BaseClock,
        *,
        activity_workers: int = 8,
        name: str = "devhost",
        max_short_timer: timedelta = MAX_SHORT_TIMER,
        long_timer_interval: timedelta = LONG_TIMER_INTERVAL,
        directory: str = ".",
        fast_timestamps: bool = True,
    ) -> None:
        if activity_workers < 1:
            raise ValueError(f"activity_workers must be at least 1, got {activity_workers}")
        self.index = index
        self.store = store
        self.clock = clock
        self.name = name
        self.activity_workers = activity_workers
        self.directory = directory
        self._timer_settings = (
            f'"maximumShortTimerDuration":"{_timespan(max_short_timer)}",'
            f'"longRunningTimerIntervalDuration":"{_timespan(long_timer_interval)}"'
        )
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._inbox: dict[str, list[Message]] = {}
        self._ready: deque[str] = deque()
        self._queued: set[str] = set()
        self._timers: list[tuple[datetime, int, Message]] = []
        self._cancelled: set[int] = set()
        self._runtimes: dict[str, _Runtime] = {}
        self._epoch: dict[str, int] = {}
        self._work = 0  # inbox messages (incl. the running episode's) + unfinished activities
        self._errors: dict[str, int] = {}
        self._deferred: dict[str, float] = {}  # instance -> real deadline (time.monotonic)
        self._results_lock = threading.Lock()
        self._results: list[tuple[ActivityWork, Message]] = []  # awaiting their group commit
        self._committing = False
        self._ids: Iterator[int] = itertools.count(store.max_id() + 1)
        self._wake = threading.Event()
        self._sleeping = False
        self._stopping = False
        self._closed = False
        self._started = False
        self._dispatcher: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._runner = AsyncRunner()
        self.episodes = 0  # episodes run (benchmarks, tests)
        # Called on the dispatcher thread after each committed episode or entity batch, with the
        # instance id (tests use it to act at an exact step; the dispatcher waits for it).
        self.on_step: Callable[[str], None] | None = None
        self.activity_calls = 0
        if fast_timestamps:
            install_fast_timestamps()
        self.participant: Participant = clock.participant(name, self._next_due)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the dispatcher and the activity pool; resume all in-flight work in the store."""
        with self._lock:
            if self._started:
                return
            with self.participant.busy():
                # Work committed before start() is only in the store: load it all, once.
                self._started = True
                self._pool = ThreadPoolExecutor(
                    max_workers=self.activity_workers, thread_name_prefix=f"{self.name}-activity"
                )
                messages = self.store.messages()
                works = self.store.activities()
                for message in messages:
                    self._admit(message)
                for work in works:
                    self._submit(work)
                self._dispatcher = threading.Thread(
                    target=self._dispatch_loop, name=f"{self.name}-dispatcher", daemon=True
                )
                self._dispatcher.start()
        if messages or works:
            log.info(
                "engine %s resumed %d pending message(s) and %d activity call(s)",
                self.name,
                len(messages),
                len(works),
            )

    def stop(self, wait: bool = True) -> None:
        """Stop dispatching; running activities finish when ``wait``; queued work stays stored."""
        with self._lock:
            if not self._started or self._stopping:
                self.participant.close()
                return
            self._stopping = True
        self._signal()
        if self._dispatcher is not None:
            self._dispatcher.join(timeout=None if wait else 5.0)
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
        with self._lock:
            # From here on nothing touches the store (its owner may close it next); an
            # activity still finishing is re-run on the next start (at least once).
            self._closed = True
            self._changed.notify_all()
        self._runner.close()
        self.participant.close()

    # -- the public API -------------------------------------------------------------------------
    def start_new(
        self,
        orchestrator: str,
        instance_id: str | None = None,
        input: Any = None,
        *,
        input_json: str | None = None,
    ) -> str:
        """Schedule a new instance (Pending until its first episode); returns its id."""
        info = self._lookup(orchestrator, ORCHESTRATION)
        if instance_id is not None and not instance_id.strip():
            raise ValueError("instance_id must not be empty")
        instance_id = instance_id or uuid.uuid4().hex
        if input_json is None and input is not None:
            input_json = _dumps(input, "input")
        with self._lock:
            existing = self.store.get_instance(instance_id)
            if existing is not None and existing.status in ACTIVE_STATUSES:
                raise InstanceExistsError(instance_id, existing.status)
            now = self.clock.now()
            commit = Commit()
            start = self._create_instance(
                commit, info.name, instance_id, input_json, now, replacing=existing is not None
            )
            self.store.commit(commit)
            self._forget(instance_id)
            self._admit(start)
            self._changed.notify_all()
        self._signal()
        return instance_id

    def get_status(
        self,
        instance_id: str,
        *,
        show_history: bool = False,
        show_history_output: bool = False,
        show_input: bool = True,
    ) -> dict[str, Any] | None:
        """The Durable HTTP API status of an instance, or None when there is none."""
        record = self.store.get_instance(instance_id)
        if record is None:
            return None
        status = self._status(record, show_input=show_input)
        if show_history:
            events = [json.loads(text) for text in self.store.history(instance_id)]
            status["historyEvents"] = h.status_history(events, show_history_output)
        return status

    def query(
        self,
        *,
        runtime_status: Collection[str] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        instance_id_prefix: str | None = None,
        top: int | None = None,
        continuation: str | None = None,
        show_input: bool = False,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Instances by status, creation time and id prefix, oldest first, ``top`` per page."""
        if top is not None and top < 1:
            raise ValueError(f"top must be a positive integer, got {top}")
        after = _decode_token(continuation) if continuation else None
        where = InstanceFilter(
            statuses=set(runtime_status) if runtime_status else None,
            created_from=created_from,
            created_to=created_to,
            prefix=instance_id_prefix or None,
        )
        limit = None if top is None else top + 1
        records = self.store.query_instances(where, after, limit)
        token = None
        if top is not None and len(records) > top:
            records = records[:top]
            last = records[-1]
            token = _encode_token(h.iso(last.created), last.instance_id)
        return [self._status(r, show_input=show_input) for r in records], token

    def raise_event(self, instance_id: str, event_name: str, data: Any = None) -> None:
        """Deliver an external event (kept until the orchestrator waits for that name)."""
        if not isinstance(event_name, str) or not event_name.strip():
            raise ValueError("event_name must be a non-empty string")
        payload = json.dumps({"Name": event_name, "Input": _dumps(data, "event data")})
        self._send_to_instance(instance_id, MSG_EVENT, payload)

    def signal_entity(
        self, name: str, key: str, operation: str, input_json: str | None = None
    ) -> None:
        """Queue a one-way operation on an entity (created on first use), as a client signals.

        ``input_json`` is the operation input as the extension stores it in the request (the
        JSON of the value the client posted); None when the client sent no body.
        """
        self._lookup_entity(name)
        instance_id = entity_instance_id(name, key)
        request = {
            "op": str(operation or ""),
            "signal": True,
            "input": input_json,
            "id": str(uuid.uuid4()),
            "parent": None,
            "parentExecution": None,
        }
        with self._lock:
            message = self._message(instance_id, MSG_ENTITY_OP, json.dumps(request))
            self.store.commit(Commit(add_messages=[message]))
            self._admit(message)
        self._signal()

    def read_entity(self, name: str, key: str) -> tuple[bool, str | None]:
        """Whether the entity exists, and its state JSON (what ``read_entity_state`` reads)."""
        record = self.store.get_instance(entity_instance_id(name, key))
        if record is None:
            return False, None
        scheduler = _loads(record.input) or {}
        if not isinstance(scheduler, dict) or not scheduler.get("exists"):
            return False, None
        state = scheduler.get("state")
        return True, state if isinstance(state, str) else None

    def terminate(self, instance_id: str, reason: str | None = None) -> None:
        """Terminate a Pending or Running instance (InstanceCompletedError once it finished)."""
        self._send_to_instance(instance_id, MSG_TERMINATE, json.dumps({"Reason": reason}))

    def purge(self, instance_id: str) -> bool:
        """Delete an instance, its history and its pending work; False when there is none."""
        with self._lock:
            if self.store.get_instance(instance_id) is None:
                return False
            self._purge_locked([instance_id])
        return True

    def purge_many(
        self,
        *,
        runtime_status: Collection[str] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> int:
        """Purge every instance matching the filter; the number purged."""
        where = InstanceFilter(
            statuses=set(runtime_status) if runtime_status else None,
            created_from=created_from,
            created_to=created_to,
        )
        with self._lock:
            found = [r.instance_id for r in self.store.query_instances(where, None, None)]
            if found:
                self._purge_locked(found)
        return len(found)

    def wait_for(
        self,
        instance_id: str,
        real_timeout: float = 30.0,
        statuses: Collection[str] = ("Completed", "Failed", "Terminated"),
    ) -> dict[str, Any]:
        """Block until the instance reaches one of ``statuses`` (real seconds); its status.

        An instance that does not exist (yet: a sub-orchestration, say) is waited for too;
        InstanceNotFoundError if it never appears, TimeoutError if it never gets there.
        """
        deadline = time.monotonic() + real_timeout
        with self._changed:
            while True:
                status = self.get_status(instance_id)
                if status is not None and status["runtimeStatus"] in statuses:
                    return status
                left = deadline - time.monotonic()
                if left <= 0 and status is None:
                    raise InstanceNotFoundError(instance_id)
                if left <= 0 and status is not None:
                    raise TimeoutError(
                        f"instance {instance_id!r} is still {status['runtimeStatus']} after "
                        f"{real_timeout} s (waiting for {', '.join(statuses)})"
                    )
                self._changed.wait(min(left, 0.25))

    def wait_idle(self, real_timeout: float = 30.0) -> None:
        """Block until nothing is queued or running (timers not yet due do not count)."""
        deadline = time.monotonic() + real_timeout
        with self._changed:
            while self._work > 0 or self._has_due_timer():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"engine {self.name} still busy after {real_timeout} s")
                self._changed.wait(min(left, 0.25))

    # -- bookkeeping helpers ----------------------------------------------------------------------
    def _lookup(self, name: str, kind: str) -> FunctionInfo:
        """A function by name, case-insensitively as the Functions host resolves names."""
        if self.index.has(name, kind):
            return self.index.get(name, kind)
        lowered = name.lower()
        for info in self.index.of_type(kind):
            if info.name.lower() == lowered:
                return info
        return self.index.get(name, kind)  # raises UnknownFunctionError listing the known ones

    def _lookup_entity(self, name: str) -> FunctionInfo:
        """The entity function serving entity ``name`` (its trigger's ``entityName`` or, without
        one, the function name), case-insensitively as entity ids are."""
        lowered = name.lower()
        for info in self.index.of_type(ENTITY):
            if entity_name_of(info).lower() == lowered:
                return info
        return self.index.get(name, ENTITY)  # raises UnknownFunctionError listing the known ones

    def _missing(self, name: str, kind: str) -> str:
        """The host's message for a call to a function the app does not define."""
        what = {ACTIVITY: "activity", ENTITY: "entity"}.get(kind, "orchestrator")
        known = ", ".join(f.name for f in self.index.of_type(kind)) or "none"
        return (
            f"The function '{name}' doesn't exist, is disabled, or is not an {what} function. "
            f"Additional info: the app's {what} functions are: {known}."
        )

    def _status(self, record: InstanceRecord, *, show_input: bool) -> dict[str, Any]:
        return {
            "name": record.name,
            "instanceId": record.instance_id,
            "runtimeStatus": record.status,
            "input": _loads(record.input) if show_input else None,
            "customStatus": _loads(record.custom_status),
            "output": _loads(record.output),
            "createdTime": _api_time(record.created),
            "lastUpdatedTime": _api_time(record.updated),
        }

    def _message(
        self,
        instance_id: str,
        kind: str,
        payload: str,
        *,
        execution_id: str | None = None,
        due: datetime | None = None,
        at: datetime | None = None,
    ) -> Message:
        return Message(
            msg_id=next(self._ids),
            instance_id=instance_id,
            kind=kind,
            execution_id=execution_id,
            due=due,
            payload=payload,
            created=at if at is not None else self.clock.now(),
        )

    def _create_instance(
        self,
        commit: Commit,
        name: str,
        instance_id: str,
        input_json: str | None,
        now: datetime,
        *,
        replacing: bool,
        parent: InstanceRecord | None = None,
        parent_task_id: int | None = None,
    ) -> Message:
        """Add a fresh Pending instance and its ExecutionStarted message to ``commit``."""
        execution_id = uuid.uuid4().hex
        record = InstanceRecord(
            instance_id=instance_id,
            name=name,
            execution_id=execution_id,
            status=PENDING,
            created=now,
            updated=now,
            input=input_json,
            parent_instance_id=None if parent is None else parent.instance_id,
            parent_execution_id=None if parent is None else parent.execution_id,
            parent_task_id=parent_task_id,
            parent_name=None if parent is None else parent.name,
            meta=_Meta().to_json(),
        )
        commit.instances.append(record)
        commit.history_reset.append(instance_id)
        if replacing:
            commit.delete_instance_messages.append(instance_id)
        start = self._message(instance_id, MSG_START, "{}", execution_id=execution_id, at=now)
        commit.add_messages.append(start)
        return start

    def _forget(self, instance_id: str) -> None:
        """Drop cached state and pending in-memory work of an instance (lock held)."""
        self._epoch[instance_id] = self._epoch.get(instance_id, 0) + 1
        self._runtimes.pop(instance_id, None)
        dropped = self._inbox.pop(instance_id, None)
        if dropped:
            self._done_work(len(dropped))
        self._queued.discard(instance_id)
        self._deferred.pop(instance_id, None)
        for _, msg_id, message in self._timers:
            if message.instance_id == instance_id:
                self._cancelled.add(msg_id)
        self.participant.notify()

    def _purge_locked(self, instance_ids: list[str]) -> None:
        self.store.commit(Commit(purge_instances=list(instance_ids)))
        for instance_id in instance_ids:
            self._forget(instance_id)
        self._changed.notify_all()

    def _send_to_instance(self, instance_id: str, kind: str, payload: str) -> None:
        with self._lock:
            record = self.store.get_instance(instance_id)
            if record is None:
                raise InstanceNotFoundError(instance_id)
            if record.status in FINISHED_STATUSES:
                raise InstanceCompletedError(instance_id, record.status)
            message = self._message(instance_id, kind, payload)
            self.store.commit(Commit(add_messages=[message]))
            self._admit(message)
        self._signal()

    def _admit(self, message: Message) -> None:
        """Queue a committed message in memory (lock held): a timer waits for its due time."""
        if not self._started:
            return  # start() loads it from the store
        if message.due is not None and message.kind == MSG_TIMER:
            heapq.heappush(self._timers, (message.due, message.msg_id, message))
            self.participant.notify()
            return
        self.participant.enter()
        self._work += 1
        self._inbox.setdefault(message.instance_id, []).append(message)
        if message.instance_id not in self._queued:
            self._queued.add(message.instance_id)
            self._ready.append(message.instance_id)

    def _done_work(self, count: int = 1) -> None:
        """``count`` units of queued or running work are finished (lock held)."""
        for _ in range(count):
            self._work -= 1
            self.participant.leave()
        if self._work == 0:
            self._changed.notify_all()

    def _cancel_timers(self, msg_ids: Collection[int]) -> None:
        self._cancelled.update(msg_ids)
        self.participant.notify()

    def _prune_timers(self) -> None:
        while self._timers and self._timers[0][1] in self._cancelled:
            _, msg_id, _ = heapq.heappop(self._timers)
            self._cancelled.discard(msg_id)

    def _next_due(self) -> datetime | None:
        with self._lock:
            self._prune_timers()
            return self._timers[0][0] if self._timers else None

    def _has_due_timer(self) -> bool:
        self._prune_timers()
        return bool(self._timers) and self._timers[0][0] <= self.clock.now()

    def _release_due_timers(self) -> None:
        now = self.clock.now()
        while True:
            self._prune_timers()
            if not self._timers or self._timers[0][0] > now:
                return
            _, _, message = self._timers[0]
            # Busy first, then leave the heap: the clock never sees this timer as neither.
            self.participant.enter()
            self._work += 1
            heapq.heappop(self._timers)
            self._inbox.setdefault(message.instance_id, []).append(message)
            if message.instance_id not in self._queued:
                self._queued.add(message.instance_id)
                self._ready.append(message.instance_id)

    def _signal(self) -> None:
        self._wake.set()
        if self._sleeping:
            self.clock.notify()

    # -- the dispatcher -------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while True:
            self._wake.clear()
            with self._lock:
                if self._stopping:
                    return
                self._release_due_timers()
                self._release_deferred()
                instance_id: str | None = None
                messages: list[Message] = []
                while self._ready:
                    candidate = self._ready.popleft()
                    self._queued.discard(candidate)
                    messages = self._inbox.pop(candidate, [])
                    if not messages:
                        continue
                    if self._defer(candidate, messages):
                        self._inbox[candidate] = messages + self._inbox.get(candidate, [])
                        continue
                    instance_id = candidate
                    self._deferred.pop(candidate, None)
                    break
                due: datetime | None = None
                epoch = 0
                real_timeout = 1.0
                if instance_id is None:
                    self._prune_timers()
                    due = self._timers[0][0] if self._timers else None
                    if self._deferred:
                        left = min(self._deferred.values()) - time.monotonic()
                        real_timeout = min(real_timeout, max(left, 0.0))
                    self._sleeping = True
                else:
                    epoch = self._epoch.get(instance_id, 0)
            if instance_id is None:
                try:
                    if getattr(self.clock, "closed", False):
                        time.sleep(0.05)
                    else:
                        self.clock.wait_until(due, wake=self._wake, real_timeout=real_timeout)
                finally:
                    self._sleeping = False
                continue
            try:
                self._run_episode(instance_id, messages, epoch)
            except Exception as exc:
                log.exception(
                    "engine %s: episode of %s failed in the engine", self.name, instance_id
                )
                self._engine_error(instance_id, messages, epoch, exc)

    def _defer(self, instance_id: str, messages: list[Message]) -> bool:
        """Hold back an expensive replay while more results of a fan-out are on their way.

        The SDK replays the whole history every episode, so an orchestration waiting for many
        activities or sub-orchestrations would replay once per result. When its last episode
        was expensive and only results are pending (no event, timer or terminate), its next
        episode waits for more results, at most twice the last episode's cost (real time):
        replays then take at most about a third of the time. Semantics are unchanged.
        """
        runtime = self._runtimes.get(instance_id)
        if runtime is None or runtime.cost < DEFER_MIN_COST:
            return False
        if runtime.outstanding - len(messages) <= 0:
            return False
        if any(m.kind not in _RESULT_KINDS for m in messages):
            return False
        deadline = self._deferred.setdefault(instance_id, time.monotonic() + 2 * runtime.cost)
        return time.monotonic() < deadline

    def _release_deferred(self) -> None:
        """Deferred instances whose time is up go back to the ready queue (lock held)."""
        if not self._deferred:
            return
        now = time.monotonic()
        for instance_id, deadline in list(self._deferred.items()):
            if deadline <= now and instance_id not in self._queued:
                if self._inbox.get(instance_id):
                    self._queued.add(instance_id)
                    self._ready.append(instance_id)
                else:
                    del self._deferred[instance_id]

    def _engine_error(
        self, instance_id: str, messages: list[Message], epoch: int, exc: Exception
    ) -> None:
        """An engine bug or a store error: retry the messages, fail the instance the 3rd time."""
        with self._lock:
            self._runtimes.pop(instance_id, None)
            errors = self._errors.get(instance_id, 0) + 1
            self._errors[instance_id] = errors
            if errors < 3 or self._epoch.get(instance_id, 0) != epoch:
                self._inbox[instance_id] = messages + self._inbox.get(instance_id, [])
                if instance_id not in self._queued:
                    self._queued.add(instance_id)
                    self._ready.append(instance_id)
                return
            self._errors.pop(instance_id, None)
            record = self.store.get_instance(instance_id)
            commit = Commit(delete_messages=[m.msg_id for m in messages])
            if record is not None and record.status not in FINISHED_STATUSES:
                text = f"the devhost engine failed to run this orchestration: {exc}"
                now = self.clock.now()
                commit.instances.append(
                    replace(record, status=FAILED, output=json.dumps(text), updated=now)
                )
            try:
                self.store.commit(commit)
            finally:
                self._done_work(len(messages))
                self._changed.notify_all()

    def _run_episode(self, instance_id: str, messages: list[Message], epoch: int) -> None:
        messages.sort(key=lambda m: m.msg_id)
        if split_entity_id(instance_id) is not None:
            self._run_entity_batch(instance_id, messages, epoch)
            return
        runtime = self._load_runtime(instance_id)
        if runtime is None or runtime.record.status in FINISHED_STATUSES:
            episode = _Episode(commit=Commit(delete_messages=[m.msg_id for m in messages]))
            episode.evict = True
        else:
            episode = self._episode(runtime, messages)
        with self._lock:
            if self._epoch.get(instance_id, 0) != epoch:
                # Purged or replaced meanwhile: its messages went with it.
                self._done_work(len(messages))
                return
            self.store.commit(episode.commit)
            self._errors.pop(instance_id, None)
            self.episodes += 1
            if episode.evict or episode.runtime is None:
                self._runtimes.pop(instance_id, None)
            else:
                runtime = episode.runtime
                runtime.outstanding = sum(
                    1 for kind in runtime.meta.open.values() if kind in ("activity", "sub")
                )
                self._runtimes[instance_id] = runtime
            for child in episode.forget:
                self._forget(child)
            if episode.cancelled_timers:
                self._cancel_timers(episode.cancelled_timers)
            for message in episode.messages:
                self._admit(message)
            for work in episode.activities:
                self._submit(work)
            self._done_work(len(messages))
            self._changed.notify_all()
        if episode.messages:
            self._signal()
        self._stepped(instance_id)

    # -- entities -------------------------------------------------------------------------------
    def _run_entity_batch(self, instance_id: str, messages: list[Message], epoch: int) -> None:
        """One batch of an entity: every queued request, in arrival order, in one function call."""
        name, key = split_entity_id(instance_id) or ("", "")
        requests: list[dict[str, Any]] = []
        for m in messages:
            if m.kind == MSG_ENTITY_OP:
                requests.append(json.loads(m.payload))
            else:
                log.warning("entity %s: ignored a message of kind %s", instance_id, m.kind)
        record = self.store.get_instance(instance_id)
        scheduler: dict[str, Any] = {"exists": False, "state": None}
        if record is not None and isinstance(_loads(record.input), dict):
            scheduler = dict(_loads(record.input))
        now = self.clock.now()
        commit = Commit(delete_messages=[m.msg_id for m in messages])
        results: list[dict[str, Any]] = []
        function_name = name
        try:
            info = self._lookup_entity(name)
        except LookupError:
            error = self._missing(name, ENTITY)
            results = [{"isError": True, "result": json.dumps(error)} for _ in requests]
        else:
            function_name = info.name
            if requests:
                results = self._entity_results(info, name, key, scheduler, requests)
        responses: list[Message] = []
        for request, result in zip(requests, results, strict=True):
            parent = request.get("parent")
            if request.get("signal") or not parent:
                if result.get("isError"):
                    log.warning(
                        "entity %s: signalled operation %r failed: %s",
                        instance_id,
                        request.get("op"),
                        result.get("result"),
                    )
                continue
            response: dict[str, Any] = {"result": result.get("result")}
            if result.get("isError"):
                response["exceptionType"] = "Error"
            responses.append(
                self._message(
                    str(parent),
                    MSG_ENTITY_RESPONSE,
                    json.dumps({"Name": request.get("id"), "Input": json.dumps(response)}),
                    execution_id=request.get("parentExecution"),
                    at=now,
                )
            )
        commit.add_messages.extend(responses)
        if record is None:
            record = InstanceRecord(
                instance_id=instance_id,
                name=function_name,
                execution_id=uuid.uuid4().hex,
                status=RUNNING,
                created=now,
                updated=now,
            )
        commit.instances.append(
            replace(record, status=RUNNING, updated=now, input=json.dumps(scheduler))
        )
        with self._lock:
            if self._epoch.get(instance_id, 0) != epoch:
                self._done_work(len(messages))
                return
            self.store.commit(commit)
            self._errors.pop(instance_id, None)
            self.episodes += 1
            for message in responses:
                self._admit(message)
            self._done_work(len(messages))
            self._changed.notify_all()
        if responses:
            self._signal()
        self._stepped(instance_id)

    def _entity_results(
        self,
        info: FunctionInfo,
        name: str,
        key: str,
        scheduler: dict[str, Any],
        requests: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Run the batch through the entity function; update ``scheduler``; one result each."""
        batch = [
            {
                "name": r.get("op"),
                "input": r.get("input"),
                "isSignal": bool(r.get("signal")),
                "id": r.get("id"),
            }
            for r in requests
        ]
        request_json = json.dumps(
            {
                "self": {"name": name, "key": key},
                "exists": bool(scheduler.get("exists")),
                "state": scheduler.get("state"),
                "batch": batch,
            }
        )
        outcome = run_entity_batch(info, request_json)
        if outcome.result is None:
            # The function itself failed (not one operation): every operation fails with it,
            # the state stays as it was.
            text = json.dumps(f"the entity function '{info.name}' failed: {outcome.error}")
            return [{"isError": True, "result": text} for _ in requests]
        raw: list[Any] = list(outcome.result.get("results") or [])
        results: list[dict[str, Any]] = []
        for position in range(len(requests)):
            item = raw[position] if position < len(raw) else None
            if not isinstance(item, dict):
                item = {"isError": True, "result": json.dumps("the entity returned no result")}
            results.append(item)
        exists = bool(outcome.result.get("entityExists"))
        state = outcome.result.get("entityState") if exists else None
        scheduler["exists"] = exists
        scheduler["state"] = state if isinstance(state, str) or state is None else json.dumps(state)
        return results

    def _stepped(self, instance_id: str) -> None:
        hook = self.on_step
        if hook is None:
            return
        with self._lock:  # the hook is work: wait_idle waits for it, the clock stands still
            self._work += 1
            self.participant.enter()
        try:
            hook(instance_id)
        except Exception:
            log.exception("engine %s: the step hook failed", self.name)
        finally:
            with self._lock:
                self._done_work()

    def _load_runtime(self, instance_id: str) -> _Runtime | None:
        runtime = self._runtimes.get(instance_id)
        if runtime is not None:
            return runtime
        record = self.store.get_instance(instance_id)
        if record is None:
            return None
        return _Runtime(
            record=record, meta=_Meta.from_json(record.meta), parts=self.store.history(instance_id)
        )

    # -- one episode ----------------------------------------------------------------------------
    def _episode(self, runtime: _Runtime, messages: list[Message]) -> _Episode:
        """Decide an episode: deliver the messages, run the orchestrator, turn actions to work."""
        record = runtime.record
        meta = runtime.meta
        episode = _Episode(
            commit=Commit(delete_messages=[m.msg_id for m in messages]), runtime=runtime
        )
        current = [
            m for m in messages if m.execution_id is None or m.execution_id == record.execution_id
        ]
        now = self.clock.now()
        if meta.last_started is not None:
            now = max(now, h.parse_iso(meta.last_started))
        for m in current:
            if m.kind == MSG_TIMER and m.due is not None:
                now = max(now, m.due)

        terminate = next((m for m in current if m.kind == MSG_TERMINATE), None)
        if terminate is not None:
            reason = json.loads(terminate.payload).get("Reason")
            self._finish(
                episode,
                now,
                [h.orchestrator_started(now), h.execution_terminated(now, json.dumps(reason))],
                status=TERMINATED,
                output_json=json.dumps(reason),
                failure_reason=(
                    f"Orchestration '{record.name}' ({record.instance_id}) was terminated: "
                    f"{reason or 'no reason given'}"
                ),
            )
            return episode

        starting = any(m.kind == MSG_START for m in current)
        if not starting and not runtime.parts:
            # Not started yet (no history): keep early events, nothing else can apply.
            for m in current:
                if m.kind == MSG_EVENT:
                    meta.buffer.append(self._buffered(m))
            self._save(episode, record, meta, now, appended=[])
            return episode

        # Phase 1: new events. Retry bookkeeping events first: the SDK takes ids for them.
        allocating: list[tuple[h.Event, int, str]] = []  # event, chain key, "timer"|"retry"
        others: list[h.Event] = []
        for m in current:
            if m.kind == MSG_START:
                continue
            payload: dict[str, Any] = json.loads(m.payload)
            if m.kind == MSG_EVENT:
                delivered = self._deliver(meta, m, payload)
                if delivered is not None:
                    others.append(delivered)
            elif m.kind == MSG_ENTITY_RESPONSE:
                request_id = str(payload.get("Name"))
                task_id = meta.entity_calls.pop(request_id, None)
                if task_id is None or meta.open.pop(task_id, None) is None:
                    log.warning("%s: dropped an entity response to %s", m.instance_id, request_id)
                    continue
                others.append(h.event_raised(m.created, request_id, payload.get("Input")))
            elif m.kind in (MSG_TASK_COMPLETED, MSG_SUB_COMPLETED):
                task_id = int(payload["TaskScheduledId"])
                if meta.open.pop(task_id, None) is None:
                    log.warning("%s: dropped a result for unknown task %s", m.instance_id, task_id)
                    continue
                chain_key = meta.chain_of.pop(task_id, None)
                if chain_key is not None:
                    meta.chains.pop(chain_key, None)
                if m.kind == MSG_TASK_COMPLETED:
                    others.append(h.task_completed(m.created, task_id, payload.get("Result")))
                else:
                    others.append(
                        h.sub_orchestration_completed(m.created, task_id, payload.get("Result"))
                    )
            elif m.kind in (MSG_TASK_FAILED, MSG_SUB_FAILED):
                task_id = int(payload["TaskScheduledId"])
                if meta.open.pop(task_id, None) is None:
                    log.warning("%s: dropped a failure for unknown task %s", m.instance_id, task_id)
                    continue
                reason = str(payload.get("Reason"))
                details = payload.get("Details")
                if m.kind == MSG_TASK_FAILED:
                    event = h.task_failed(m.created, task_id, reason, details)
                else:
                    event = h.sub_orchestration_failed(m.created, task_id, reason, details)
                chain_key = meta.chain_of.pop(task_id, None)
                if chain_key is None:
                    others.append(event)
                else:
                    allocating.append((event, chain_key, "timer"))
            elif m.kind == MSG_TIMER:
                timer_id = int(payload["TimerId"])
                if meta.open.pop(timer_id, None) is None:
                    continue  # cancelled, or from before a restart of this execution
                meta.timers.pop(timer_id, None)
                event = h.timer_fired(now, timer_id, h.parse_iso(str(payload["FireAt"])))
                chain_key = meta.chain_of.pop(timer_id, None)
                if chain_key is None:
                    others.append(event)
                    continue
                chain = meta.chains[chain_key]
                if int(chain["attempts"]) >= int(chain["max"]):
                    meta.chains.pop(chain_key, None)  # the SDK fails the task with its last error
                    others.append(event)
                else:
                    allocating.append((event, chain_key, "retry"))
            else:
                log.warning("%s: ignored a message of kind %s", m.instance_id, m.kind)

        # Phase 2: the ids the SDK allocates while it processes the retry events, in order.
        decisions: list[h.Event] = []
        for _event, chain_key, role in allocating:
            new_id = meta.seq
            meta.seq += 1
            chain = meta.chains[chain_key]
            if role == "timer":
                decisions.append(self._retry_timer(episode, meta, chain, chain_key, new_id, now))
            else:
                chain["attempts"] = int(chain["attempts"]) + 1
                meta.chain_of[new_id] = chain_key
                decisions.extend(
                    self._schedule_call(episode, runtime, chain, new_id, now, chain["input"])
                )

        new_events: list[h.Event] = [h.orchestrator_started(now)]
        if starting:
            new_events.append(
                h.execution_started(
                    now,
                    name=record.name,
                    input_json=record.input,
                    instance_id=record.instance_id,
                    execution_id=record.execution_id,
                    parent_instance_id=record.parent_instance_id,
                    parent_execution_id=record.parent_execution_id,
                    parent_task_id=record.parent_task_id,
                    parent_name=record.parent_name,
                )
            )
        new_events.extend(event for event, _, _ in allocating)
        new_events.extend(others)
        if len(new_events) == 1:
            # Nothing the orchestrator has to see (stale results, events kept for later).
            self._save(episode, record, meta, now, appended=[])
            return episode
        meta.last_started = h.iso(now)
        if starting:
            record = replace(record, status=RUNNING)

        # Phase 3: the episode itself.
        try:
            info = self._lookup(record.name, ORCHESTRATION)
        except LookupError as exc:
            self._fail(episode, record, now, new_events + decisions, f"{exc}", None)
            return episode
        request = self._request(runtime, record, new_events)
        started = time.perf_counter()
        outcome = run_orchestrator(info, request)
        runtime.cost = time.perf_counter() - started
        state = outcome.state or {}
        if "customStatus" in state:
            record = replace(record, custom_status=json.dumps(state["customStatus"]))
        if outcome.error is not None:
            self._fail(episode, record, now, new_events + decisions, outcome.error, outcome.details)
            return episode

        # Phase 4: the action list: replay must match history, new actions become work.
        flat = _flatten(state.get("actions"))
        signatures = [_signature(a) for a in flat]
        known = len(meta.actions)
        for position, (expected, actual) in enumerate(zip(meta.actions, signatures, strict=False)):
            if expected != actual:
                self._fail(
                    episode,
                    record,
                    now,
                    new_events + decisions,
                    "Non-deterministic workflow detected: at action position "
                    f"{position} the history has {_describe(expected)} but the replay "
                    f"scheduled {_describe(actual)}. Was the orchestrator code changed while "
                    "this instance was running?",
                    None,
                )
                return episode
        if len(signatures) < known:
            missing = meta.actions[len(signatures)]
            self._fail(
                episode,
                record,
                now,
                new_events + decisions,
                "Non-deterministic workflow detected: the history has "
                f"{known} scheduled actions but the replay scheduled only {len(signatures)} "
                f"(missing {_describe(missing)} at position {len(signatures)}). Was the "
                "orchestrator code changed while this instance was running?",
                None,
            )
            return episode
        self._cancel_dropped_timers(episode, meta, flat)

        continue_with: dict[str, Any] | None = None
        unsupported: str | None = None
        for position in range(known, len(flat)):
            action = flat[position]
            kind = int(action.get("actionType", -1))
            meta.actions.append(signatures[position])
            if kind == WAIT_FOR_EXTERNAL_EVENT:
                name = str(action.get("externalEventName") or "")
                lowered = name.lower()
                meta.waits[lowered] = meta.waits.get(lowered, 0) + 1
                meta.wait_names[lowered] = name
                continue
            task_id = meta.seq
            meta.seq += 1
            if kind in (CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY):
                call = {
                    "kind": "activity",
                    "name": str(action.get("functionName")),
                    "input": action.get("input"),
                }
            elif kind in (CALL_SUB_ORCHESTRATOR, CALL_SUB_ORCHESTRATOR_WITH_RETRY):
                call = {
                    "kind": "sub",
                    "name": str(action.get("functionName")),
                    "input": action.get("input"),
                    "instance": action.get("instanceId"),
                }
            elif kind == CREATE_TIMER:
                decisions.append(self._timer(episode, meta, position, task_id, action, now))
                continue
            elif kind == CONTINUE_AS_NEW:
                continue_with = action
                continue
            elif kind in (CALL_ENTITY, SIGNAL_ENTITY):
                problem = self._entity_request(episode, runtime, action, task_id, now, decisions)
                if problem is not None:
                    unsupported = problem
                    break
                continue
            else:
                unsupported = ACTION_NAMES.get(kind, f"action type {kind}")
                break
            if kind in (CALL_ACTIVITY_WITH_RETRY, CALL_SUB_ORCHESTRATOR_WITH_RETRY):
                problem = self._start_chain(meta, call, task_id, action.get("retryOptions"))
                if problem is not None:
                    unsupported = problem
                    break
            decisions.extend(
                self._schedule_call(episode, runtime, call, task_id, now, call["input"])
            )
        if unsupported is not None:
            self._fail(
                episode,
                record,
                now,
                new_events + decisions,
                f"{unsupported} is not supported by the devhost engine",
                None,
            )
            return episode

        if state.get("isDone"):
            if continue_with is not None:
                self._continue_as_new(episode, runtime, record, now, continue_with)
                return episode
            output = state.get("output")
            self._finish(
                episode,
                now,
                [*new_events, *decisions],
                status=COMPLETED,
                output_json=json.dumps(output),
                record=record,
            )
            return episode
        self._release_buffered(episode, record, meta, now)
        self._save(
            episode,
            record,
            meta,
            now,
            appended=[*new_events, *decisions, h.orchestrator_completed(now)],
        )
        return episode

    def _entity_request(
        self,
        episode: _Episode,
        runtime: _Runtime,
        action: dict[str, Any],
        task_id: int,
        now: datetime,
        decisions: list[h.Event],
    ) -> str | None:
        """A CallEntity or SignalEntity action: ``EventSent`` and the request message to the
        entity. None, or why the action cannot be honoured."""
        record = runtime.record
        target = str(action.get("instanceId") or "")
        if split_entity_id(target) is None:
            return f"an entity action whose instanceId {target!r} is no entity id (@name@key)"
        signal = int(action.get("actionType", -1)) == SIGNAL_ENTITY
        operation = action.get("operation")
        value = action.get("input")
        request_id = str(uuid.uuid4())
        request: dict[str, Any] = {
            "op": "" if operation is None else str(operation),
            "signal": signal,
            # The extension serializes the input it got (the SDK's JSON text) once more.
            "input": None if value is None else json.dumps(value),
            "id": request_id,
            "parent": record.instance_id,
            "parentExecution": None if signal else record.execution_id,
        }
        text = json.dumps(request)
        decisions.append(h.event_sent(now, task_id, target, "op", text))
        if not signal:
            runtime.meta.open[task_id] = "entity"
            runtime.meta.entity_calls[request_id] = task_id
        message = self._message(target, MSG_ENTITY_OP, text, at=now)
        episode.commit.add_messages.append(message)
        episode.messages.append(message)
        return None

    def _request(self, runtime: _Runtime, record: InstanceRecord, new_events: list[h.Event]) -> str:
        """The host's request JSON: old events played, the new ones not."""
        parts = runtime.parts + [h.encode(e, False) for e in new_events]
        return (
            '{"history":['
            + ",".join(parts)
            + '],"input":'
            + json.dumps(record.input)
            + ',"instanceId":'
            + json.dumps(record.instance_id)
            + ',"isReplaying":'
            + ("true" if runtime.parts else "false")
            + ',"parentInstanceId":'
            + json.dumps(record.parent_instance_id)
            + ',"upperSchemaVersion":1,"upperSchemaVersionNew":2,'
            + self._timer_settings
            + "}"
        )

    def _save(
        self,
        episode: _Episode,
        record: InstanceRecord,
        meta: _Meta,
        now: datetime,
        appended: list[h.Event],
    ) -> None:
        """Commit a still-running instance: its row, bookkeeping and history appends."""
        runtime = episode.runtime
        assert runtime is not None
        if appended:
            encoded = [h.encode(e, True) for e in appended]
            episode.commit.history_append.append((record.instance_id, encoded))
            runtime.parts.extend(encoded)
            record = replace(record, updated=now)
        record = replace(record, meta=meta.to_json())
        runtime.record = record
        episode.commit.instances.append(record)

    def _deliver(self, meta: _Meta, message: Message, payload: dict[str, Any]) -> h.Event | None:
        """An EventRaised for a wait, or kept in the buffer while nobody waits for its name."""
        name = str(payload.get("Name"))
        lowered = name.lower()
        if meta.waits.get(lowered, 0) - meta.delivered.get(lowered, 0) <= 0:
            meta.buffer.append(self._buffered(message))
            return None
        meta.delivered[lowered] = meta.delivered.get(lowered, 0) + 1
        return h.event_raised(
            message.created, meta.wait_names.get(lowered, name), payload.get("Input")
        )

    @staticmethod
    def _buffered(message: Message) -> dict[str, Any]:
        payload = json.loads(message.payload)
        return {
            "Name": payload.get("Name"),
            "Input": payload.get("Input"),
            "At": h.iso(message.created),
        }

    def _release_buffered(
        self, episode: _Episode, record: InstanceRecord, meta: _Meta, now: datetime
    ) -> None:
        """Kept events whose name is now waited for go back to the queue, oldest first."""
        if not meta.buffer:
            return
        room = {k: meta.waits.get(k, 0) - meta.delivered.get(k, 0) for k in meta.waits}
        kept: list[dict[str, Any]] = []
        for item in meta.buffer:
            lowered = str(item.get("Name")).lower()
            if room.get(lowered, 0) > 0:
                room[lowered] -= 1
                message = self._message(
                    record.instance_id,
                    MSG_EVENT,
                    json.dumps({"Name": item.get("Name"), "Input": item.get("Input")}),
                    at=h.parse_iso(str(item.get("At"))) if item.get("At") else now,
                )
                episode.commit.add_messages.append(message)
                episode.messages.append(message)
            else:
                kept.append(item)
        meta.buffer = kept

    def _timer(
        self,
        episode: _Episode,
        meta: _Meta,
        position: int,
        task_id: int,
        action: dict[str, Any],
        now: datetime,
    ) -> h.Event:
        fire_at = h.parse_iso(str(action.get("fireAt")), "CreateTimer fireAt")
        meta.open[task_id] = "timer"
        meta.action_timers[position] = task_id
        if not action.get("isCanceled"):
            self._add_timer(episode, meta, task_id, fire_at, now)
        return h.timer_created(now, task_id, fire_at)

    def _add_timer(
        self, episode: _Episode, meta: _Meta, timer_id: int, fire_at: datetime, now: datetime
    ) -> None:
        record = episode.runtime.record if episode.runtime is not None else None
        assert record is not None
        message = self._message(
            record.instance_id,
            MSG_TIMER,
            json.dumps({"TimerId": timer_id, "FireAt": h.iso(fire_at)}),
            execution_id=record.execution_id,
            due=fire_at,
            at=now,
        )
        meta.timers[timer_id] = message.msg_id
        episode.commit.add_messages.append(message)
        episode.messages.append(message)

    def _cancel_dropped_timers(
        self, episode: _Episode, meta: _Meta, flat: list[dict[str, Any]]
    ) -> None:
        """Timers the orchestrator cancelled (``isCanceled``) will never be awaited: drop them."""
        for position, timer_id in list(meta.action_timers.items()):
            if timer_id not in meta.timers:
                del meta.action_timers[position]
                continue
            if position < len(flat) and flat[position].get("isCanceled"):
                msg_id = meta.timers.pop(timer_id)
                meta.open.pop(timer_id, None)
                del meta.action_timers[position]
                episode.cancelled_timers.append(msg_id)
                episode.commit.delete_messages.append(msg_id)

    def _start_chain(
        self, meta: _Meta, call: dict[str, Any], task_id: int, options: Any
    ) -> str | None:
        """Bookkeeping for a *WithRetry call; the reason it cannot be honoured, if any."""
        if not isinstance(options, dict):
            return "a *WithRetry action without retryOptions"
        try:
            first = float(options["firstRetryIntervalInMilliseconds"])
            attempts = int(options["maxNumberOfAttempts"])
            backoff = float(options.get("backoffCoefficient", 1.0))
            cap = options.get("maxRetryIntervalInMilliseconds")
            cap_ms = None if cap is None else float(cap)
        except (KeyError, TypeError, ValueError) as exc:
            return f"retryOptions {options!r} ({exc})"
        if first <= 0:
            return f"retryOptions.firstRetryIntervalInMilliseconds must be > 0, got {first}"
        chain = dict(call)
        chain.update(max=attempts, first_ms=first, backoff=backoff, max_ms=cap_ms, attempts=1)
        meta.chains[task_id] = chain
        meta.chain_of[task_id] = task_id
        return None

    def _retry_timer(
        self,
        episode: _Episode,
        meta: _Meta,
        chain: dict[str, Any],
        chain_key: int,
        timer_id: int,
        now: datetime,
    ) -> h.Event:
        """The back-off timer after a failed attempt (DTFx: first * backoff^(attempt-1), capped)."""
        delay_ms = float(chain["first_ms"]) * float(chain["backoff"]) ** (
            int(chain["attempts"]) - 1
        )
        if chain.get("max_ms") is not None:
            delay_ms = min(delay_ms, float(chain["max_ms"]))
        fire_at = now + timedelta(milliseconds=delay_ms)
        meta.open[timer_id] = "retry-timer"
        meta.chain_of[timer_id] = chain_key
        self._add_timer(episode, meta, timer_id, fire_at, now)
        return h.timer_created(now, timer_id, fire_at)

    def _schedule_call(
        self,
        episode: _Episode,
        runtime: _Runtime,
        call: dict[str, Any],
        task_id: int,
        now: datetime,
        input_json: str | None,
    ) -> list[h.Event]:
        """TaskScheduled / SubOrchestrationInstanceCreated and the work behind it."""
        record = runtime.record
        meta = runtime.meta
        name = str(call["name"])
        if call["kind"] == "activity":
            meta.open[task_id] = "activity"
            event = h.task_scheduled(now, task_id, name=name, input_json=input_json)
            try:
                info = self._lookup(name, ACTIVITY)
            except LookupError:
                self._reply(
                    episode,
                    record,
                    MSG_TASK_FAILED,
                    task_id,
                    now,
                    reason=self._missing(name, ACTIVITY),
                )
                return [event]
            work = ActivityWork(
                work_id=next(self._ids),
                instance_id=record.instance_id,
                execution_id=record.execution_id,
                task_id=task_id,
                name=info.name,
                input=input_json,
                created=now,
            )
            episode.commit.add_activities.append(work)
            episode.activities.append(work)
            return [event]
        meta.open[task_id] = "sub"
        child_id = str(call.get("instance") or f"{record.instance_id}:{task_id}")
        event = h.sub_orchestration_created(
            now, task_id, name=name, instance_id=child_id, input_json=input_json
        )
        try:
            info = self._lookup(name, ORCHESTRATION)
        except LookupError:
            self._reply(
                episode,
                record,
                MSG_SUB_FAILED,
                task_id,
                now,
                reason=self._missing(name, ORCHESTRATION),
            )
            return [event]
        existing = self.store.get_instance(child_id)
        clash = child_id in episode.children or child_id == record.instance_id
        if clash or (existing is not None and existing.status in ACTIVE_STATUSES):
            status = existing.status if existing is not None else RUNNING
            self._reply(
                episode,
                record,
                MSG_SUB_FAILED,
                task_id,
                now,
                reason=f"An orchestration with instance ID '{child_id}' already exists and is "
                f"{status}.",
            )
            return [event]
        episode.children.add(child_id)
        start = self._create_instance(
            episode.commit,
            info.name,
            child_id,
            input_json,
            now,
            replacing=existing is not None,
            parent=record,
            parent_task_id=task_id,
        )
        if existing is not None:
            episode.forget.append(child_id)
        episode.messages.append(start)
        return [event]

    def _reply(
        self,
        episode: _Episode,
        record: InstanceRecord,
        kind: str,
        task_id: int,
        now: datetime,
        *,
        reason: str,
    ) -> None:
        """A failure the host reports right away (an unknown function, a clashing id)."""
        message = self._message(
            record.instance_id,
            kind,
            json.dumps({"TaskScheduledId": task_id, "Reason": reason, "Details": None}),
            execution_id=record.execution_id,
            at=now,
        )
        episode.commit.add_messages.append(message)
        episode.messages.append(message)

    def _fail(
        self,
        episode: _Episode,
        record: InstanceRecord,
        now: datetime,
        new_events: list[h.Event],
        error: str,
        details: str | None,
    ) -> None:
        output = f"Orchestrator function '{record.name}' failed: {error}"
        self._finish(
            episode,
            now,
            new_events,
            status=FAILED,
            output_json=json.dumps(output),
            failure_reason=output,
            failure_details=details,
            record=record,
        )

    def _finish(
        self,
        episode: _Episode,
        now: datetime,
        appended: list[h.Event],
        *,
        status: str,
        output_json: str,
        failure_reason: str | None = None,
        failure_details: str | None = None,
        record: InstanceRecord | None = None,
    ) -> None:
        """The execution ends (Completed, Failed, Terminated): history, row, parent, timers."""
        runtime = episode.runtime
        assert runtime is not None
        record = record or runtime.record
        meta = runtime.meta
        failure = None
        if status == FAILED:
            failure = {"ErrorMessage": failure_reason, "Details": failure_details}
        events = [
            *appended,
            h.execution_completed(now, -1, status=status, result_json=output_json, failure=failure),
            h.orchestrator_completed(now),
        ]
        encoded = [h.encode(e, True) for e in events]
        episode.commit.history_append.append((record.instance_id, encoded))
        for msg_id in meta.timers.values():
            episode.cancelled_timers.append(msg_id)
            episode.commit.delete_messages.append(msg_id)
        meta.timers.clear()
        meta.last_started = h.iso(now)
        final = replace(record, status=status, output=output_json, updated=now, meta=meta.to_json())
        episode.commit.instances.append(final)
        runtime.record = final
        episode.evict = True
        if final.parent_instance_id is not None and final.parent_task_id is not None:
            if status == COMPLETED:
                payload = {"TaskScheduledId": final.parent_task_id, "Result": output_json}
                kind = MSG_SUB_COMPLETED
            else:
                payload = {
                    "TaskScheduledId": final.parent_task_id,
                    "Reason": failure_reason or f"sub-orchestration ended {status}",
                    "Details": failure_details,
                }
                kind = MSG_SUB_FAILED
            message = self._message(
                final.parent_instance_id,
                kind,
                json.dumps(payload),
                execution_id=final.parent_execution_id,
                at=now,
            )
            episode.commit.add_messages.append(message)
            episode.messages.append(message)

    def _continue_as_new(
        self,
        episode: _Episode,
        runtime: _Runtime,
        record: InstanceRecord,
        now: datetime,
        action: dict[str, Any],
    ) -> None:
        """A fresh execution with the new input and a new history.

        Events the execution received and did not consume are discarded, as the host does for
        the Python SDK 1.x (azure-functions-durable-python#331).
        """
        meta = runtime.meta
        if meta.buffer:
            log.info(
                "%s: continue-as-new discards %d unconsumed event(s): %s",
                record.instance_id,
                len(meta.buffer),
                ", ".join(str(item.get("Name")) for item in meta.buffer),
            )
        for msg_id in meta.timers.values():
            episode.cancelled_timers.append(msg_id)
            episode.commit.delete_messages.append(msg_id)
        execution_id = uuid.uuid4().hex
        fresh = _Meta(last_started=h.iso(now))
        new_input = action.get("input")
        record = replace(
            record,
            execution_id=execution_id,
            status=CONTINUED_AS_NEW,
            input=new_input if isinstance(new_input, str) else json.dumps(new_input),
            output=None,
            updated=now,
            meta=fresh.to_json(),
        )
        episode.commit.instances.append(record)
        episode.commit.history_reset.append(record.instance_id)
        start = self._message(
            record.instance_id, MSG_START, "{}", execution_id=execution_id, at=now
        )
        episode.commit.add_messages.append(start)
        episode.messages.append(start)
        episode.runtime = _Runtime(record=record, meta=fresh, parts=[])

    # -- activities -----------------------------------------------------------------------------
    def _submit(self, work: ActivityWork) -> None:
        """Queue an activity call on the pool (lock held)."""
        if not self._started:
            return  # start() loads it from the store
        self.participant.enter()
        self._work += 1
        pool = self._pool
        if pool is None or self._stopping:
            return
        pool.submit(self._run_activity, work)

    def _run_activity(self, work: ActivityWork) -> None:
        if self._stopping:
            return
        try:
            info = self._lookup(work.name, ACTIVITY)
        except LookupError:
            outcome = ActivityOutcome(ok=False, reason=self._missing(work.name, ACTIVITY))
        else:
            outcome = run_activity(info, work.input, self._runner, self.directory)
        self._complete_activity(work, outcome)

    def _complete_activity(self, work: ActivityWork, outcome: ActivityOutcome) -> None:
        """Record a result: one transaction deletes the work item and queues the message.

        Results that finish together are committed together (group commit): the first worker
        to arrive commits everything queued until the queue is empty; the others go back to
        their next activity at once.
        """
        if outcome.ok:
            kind = MSG_TASK_COMPLETED
            payload = {"TaskScheduledId": work.task_id, "Result": outcome.result}
        else:
            kind = MSG_TASK_FAILED
            payload = {
                "TaskScheduledId": work.task_id,
                "Reason": outcome.reason,
                "Details": outcome.details,
            }
        message = self._message(
            work.instance_id,
            kind,
            json.dumps(payload),
            execution_id=work.execution_id,
            at=self.clock.now(),
        )
        with self._results_lock:
            self._results.append((work, message))
            if self._committing:
                return
            self._committing = True
        while True:
            with self._results_lock:
                batch, self._results = self._results, []
                if not batch:
                    self._committing = False
                    return
            try:
                with self._lock:
                    if not self._closed:
                        self.store.commit(
                            Commit(
                                delete_activities=[w.work_id for w, _ in batch],
                                add_messages=[m for _, m in batch],
                            )
                        )
                        self.activity_calls += len(batch)
                        for _, result in batch:
                            self._admit(result)
                    self._done_work(len(batch))
            except Exception:
                # The store refused the results: their work items stay stored and run again
                # on the next start; these runs count as finished so the engine is not held.
                log.exception(
                    "engine %s: %d activity result(s) not recorded", self.name, len(batch)
                )
                with self._lock:
                    self._done_work(len(batch))
            self._signal()


def entity_name_of(info: FunctionInfo) -> str:
    """The entity name an entity function serves: ``entityName`` of its trigger, else its name."""
    return str(info.trigger.get("entityName") or info.name)


def _encode_token(created: str, instance_id: str) -> str:
    raw = json.dumps([created, instance_id]).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _decode_token(token: str) -> tuple[str, str]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        created, instance_id = raw
        return str(created), str(instance_id)
    except (ValueError, TypeError, binascii.Error):
        raise ValueError(f"continuation token {token!r} is not one this devhost issued") from None
