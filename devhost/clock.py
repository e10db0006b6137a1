"""Host time: a real clock, or a virtual one that jumps when every participant is idle.

The devhost (durable timers, timer triggers) and the Azure emulator (operation latencies,
simulated users) both schedule work in *host time*. With a :class:`VirtualClock` they share one
notion of "now" that only advances when nobody has work in flight or due, straight to the
earliest thing anyone has scheduled. A six-hour build then finishes in seconds, and neither side
can skip past work the other still has to do. See docs/contracts.md, section 1.

A virtual clock may be *durable* (:class:`ClockFile`): every instant it moves to is written to a
small JSON file before anyone can see it, so an owner restarted on the same file resumes from the
last instant, never earlier. The file also names the other processes that shared the time
(:mod:`devhost.remote_clock`); a clock holds still until each of them is back (``expect``), or
gives up on one after its patience, so nobody's due work is jumped over while it reconnects.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

NextDue = Callable[[], datetime | None]
log = logging.getLogger("devhost.clock")


def utc_now() -> datetime:
    """Wall-clock time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def require_aware(value: datetime, what: str = "datetime") -> datetime:
    """Refuse naive datetimes: every time in this project is tz-aware UTC."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


class ClockFile:
    """A virtual clock's durable state: its last instant and the remote participants sharing it.

    JSON ``{"now": iso, "remotes": [names]}``, replaced atomically (written beside, then renamed),
    so a reader, or an owner killed mid-write, sees the old state or the new, never half of one.
    Not flushed to the disk: a process that dies keeps what it wrote (the page cache survives it).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._now: datetime | None = None
        self._remotes: list[str] = []
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise ValueError(f"clock state {self.path} is unreadable: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"clock state {self.path}: not a JSON object")
        raw = data.get("now")
        if raw is not None:
            try:
                self._now = require_aware(datetime.fromisoformat(str(raw)), "now")
            except ValueError as exc:
                raise ValueError(f"clock state {self.path}: now: {exc}") from None
        remotes = data.get("remotes") or []
        if isinstance(remotes, list):
            self._remotes = sorted({str(r) for r in remotes})

    @property
    def now(self) -> datetime | None:
        """The last instant saved (None: a new file)."""
        return self._now

    @property
    def remotes(self) -> list[str]:
        return list(self._remotes)

    def save_now(self, now: datetime) -> None:
        with self._lock:
            if self._now is not None and now < self._now:
                raise ValueError("a durable clock never goes backwards")
            self._now = now
            self._write()

    def save_remotes(self, names: list[str]) -> None:
        with self._lock:
            wanted = sorted(set(names))
            if wanted == self._remotes:
                return
            self._remotes = wanted
            self._write()

    def _write(self) -> None:
        payload: dict[str, Any] = {
            "now": None if self._now is None else self._now.isoformat(),
            "remotes": self._remotes,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(payload) + "\n", encoding="utf-8")
        os.replace(partial, self.path)


class Participant:
    """A component that shares the clock: it reports in-flight work and its next due time."""

    def __init__(self, clock: BaseClock, name: str, next_due: NextDue) -> None:
        self._clock = clock
        self.name = name
        self._next_due = next_due
        self._busy = 0
        self._lock = threading.Lock()

    @property
    def busy_count(self) -> int:
        return self._busy

    def next_due(self) -> datetime | None:
        return self._next_due()

    def enter(self) -> None:
        with self._lock:
            self._busy += 1

    def leave(self) -> None:
        with self._lock:
            if self._busy <= 0:
                raise RuntimeError(f"participant {self.name!r} left more often than it entered")
            self._busy -= 1
            idle = self._busy == 0
        if idle:
            self._clock.notify()

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Mark work in flight for the duration of the block (nestable)."""
        self.enter()
        try:
            yield
        finally:
            self.leave()

    def notify(self) -> None:
        """Tell the clock that this participant's next due time changed."""
        self._clock.notify()

    def close(self) -> None:
        self._clock.remove_participant(self)


class Clock(Protocol):
    """What the devhost and the emulator need from host time."""

    virtual: bool

    def now(self) -> datetime: ...

    def participant(self, name: str, next_due: NextDue) -> Participant: ...

    def remove_participant(self, participant: Participant) -> None: ...

    def wait_until(
        self,
        due: datetime | None,
        wake: threading.Event | None = None,
        real_timeout: float | None = None,
    ) -> None: ...

    def notify(self) -> None: ...

    def close(self) -> None: ...


class BaseClock:
    """Participant bookkeeping and the wait/notify machinery shared by both clocks."""

    virtual = False

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._participants: list[Participant] = []
        self._closed = False
        self._generation = 0
        # name -> (placeholder participant, real deadline or None): participants awaited.
        self._expected: dict[str, tuple[Participant, float | None]] = {}
        self.state: ClockFile | None = None

    def now(self) -> datetime:
        raise NotImplementedError

    def participant(self, name: str, next_due: NextDue) -> Participant:
        p = Participant(self, name, next_due)
        with self._cond:
            self._participants.append(p)
            self._cond.notify_all()
        return p

    def remove_participant(self, participant: Participant) -> None:
        with self._cond:
            if participant in self._participants:
                self._participants.remove(participant)
            self._cond.notify_all()

    def participants(self) -> list[Participant]:
        with self._cond:
            return list(self._participants)

    # -- participants another process brings (devhost/remote_clock.py) ------------------------
    def expect(self, name: str, patience: float | None = None) -> None:
        """Hold time still until the remote participant ``name`` joins (:meth:`arrived`), or
        until ``patience`` real seconds have passed (None: until it joins)."""
        with self._cond:
            if name in self._expected:
                return
            placeholder = Participant(self, f"awaiting:{name}", lambda: None)
            placeholder.enter()
            self._participants.append(placeholder)
            deadline = None if patience is None else time.monotonic() + patience
            self._expected[name] = (placeholder, deadline)
        log.info(
            "clock: holding time until %s joins%s",
            name,
            "" if patience is None else f" (at most {patience:g} s)",
        )

    def arrived(self, name: str) -> None:
        """The awaited participant ``name`` has joined: stop holding time for it."""
        with self._cond:
            entry = self._expected.pop(name, None)
            if entry is None:
                return
            if entry[0] in self._participants:
                self._participants.remove(entry[0])
            self._generation += 1
            self._cond.notify_all()

    def expected(self) -> list[str]:
        with self._cond:
            return sorted(self._expected)

    def expire_expected(self) -> list[str]:
        """Give up on awaited participants whose patience ran out; their names."""
        now = time.monotonic()
        with self._cond:
            late = [n for n, (_, d) in self._expected.items() if d is not None and d <= now]
        for name in late:
            log.warning("clock: %s did not come back in time; time moves without it", name)
            self.arrived(name)
        return late

    def remember_remotes(self, names: list[str]) -> None:
        """Record which remote participants share this clock (kept by a durable clock)."""
        if self.state is not None:
            self.state.save_remotes(names)

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def wait_until(
        self,
        due: datetime | None,
        wake: threading.Event | None = None,
        real_timeout: float | None = None,
    ) -> None:
        raise NotImplementedError


# How often a waiter re-checks a threading.Event it cannot be notified about (real seconds).
_POLL = 0.05


class RealClock(BaseClock):
    """Wall-clock time; waits are real waits."""

    virtual = False

    def now(self) -> datetime:
        return utc_now()

    def wait_until(
        self,
        due: datetime | None,
        wake: threading.Event | None = None,
        real_timeout: float | None = None,
    ) -> None:
        deadline = None if real_timeout is None else time.monotonic() + real_timeout
        with self._cond:
            while not self._closed:
                if wake is not None and wake.is_set():
                    return
                remaining = [_POLL if wake is not None else 3600.0]
                if due is not None:
                    left = (due - self.now()).total_seconds()
                    if left <= 0:
                        return
                    remaining.append(left)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    remaining.append(left)
                self._cond.wait(min(remaining))


class VirtualClock(BaseClock):
    """Simulated time that jumps to the next due item once every participant is idle.

    ``settle`` is a short real-time grace period: quiescence must hold for that long before the
    clock jumps, which absorbs hand-offs between threads that a component might not cover with
    ``busy()`` (a response on its way back to a caller, say).
    """

    virtual = True

    def __init__(
        self,
        start: datetime | None = None,
        settle: float = 0.002,
        *,
        state: ClockFile | None = None,
        remote_patience: float = 30.0,
    ) -> None:
        super().__init__()
        self._now = require_aware(start, "start") if start is not None else utc_now()
        self.state = state
        if state is not None:
            if state.now is not None:
                # A restarted owner resumes where it stopped, never earlier (nor at wall time).
                self._now = max(state.now, self._now) if start is not None else state.now
            state.save_now(self._now)
            for name in state.remotes:
                self.expect(name, remote_patience)
        self._settle = settle
        self._paused = False
        self._jumps = 0
        self._advancer = threading.Thread(target=self._run, name="virtual-clock", daemon=True)
        self._advancer.start()

    @property
    def jumps(self) -> int:
        """How many times the clock has moved (for tests and benchmarks)."""
        return self._jumps

    def now(self) -> datetime:
        return self._now

    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def advance(self, delta: timedelta) -> None:
        """Move time forward by hand (tests, admin API); never backwards."""
        if delta < timedelta(0):
            raise ValueError("a clock never goes backwards")
        with self._cond:
            self._move(self._now + delta)

    def set_time(self, when: datetime) -> None:
        when = require_aware(when, "when")
        with self._cond:
            if when < self._now:
                raise ValueError("a clock never goes backwards")
            self._move(when)

    def _move(self, when: datetime) -> None:
        """Move to ``when`` (under the lock): saved first, so no one sees an unsaved instant."""
        if self.state is not None:
            self.state.save_now(when)
        self._now = when
        self._jumps += 1
        self._cond.notify_all()

    def wait_until(
        self,
        due: datetime | None,
        wake: threading.Event | None = None,
        real_timeout: float | None = None,
    ) -> None:
        deadline = None if real_timeout is None else time.monotonic() + real_timeout
        with self._cond:
            while not self._closed:
                if wake is not None and wake.is_set():
                    return
                if due is not None and self._now >= due:
                    return
                timeout = _POLL if wake is not None else 1.0
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    timeout = min(timeout, left)
                self._cond.wait(timeout)

    # -- the advancer -------------------------------------------------------------------
    def _earliest_if_idle(self, participants: list[Participant]) -> datetime | None:
        """The time to jump to, or None while anyone is busy or has work due now.

        Called without the clock's lock held, so a participant's ``next_due`` may take its own
        locks even if that component calls :meth:`notify` while holding them.
        """
        now = self._now
        earliest: datetime | None = None
        for p in participants:
            if p.busy_count > 0:
                return None
            due = p.next_due()
            if due is None:
                continue
            if due <= now:
                return None
            if earliest is None or due < earliest:
                earliest = due
        return earliest

    def _run(self) -> None:
        while True:
            if self._expected:
                self.expire_expected()
            with self._cond:
                if self._closed:
                    return
                if self._paused:
                    self._cond.wait(0.05)
                    continue
                generation = self._generation
                participants = list(self._participants)
            target = self._earliest_if_idle(participants)
            if target is None:
                with self._cond:
                    if generation == self._generation and not self._closed:
                        self._cond.wait(0.01)
                continue
            # Quiescence must survive a short grace period with no notification in between.
            time.sleep(self._settle)
            again = self._earliest_if_idle(participants)
            with self._cond:
                if self._closed:
                    return
                if (
                    self._paused
                    or again is None
                    or generation != self._generation
                    or participants != self._participants
                ):
                    continue
                self._move(again)


def make_clock(
    virtual: bool, start: datetime | None = None, state: ClockFile | None = None
) -> BaseClock:
    """The clock for a run: virtual (jumping, durable with ``state``) or real."""
    return VirtualClock(start, state=state) if virtual else RealClock()
