"""Durable state of the orchestration engine: instances, histories and the pending-work queues.

The engine writes ahead: every orchestrator episode and every activity completion is one
:class:`Commit` (instance rows, history appends, consumed and new messages, new activity work)
applied atomically, so a process killed at any point restarts from the last commit: pending
messages are delivered again, activities whose completion was not recorded run again (at least
once). :class:`SqliteStore` keeps this in a WAL-mode SQLite file; :class:`MemoryStore` behaves
the same in memory (tests, benchmarks). :func:`open_store` picks one from a path.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from devhost.history import iso, parse_iso

# Runtime statuses (Durable HTTP API names).
PENDING = "Pending"
RUNNING = "Running"
COMPLETED = "Completed"
CONTINUED_AS_NEW = "ContinuedAsNew"
FAILED = "Failed"
TERMINATED = "Terminated"
ACTIVE_STATUSES = frozenset({PENDING, RUNNING, CONTINUED_AS_NEW})
FINISHED_STATUSES = frozenset({COMPLETED, FAILED, TERMINATED})


@dataclass(frozen=True)
class InstanceRecord:
    """One orchestration instance (its latest execution)."""

    instance_id: str
    name: str
    execution_id: str
    status: str
    created: datetime
    updated: datetime
    input: str | None = None  # JSON text
    output: str | None = None  # JSON text
    custom_status: str | None = None  # JSON text
    parent_instance_id: str | None = None
    parent_execution_id: str | None = None
    parent_task_id: int | None = None
    parent_name: str | None = None
    meta: str = "{}"  # the engine's bookkeeping (JSON)


@dataclass(frozen=True)
class Message:
    """Work for an orchestrator: a history event waiting to be delivered (timers: from ``due``)."""

    msg_id: int
    instance_id: str
    kind: str
    execution_id: str | None
    due: datetime | None
    payload: str  # JSON object
    created: datetime


@dataclass(frozen=True)
class ActivityWork:
    """An activity invocation scheduled by an orchestrator and not yet completed."""

    work_id: int
    instance_id: str
    execution_id: str
    task_id: int
    name: str
    input: str | None
    created: datetime


@dataclass
class Commit:
    """Everything one step of the engine changes, applied in one transaction."""

    instances: list[InstanceRecord] = field(default_factory=list)
    history_reset: list[str] = field(default_factory=list)
    history_append: list[tuple[str, list[str]]] = field(default_factory=list)
    delete_messages: list[int] = field(default_factory=list)
    delete_instance_messages: list[str] = field(default_factory=list)
    add_messages: list[Message] = field(default_factory=list)
    delete_activities: list[int] = field(default_factory=list)
    add_activities: list[ActivityWork] = field(default_factory=list)
    purge_instances: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class InstanceFilter:
    """Which instances a query or a bulk purge selects."""

    statuses: Collection[str] | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    prefix: str | None = None

    def matches(self, record: InstanceRecord) -> bool:
        if self.statuses is not None and record.status not in self.statuses:
            return False
        if self.created_from is not None and record.created < self.created_from:
            return False
        if self.created_to is not None and record.created > self.created_to:
            return False
        return not (self.prefix and not record.instance_id.startswith(self.prefix))


class Store(Protocol):
    """What the engine needs from durable state."""

    def commit(self, change: Commit) -> None: ...

    def get_instance(self, instance_id: str) -> InstanceRecord | None: ...

    def query_instances(
        self, where: InstanceFilter, after: tuple[str, str] | None, limit: int | None
    ) -> list[InstanceRecord]: ...

    def history(self, instance_id: str) -> list[str]: ...

    def messages(self) -> list[Message]: ...

    def activities(self) -> list[ActivityWork]: ...

    def max_id(self) -> int: ...

    def close(self) -> None: ...


def _sort_key(record: InstanceRecord) -> tuple[str, str]:
    return (iso(record.created), record.instance_id)


class MemoryStore:
    """The store in memory: same behaviour as :class:`SqliteStore`, nothing survives the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._instances: dict[str, InstanceRecord] = {}
        self._history: dict[str, list[str]] = {}
        self._messages: dict[int, Message] = {}
        self._activities: dict[int, ActivityWork] = {}
        self._max_id = 0

    def commit(self, change: Commit) -> None:
        with self._lock:
            for instance_id in change.purge_instances:
                self._instances.pop(instance_id, None)
                self._history.pop(instance_id, None)
                self._drop_messages_of(instance_id)
                for work_id in [
                    w.work_id for w in self._activities.values() if w.instance_id == instance_id
                ]:
                    del self._activities[work_id]
            for record in change.instances:
                self._instances[record.instance_id] = record
            for instance_id in change.history_reset:
                self._history[instance_id] = []
            for instance_id, events in change.history_append:
                self._history.setdefault(instance_id, []).extend(events)
            for msg_id in change.delete_messages:
                self._messages.pop(msg_id, None)
            for instance_id in change.delete_instance_messages:
                self._drop_messages_of(instance_id)
            for message in change.add_messages:
                self._messages[message.msg_id] = message
                self._max_id = max(self._max_id, message.msg_id)
            for work_id in change.delete_activities:
                self._activities.pop(work_id, None)
            for work in change.add_activities:
                self._activities[work.work_id] = work
                self._max_id = max(self._max_id, work.work_id)

    def _drop_messages_of(self, instance_id: str) -> None:
        for msg_id in [m.msg_id for m in self._messages.values() if m.instance_id == instance_id]:
            del self._messages[msg_id]

    def get_instance(self, instance_id: str) -> InstanceRecord | None:
        with self._lock:
            return self._instances.get(instance_id)

    def query_instances(
        self, where: InstanceFilter, after: tuple[str, str] | None, limit: int | None
    ) -> list[InstanceRecord]:
        with self._lock:
            found = [r for r in self._instances.values() if where.matches(r)]
        found.sort(key=_sort_key)
        if after is not None:
            found = [r for r in found if _sort_key(r) > after]
        return found if limit is None else found[:limit]

    def history(self, instance_id: str) -> list[str]:
        with self._lock:
            return list(self._history.get(instance_id, ()))

    def messages(self) -> list[Message]:
        with self._lock:
            return sorted(self._messages.values(), key=lambda m: m.msg_id)

    def activities(self) -> list[ActivityWork]:
        with self._lock:
            return sorted(self._activities.values(), key=lambda w: w.work_id)

    def max_id(self) -> int:
        with self._lock:
            return self._max_id

    def close(self) -> None:
        """Nothing to release."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    input TEXT,
    output TEXT,
    custom_status TEXT,
    parent_instance_id TEXT,
    parent_execution_id TEXT,
    parent_task_id INTEGER,
    parent_name TEXT,
    meta TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_created ON instances (created, instance_id);
CREATE TABLE IF NOT EXISTS history (
    instance_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (instance_id, seq)
);
CREATE TABLE IF NOT EXISTS messages (
    msg_id INTEGER PRIMARY KEY,
    instance_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    execution_id TEXT,
    due TEXT,
    payload TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_instance ON messages (instance_id);
CREATE TABLE IF NOT EXISTS activities (
    work_id INTEGER PRIMARY KEY,
    instance_id TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    input TEXT,
    created TEXT NOT NULL
);
"""

_INSTANCE_COLUMNS = (
    "instance_id, name, execution_id, status, created, updated, input, output, custom_status, "
    "parent_instance_id, parent_execution_id, parent_task_id, parent_name, meta"
)


def _opt_iso(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


def _instance_row(r: InstanceRecord) -> tuple[object, ...]:
    return (
        r.instance_id,
        r.name,
        r.execution_id,
        r.status,
        iso(r.created),
        iso(r.updated),
        r.input,
        r.output,
        r.custom_status,
        r.parent_instance_id,
        r.parent_execution_id,
        r.parent_task_id,
        r.parent_name,
        r.meta,
    )


def _instance_from(row: tuple[object, ...]) -> InstanceRecord:
    (iid, name, eid, status, created, updated, inp, out, custom, pid, peid, ptask, pname, meta) = (
        row
    )
    return InstanceRecord(
        instance_id=str(iid),
        name=str(name),
        execution_id=str(eid),
        status=str(status),
        created=parse_iso(str(created)),
        updated=parse_iso(str(updated)),
        input=None if inp is None else str(inp),
        output=None if out is None else str(out),
        custom_status=None if custom is None else str(custom),
        parent_instance_id=None if pid is None else str(pid),
        parent_execution_id=None if peid is None else str(peid),
        parent_task_id=None if ptask is None else int(str(ptask)),
        parent_name=None if pname is None else str(pname),
        meta=str(meta),
    )


class SqliteStore:
    """The store in a SQLite file (WAL mode, one transaction per commit, safe against kill -9)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        # Next history sequence number per instance (cached; read from the table on first use).
        self._next_seq: dict[str, int] = {}
        self._closed = False

    def _seq(self, instance_id: str) -> int:
        found = self._next_seq.get(instance_id)
        if found is None:
            row = self._db.execute(
                "SELECT COALESCE(MAX(seq) + 1, 0) FROM history WHERE instance_id = ?",
                (instance_id,),
            ).fetchone()
            found = int(row[0])
        return found

    def commit(self, change: Commit) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the store {self.path} is closed")
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for instance_id in change.purge_instances:
                    for table in ("instances", "history", "messages", "activities"):
                        db.execute(f"DELETE FROM {table} WHERE instance_id = ?", (instance_id,))  # noqa: S608
                    self._next_seq.pop(instance_id, None)
                if change.instances:
                    db.executemany(
                        f"INSERT OR REPLACE INTO instances ({_INSTANCE_COLUMNS}) "  # noqa: S608
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        [_instance_row(r) for r in change.instances],
                    )
                for instance_id in change.history_reset:
                    db.execute("DELETE FROM history WHERE instance_id = ?", (instance_id,))
                    self._next_seq[instance_id] = 0
                for instance_id, events in change.history_append:
                    start = self._seq(instance_id)
                    db.executemany(
                        "INSERT INTO history (instance_id, seq, event) VALUES (?,?,?)",
                        [(instance_id, start + n, text) for n, text in enumerate(events)],
                    )
                    self._next_seq[instance_id] = start + len(events)
                if change.delete_messages:
                    db.executemany(
                        "DELETE FROM messages WHERE msg_id = ?",
                        [(m,) for m in change.delete_messages],
                    )
                for instance_id in change.delete_instance_messages:
                    db.execute("DELETE FROM messages WHERE instance_id = ?", (instance_id,))
                if change.add_messages:
                    db.executemany(
                        "INSERT INTO messages (msg_id, instance_id, kind, execution_id, due, "
                        "payload, created) VALUES (?,?,?,?,?,?,?)",
                        [
                            (
                                m.msg_id,
                                m.instance_id,
                                m.kind,
                                m.execution_id,
                                _opt_iso(m.due),
                                m.payload,
                                iso(m.created),
                            )
                            for m in change.add_messages
                        ],
                    )
                if change.delete_activities:
                    db.executemany(
                        "DELETE FROM activities WHERE work_id = ?",
                        [(w,) for w in change.delete_activities],
                    )
                if change.add_activities:
                    db.executemany(
                        "INSERT INTO activities (work_id, instance_id, execution_id, task_id, "
                        "name, input, created) VALUES (?,?,?,?,?,?,?)",
                        [
                            (
                                w.work_id,
                                w.instance_id,
                                w.execution_id,
                                w.task_id,
                                w.name,
                                w.input,
                                iso(w.created),
                            )
                            for w in change.add_activities
                        ],
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                # The sequence cache may now be ahead of the table: forget it.
                self._next_seq.clear()
                raise

    def get_instance(self, instance_id: str) -> InstanceRecord | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?",  # noqa: S608
                (instance_id,),
            ).fetchone()
        return None if row is None else _instance_from(row)

    def query_instances(
        self, where: InstanceFilter, after: tuple[str, str] | None, limit: int | None
    ) -> list[InstanceRecord]:
        clauses: list[str] = []
        params: list[object] = []
        if where.statuses is not None:
            statuses = list(where.statuses)
            if not statuses:
                return []
            clauses.append(f"status IN ({','.join('?' for _ in statuses)})")
            params.extend(statuses)
        if where.created_from is not None:
            clauses.append("created >= ?")
            params.append(iso(where.created_from))
        if where.created_to is not None:
            clauses.append("created <= ?")
            params.append(iso(where.created_to))
        if where.prefix:
            clauses.append("substr(instance_id, 1, ?) = ?")
            params.extend([len(where.prefix), where.prefix])
        if after is not None:
            clauses.append("(created > ? OR (created = ? AND instance_id > ?))")
            params.extend([after[0], after[0], after[1]])
        sql = f"SELECT {_INSTANCE_COLUMNS} FROM instances"  # noqa: S608
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY created, instance_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [_instance_from(row) for row in rows]

    def history(self, instance_id: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT event FROM history WHERE instance_id = ? ORDER BY seq", (instance_id,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def messages(self) -> list[Message]:
        with self._lock:
            rows = self._db.execute(
                "SELECT msg_id, instance_id, kind, execution_id, due, payload, created "
                "FROM messages ORDER BY msg_id"
            ).fetchall()
        return [
            Message(
                msg_id=int(r[0]),
                instance_id=str(r[1]),
                kind=str(r[2]),
                execution_id=None if r[3] is None else str(r[3]),
                due=None if r[4] is None else parse_iso(str(r[4])),
                payload=str(r[5]),
                created=parse_iso(str(r[6])),
            )
            for r in rows
        ]

    def activities(self) -> list[ActivityWork]:
        with self._lock:
            rows = self._db.execute(
                "SELECT work_id, instance_id, execution_id, task_id, name, input, created "
                "FROM activities ORDER BY work_id"
            ).fetchall()
        return [
            ActivityWork(
                work_id=int(r[0]),
                instance_id=str(r[1]),
                execution_id=str(r[2]),
                task_id=int(r[3]),
                name=str(r[4]),
                input=None if r[5] is None else str(r[5]),
                created=parse_iso(str(r[6])),
            )
            for r in rows
        ]

    def max_id(self) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(COALESCE((SELECT MAX(msg_id) FROM messages), 0), "
                "COALESCE((SELECT MAX(work_id) FROM activities), 0))"
            ).fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()


def open_store(path: str | Path | None) -> MemoryStore | SqliteStore:
    """``None`` or ``":memory:"``: a :class:`MemoryStore`; anything else: a SQLite file."""
    if path is None or str(path) == ":memory:":
        return MemoryStore()
    return SqliteStore(path)


def ids(items: Iterable[Message]) -> list[int]:
    """The ids of some messages (for a commit's ``delete_messages``)."""
    return [m.msg_id for m in items]
