"""Deterministic building blocks for orchestrators: retried calls, polling waits, progress.

Everything here is a generator used with ``yield from`` inside an orchestrator: it only yields
durable tasks (activity calls and durable timers), reads time from
``context.current_utc_datetime`` and keeps no state outside the orchestration's history.
Retries are decided by the error model (shared/errors.py): a temporary failure is retried after
a durable timer with exponential back-off; a permanent one fails at once.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.errors import PermanentError, TemporaryError, is_permanent, retry_after_of

Flow = Generator[Any, Any, Any]


class StepFailedError(PermanentError):
    """A build step failed for good; the message says which and why."""

    prefix = "StepFailedError"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a temporary failure is retried (durable timers)."""

    max_attempts: int = 6
    first_interval: timedelta = timedelta(seconds=5)
    backoff: float = 2.0
    max_interval: timedelta = timedelta(minutes=2)

    def delay(self, attempt: int) -> timedelta:
        """Back-off before attempt ``attempt + 1`` (attempt counts from 1)."""
        seconds = self.first_interval.total_seconds() * (self.backoff ** (attempt - 1))
        return timedelta(seconds=min(seconds, self.max_interval.total_seconds()))


DEFAULT_RETRY = RetryPolicy()
# A status poll that keeps failing backs off up to this (or its interval, when longer).
POLL_BACKOFF_CAP = timedelta(minutes=5)


def now(context: Any) -> datetime:
    """Orchestration time (replay-safe), always timezone-aware UTC."""
    current: datetime = context.current_utc_datetime
    if current.tzinfo is None:
        current = current.replace(tzinfo=UTC)
    return current


def event_payload(value: Any) -> dict[str, Any]:
    """An external event's data as a dict.

    The durable SDK's ``raise_event`` encodes its data twice (azure-functions-durable-python
    #295), so the orchestrator receives a JSON *string*; a plain HTTP raise delivers an object.
    Accept both; anything else is an empty payload.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def failure_text(error: BaseException) -> str:
    """The useful part of a failed task's message (the SDK appends the stack after ' \\n ')."""
    text = str(error)
    head = text.split(" \n ", 1)[0].strip()
    return head or text.strip()


def call(
    context: Any, name: str, payload: dict[str, Any], retry: RetryPolicy = DEFAULT_RETRY
) -> Flow:
    """Call an activity; retry temporary failures after durable timers, re-raise permanent ones."""
    attempt = 1
    while True:
        try:
            result = yield context.call_activity(name, payload)
            return result
        except Exception as error:  # the SDK raises plain Exception for a failed task
            text = failure_text(error)
            if is_permanent(str(error)):
                raise StepFailedError(f"{name}: {text}") from None
            if attempt >= retry.max_attempts:
                raise TemporaryError(
                    f"{name} still failing after {attempt} attempts: {text}"
                ) from None
            delay = retry.delay(attempt)
            hinted = retry_after_of(str(error))  # Azure's Retry-After, when throttled
            if hinted is not None:
                delay = max(delay, timedelta(seconds=min(hinted, 3600)))
            yield context.create_timer(now(context) + delay)
            attempt += 1


@dataclass(frozen=True)
class Attempt:
    """One activity call's outcome: its result, or the temporary failure that stopped it."""

    result: Any = None
    error: str | None = None  # a temporary failure's text; None when the call succeeded
    retry_after: float | None = None  # Azure's Retry-After hint carried by that failure

    @property
    def ok(self) -> bool:
        return self.error is None


def call_once(context: Any, name: str, payload: dict[str, Any]) -> Flow:
    """Call an activity once; a temporary failure comes back as an :class:`Attempt`.

    For status polls: one poll failing (throttled, 503) is not the operation failing, so the
    caller keeps polling until its own deadline. A permanent failure still raises.
    """
    try:
        result = yield context.call_activity(name, payload)
    except Exception as error:  # the SDK raises plain Exception for a failed task
        text = failure_text(error)
        if is_permanent(str(error)):
            raise StepFailedError(f"{name}: {text}") from None
        return Attempt(error=text, retry_after=retry_after_of(str(error)))
    return Attempt(result=result)


def poll_delay(interval: timedelta, failures: int, retry_after: float | None = None) -> timedelta:
    """How long a poll waits after ``failures`` temporary failures in a row.

    The poll interval, doubled per failure up to ``POLL_BACKOFF_CAP`` (or the interval, when
    that is longer), and never shorter than Azure's Retry-After (capped at an hour).
    """
    delay = interval
    if failures > 0:
        cap = max(interval, POLL_BACKOFF_CAP)
        delay = min(interval * (2 ** min(failures - 1, 16)), cap)
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=min(retry_after, 3600)))
    return delay


Verdict = bool | str
"""A wait's verdict on a state: True = done, False = not yet, a string = failed for that reason."""


def progress(
    context: Any, base: dict[str, Any], phase: str, percent: int, operation: str, **extra: Any
) -> None:
    """Publish progress as custom status: phase, percent and the current Azure operation."""
    status = dict(base)
    status.update(phase=phase, percent=percent, operation=operation, **extra)
    status["updated"] = now(context).isoformat()
    context.set_custom_status(status)
