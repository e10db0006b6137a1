"""Sharing the devhost's clock with another process over loopback HTTP.

The devhost owns host time. A component in another process (the Azure emulator) uses
:class:`RemoteClock`: ``now()`` follows the owner, each local participant reports its busy count
and next due time to the owner (``PUT /_clock/participants/{name}``), and ``wait_until`` long-polls
the owner (``GET /_clock/wait``). On the owner, :class:`ClockService` answers those routes: each
remote participant becomes a participant of the owner's clock, so a
:class:`~devhost.clock.VirtualClock` never jumps while the other process is busy or has work due.

Routes (JSON): ``GET /_clock`` -> ``{now, virtual, participants, awaiting}`` (``awaiting``: the
remotes time holds still for until they join);
``PUT /_clock/participants/{name}`` ``{busy, next_due, seq?}`` -> ``{now}``;
``DELETE /_clock/participants/{name}`` -> ``{now}``;
``GET /_clock/wait?after=<iso>&timeout=<s>`` -> ``{now}`` once the owner's time is past ``after``
(or the timeout, at most 30 s, passed). A remote that stops reporting for ``lease`` seconds is
dropped, so a killed emulator cannot hold virtual time forever.

Busy transitions (0 -> 1, 1 -> 0) are reported synchronously, before ``enter``/``leave`` return:
the owner can never see a remote as idle while it is not. Changes of the next due time alone are
reported by a background thread (and with every heartbeat). Because the report reads the
participant's ``next_due`` on the thread that enters or leaves, ``next_due`` must not need a
non-reentrant lock that thread may hold at that moment. ``now()`` asks the owner each time
(one loopback request) when the owner's time is virtual, and is the wall clock otherwise.

The owner may restart (SIGTERM, ``kill -9``): a :class:`RemoteClock` never fails its caller for
that. While the owner is unreachable, ``now()`` answers the last instant it saw (the owner's
time cannot move while it is down), reports are kept, and a background thread reconnects with
back-off, then reports every participant again. A durable owner (:class:`~devhost.clock.ClockFile`)
remembers which remotes shared its time and holds its clock until they are back (or their lease
ran out), so nothing either side had due is jumped over. ``url`` may be the owner's base URL or
its ``/_clock`` URL.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import logging
import ssl
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from devhost.clock import BaseClock, NextDue, Participant, utc_now
from devhost.history import iso, parse_iso

MAX_WAIT = 30.0
_PREFIX = "/_clock"
log = logging.getLogger("devhost.remote_clock")


class OwnerUnreachableError(ConnectionError):
    """The clock owner did not answer (down, restarting, or not started yet)."""


class OwnerRefusedError(ConnectionError):
    """The clock owner answered with an error status."""


class ClockRequestError(ValueError):
    """A bad request to the clock routes: HTTP status and a message naming the field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Remote:
    """A remote participant as the owner tracks it."""

    def __init__(self, service: ClockService, name: str) -> None:
        self.name = name
        self.due: datetime | None = None
        self.busy = 0
        self.seq = -1
        self.seen = time.monotonic()
        self.participant = service.clock.participant(f"remote:{name}", self.next_due)

    def next_due(self) -> datetime | None:
        return self.due


class ClockService:
    """The owner's side of the ``/_clock`` routes, over its own clock."""

    def __init__(self, clock: BaseClock, *, lease: float = 30.0) -> None:
        self.clock = clock
        self.lease = lease
        self._lock = threading.Lock()
        self._remotes: dict[str, _Remote] = {}
        self._closed = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="clock-reaper", daemon=True)
        self._reaper.start()

    # -- the routes as plain functions ----------------------------------------------------------
    def get_clock(self) -> dict[str, Any]:
        self.reap()
        with self._lock:
            remotes = [
                {
                    "name": r.name,
                    "busy": r.busy,
                    "next_due": None if r.due is None else iso(r.due),
                }
                for r in self._remotes.values()
            ]
        return {
            "now": iso(self.clock.now()),
            "virtual": self.clock.virtual,
            "participants": remotes,
            "awaiting": self.clock.expected(),
        }

    def put_participant(self, name: str, body: Any) -> dict[str, Any]:
        """Record a remote participant's busy count and next due time."""
        name = _check_name(name)
        if not isinstance(body, Mapping):
            raise ClockRequestError(400, "body must be a JSON object {busy, next_due}")
        busy = body.get("busy", 0)
        if isinstance(busy, bool) or not isinstance(busy, int) or busy < 0:
            raise ClockRequestError(400, f"busy: must be a non-negative integer, got {busy!r}")
        raw_due = body.get("next_due")
        due: datetime | None = None
        if raw_due is not None:
            if not isinstance(raw_due, str):
                raise ClockRequestError(
                    400, f"next_due: must be an ISO 8601 string or null, got {raw_due!r}"
                )
            due = _aware(raw_due, "next_due")
        seq = body.get("seq")
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
            raise ClockRequestError(400, f"seq: must be an integer, got {seq!r}")
        with self._lock:
            remote = self._remotes.get(name)
            joined = remote is None
            if remote is None:
                remote = _Remote(self, name)
                self._remotes[name] = remote
            remote.seen = time.monotonic()
            if seq is not None:
                if seq <= remote.seq:
                    return {"now": iso(self.clock.now()), "stale": True}
                remote.seq = seq
            # Busy up first, then the new due time, then busy down: the owner never sees the
            # remote idle with a due time it has not reported yet.
            while remote.busy < busy:
                remote.participant.enter()
                remote.busy += 1
            remote.due = due
            remote.participant.notify()
            while remote.busy > busy:
                remote.busy -= 1
                remote.participant.leave()
        if joined:
            # Its busy count and due time are in place: stop holding time for it (a restarted
            # durable owner awaits the remotes it had), and remember it for the next restart.
            self.clock.arrived(name)
            self._remember()
        return {"now": iso(self.clock.now())}

    def delete_participant(self, name: str) -> dict[str, Any]:
        name = _check_name(name)
        with self._lock:
            remote = self._remotes.pop(name, None)
        if remote is None:
            raise ClockRequestError(404, f"no remote participant named {name!r}")
        self._drop(remote)
        self._remember()
        return {"now": iso(self.clock.now())}

    def wait(self, after: str | None, timeout: str | float | None) -> dict[str, Any]:
        """Long poll: answer once the owner's time is later than ``after`` (or at the timeout)."""
        limit = 5.0
        if timeout is not None and timeout != "":
            try:
                limit = float(timeout)
            except (TypeError, ValueError):
                raise ClockRequestError(
                    400, f"timeout: must be a number of seconds, got {timeout!r}"
                ) from None
            if limit < 0:
                raise ClockRequestError(400, f"timeout: must not be negative, got {limit}")
        limit = min(limit, MAX_WAIT)
        if after:
            since = _aware(after, "after")
            if self.clock.virtual:
                self.clock.wait_until(since + timedelta(microseconds=1), real_timeout=limit)
        return {"now": iso(self.clock.now())}

    def route(
        self, method: str, path: str, query: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        """Dispatch one request under ``/_clock``: (status, JSON body)."""
        method = method.upper()
        rest = path[len(_PREFIX) :] if path.lower().startswith(_PREFIX) else path
        rest = rest.rstrip("/")
        try:
            if rest == "" and method == "GET":
                return 200, self.get_clock()
            if rest == "/wait" and method == "GET":
                return 200, self.wait(query.get("after"), query.get("timeout"))
            if rest.startswith("/participants/"):
                name = unquote(rest[len("/participants/") :])
                if method == "PUT":
                    try:
                        payload = json.loads(body.decode("utf-8") or "{}")
                    except (UnicodeDecodeError, ValueError) as exc:
                        raise ClockRequestError(400, f"body is not valid JSON: {exc}") from None
                    return 200, self.put_participant(name, payload)
                if method == "DELETE":
                    return 200, self.delete_participant(name)
                raise ClockRequestError(405, f"{method} is not allowed on {path}")
            if rest in ("", "/wait"):
                raise ClockRequestError(405, f"{method} is not allowed on {path}")
            raise ClockRequestError(404, f"no clock route {path}")
        except ClockRequestError as exc:
            code = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed"}.get(
                exc.status, "Error"
            )
            return exc.status, {"error": {"code": code, "message": exc.message}}

    def handle(self, request: Any) -> Any:
        """Adapter for the devhost's HTTP server (:mod:`devhost.server` Request -> Response)."""
        from devhost.server import json_response

        query = {k: v[0] for k, v in request.query.items() if v}
        path = getattr(request, "raw_path", None) or request.path  # route() decodes the name
        status, payload = self.route(request.method, path, query, request.body)
        return json_response(status, payload)

    # -- leases ---------------------------------------------------------------------------------
    def reap(self) -> list[str]:
        """Drop remotes that have not reported for ``lease`` seconds; their names."""
        cutoff = time.monotonic() - self.lease
        with self._lock:
            stale = [r for r in self._remotes.values() if r.seen < cutoff]
            for remote in stale:
                del self._remotes[remote.name]
        for remote in stale:
            self._drop(remote)
        if stale:
            self._remember()
        return [r.name for r in stale]

    def _remember(self) -> None:
        """Keep the names of the remotes sharing this clock in its durable state (if any).
        Not on :meth:`close`: remotes of an owner that stops are awaited when it restarts."""
        with self._lock:
            names = list(self._remotes)
        self.clock.remember_remotes(names)

    def _drop(self, remote: _Remote) -> None:
        while remote.busy > 0:
            remote.busy -= 1
            remote.participant.leave()
        remote.participant.close()
        self.clock.notify()

    def _reap_loop(self) -> None:
        while not self._closed.wait(min(1.0, self.lease / 4)):
            self.reap()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            remotes = list(self._remotes.values())
            self._remotes.clear()
        for remote in remotes:
            self._drop(remote)


def _check_name(name: str) -> str:
    if not name or len(name) > 200 or any(ord(c) < 32 for c in name):
        raise ClockRequestError(
            400, f"participant name must be 1-200 printable characters: {name!r}"
        )
    return name


def _aware(text: str, what: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ClockRequestError(400, f"{what}: not an ISO 8601 timestamp: {text!r}") from None
    if value.tzinfo is None:
        raise ClockRequestError(400, f"{what}: must carry a UTC offset (Z), got {text!r}")
    return parse_iso(text, what)


class RemoteParticipant(Participant):
    """A local participant whose busy transitions reach the owner before they return."""

    def __init__(self, clock: RemoteClock, name: str, next_due: NextDue) -> None:
        super().__init__(clock, name, next_due)
        self._remote = clock

    def enter(self) -> None:
        with self._lock:
            self._busy += 1
            first = self._busy == 1
        if first:
            self._remote.push(self)

    def leave(self) -> None:
        with self._lock:
            if self._busy <= 0:
                raise RuntimeError(f"participant {self.name!r} left more often than it entered")
            self._busy -= 1
            idle = self._busy == 0
        if idle:
            self._remote.push(self)
            self._remote.wake_local()

    def notify(self) -> None:
        self._remote.push_later()
        self._remote.wake_local()


class RemoteClock(BaseClock):
    """The owner's clock, seen from another process.

    ``url`` is the owner's base URL (``http://127.0.0.1:7071``) or its ``/_clock`` URL.
    The constructor waits for the owner (back-off, a log line now and then) for at most
    ``connect_timeout`` real seconds (None: until it answers), since it must learn whether the
    owner's time is virtual.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        heartbeat: float = 5.0,
        connect_timeout: float | None = None,
        max_backoff: float = 1.0,
    ) -> None:
        super().__init__()
        url = normalise_clock_url(url)
        parts = urlsplit(url)
        self.url = url
        self._scheme = parts.scheme
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port
        self._base = parts.path.rstrip("/")
        self._timeout = timeout
        self._local = threading.local()
        self._push_lock = threading.Lock()
        self._seq = itertools.count(int(time.time() * 1000))
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._online = threading.Event()
        self._heartbeat = heartbeat
        self._max_backoff = max_backoff
        self._last_now = utc_now()
        self.reconnects = 0
        info = self._first_contact(connect_timeout)
        self.virtual = bool(info.get("virtual"))
        self._last_now = parse_iso(str(info["now"]), "now")
        self._online.set()
        self._pusher = threading.Thread(target=self._push_loop, name="remote-clock", daemon=True)
        self._pusher.start()

    def _first_contact(self, connect_timeout: float | None) -> dict[str, Any]:
        deadline = None if connect_timeout is None else time.monotonic() + connect_timeout
        delay = 0.05
        next_log = time.monotonic()
        while True:
            try:
                return self._call("GET", _PREFIX)
            except OwnerUnreachableError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                if time.monotonic() >= next_log:
                    log.info("waiting for the clock owner at %s", self.url)
                    next_log = time.monotonic() + 10.0
                time.sleep(
                    delay if deadline is None else min(delay, max(deadline - time.monotonic(), 0))
                )
                delay = min(delay * 2, self._max_backoff)

    @property
    def online(self) -> bool:
        """Whether the owner answered the last call."""
        return self._online.is_set()

    # -- HTTP -----------------------------------------------------------------------------------
    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._scheme == "https":
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=ssl.create_default_context()
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            self._local.conn = conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _call(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if data is not None else {}
        last: Exception | None = None
        for _ in range(2):
            conn = self._connection(timeout or self._timeout)
            try:
                conn.request(method, self._base + path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                last = exc
                continue
            if response.status >= 500:
                last = OwnerUnreachableError(f"{response.status} {response.reason}")
                continue
            try:
                payload: dict[str, Any] = json.loads(raw.decode("utf-8") or "{}")
            except ValueError:
                payload = {}
            if response.status >= 400:
                message = (
                    payload.get("error", {}).get("message")
                    if payload
                    else raw[:200].decode("utf-8", "replace")
                )
                raise OwnerRefusedError(
                    f"clock owner {self.url} answered {response.status} to {method} {path}: "
                    f"{message}"
                )
            return payload
        raise OwnerUnreachableError(f"clock owner {self.url} is unreachable: {last}") from last

    # -- the Clock protocol ---------------------------------------------------------------------
    def now(self) -> datetime:
        if not self.virtual:
            return utc_now()
        if self._online.is_set():
            try:
                info = self._call("GET", _PREFIX)
            except OwnerUnreachableError:
                self._lost()
            else:
                self._seen(parse_iso(str(info["now"]), "now"))
        with self._cond:
            return self._last_now

    def _seen(self, value: datetime) -> None:
        """The owner's time as it answered; ours never goes backwards."""
        with self._cond:
            if value > self._last_now:
                self._last_now = value
                self._cond.notify_all()

    def _lost(self) -> None:
        """The owner stopped answering: the pusher reconnects, then reports everyone again."""
        if self._online.is_set():
            self._online.clear()
            log.warning("clock owner %s unreachable; reconnecting", self.url)
        self._dirty.set()

    def participant(self, name: str, next_due: NextDue) -> Participant:
        p = RemoteParticipant(self, name, next_due)
        with self._cond:
            self._participants.append(p)
            self._cond.notify_all()
        self.push(p)
        return p

    def remove_participant(self, participant: Participant) -> None:
        super().remove_participant(participant)
        # The owner may be gone or have dropped it already: nothing left to release then.
        with contextlib.suppress(ConnectionError):
            self._call("DELETE", f"{_PREFIX}/participants/{quote(participant.name, safe='')}")

    def notify(self) -> None:
        self.push_later()
        self.wake_local()

    def wake_local(self) -> None:
        super().notify()

    def push(self, participant: Participant) -> None:
        """Report one participant's state now (busy transitions). Never fails the caller: with
        the owner away, the report waits for the reconnection (the owner's time stands still)."""
        if not self._online.is_set():
            self._dirty.set()
            return
        try:
            with self._push_lock:
                self._push_locked(participant)
        except OwnerUnreachableError:
            self._lost()
        except OwnerRefusedError as exc:
            log.error("clock owner refused a report of %s: %s", participant.name, exc)
            self._dirty.set()

    def push_later(self) -> None:
        self._dirty.set()

    def _push_locked(self, participant: Participant) -> None:
        due = participant.next_due()
        body = {
            "busy": participant.busy_count,
            "next_due": None if due is None else iso(due),
            "seq": next(self._seq),
        }
        answer = self._call(
            "PUT", f"{_PREFIX}/participants/{quote(participant.name, safe='')}", body
        )
        if "now" in answer and self.virtual:
            self._seen(parse_iso(str(answer["now"]), "now"))

    def _push_loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            if not self._online.is_set():
                self._reconnect()
                last = time.monotonic()
                continue
            fired = self._dirty.wait(self._heartbeat)
            if self._stop.is_set():
                return
            self._dirty.clear()
            if not fired and time.monotonic() - last < self._heartbeat:
                continue
            last = time.monotonic()
            self._push_all()

    def _push_all(self) -> None:
        for participant in self.participants():
            self.push(participant)

    def _reconnect(self) -> None:
        """Back off until the owner answers, then report every participant again."""
        delay = 0.05
        while not self._stop.is_set():
            try:
                info = self._call("GET", _PREFIX)
            except OwnerUnreachableError:
                self._stop.wait(delay)
                delay = min(delay * 2, self._max_backoff)
                continue
            except OwnerRefusedError as exc:
                log.error("clock owner %s: %s", self.url, exc)
                self._stop.wait(self._max_backoff)
                continue
            self._seen(parse_iso(str(info["now"]), "now"))
            self._online.set()
            self.reconnects += 1
            log.info("clock owner %s is back at %s", self.url, info.get("now"))
            self._dirty.clear()
            self._push_all()
            self.wake_local()
            return

    def wait_until(
        self,
        due: datetime | None,
        wake: threading.Event | None = None,
        real_timeout: float | None = None,
    ) -> None:
        deadline = None if real_timeout is None else time.monotonic() + real_timeout
        while not self._closed:
            if wake is not None and wake.is_set():
                return
            current = self.now()
            if due is not None and current >= due:
                return
            poll = 0.05 if wake is not None else MAX_WAIT / 6
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                poll = min(poll, left)
            if not self.virtual or not self._online.is_set():
                if due is not None and not self.virtual:
                    poll = min(poll, max((due - current).total_seconds(), 0.0))
                with self._cond:
                    self._cond.wait(poll)
                continue
            try:
                self._call(
                    "GET",
                    f"{_PREFIX}/wait?after={quote(iso(current))}&timeout={poll:.3f}",
                    timeout=poll + self._timeout,
                )
            except OwnerUnreachableError:
                self._lost()
            except OwnerRefusedError:
                with self._cond:
                    self._cond.wait(poll)

    def close(self) -> None:
        self._stop.set()
        self._dirty.set()
        for participant in self.participants():
            self.remove_participant(participant)
        super().close()


def normalise_clock_url(url: str) -> str:
    """The owner's base URL from its base URL or its ``/_clock`` URL (``ValueError`` otherwise)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"a clock URL must be http(s)://host:port[/_clock], got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"a clock URL takes no query or fragment, got {url!r}")
    path = parts.path.rstrip("/")
    if path.lower().endswith(_PREFIX):
        path = path[: -len(_PREFIX)]
    netloc = parts.netloc
    return f"{parts.scheme}://{netloc}{path}"


def parse_query(query_string: str) -> dict[str, str]:
    """First value of each query parameter (for servers that hand over the raw query string)."""
    return {k: v[0] for k, v in parse_qs(query_string, keep_blank_values=True).items() if v}
