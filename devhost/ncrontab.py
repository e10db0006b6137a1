"""Timer-trigger schedules as the Functions host reads them: NCRONTAB or a TimeSpan.

* NCRONTAB with six fields, ``{second} {minute} {hour} {day} {month} {day-of-week}``, or the
  classic five (no seconds, fires at second 0). Numbers, ``*``, ranges ``a-b``, lists ``a,b``,
  steps ``*/n`` / ``a-b/n`` and English month / weekday names. As in NCrontab, when both day
  fields are restricted a time must match *both* (``0 0 8 1-7 * Tue`` is the first Tuesday),
  unlike Vixie cron's "either". Quartz extensions (``?``, ``L``, ``W``, ``#``) are refused.
* A TimeSpan ``hh:mm:ss`` (or ``d.hh:mm:ss``): a constant interval, the first firing one
  interval after the schedule starts.

Times are UTC (the host's default; ``WEBSITE_TIME_ZONE`` is not emulated).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from croniter import croniter

from devhost.clock import require_aware

_FIELD_NAMES = ("second", "minute", "hour", "day", "month", "day-of-week")
_FIELD_OK = re.compile(r"^[0-9A-Za-z*,/\-]+$")
_TIMESPAN = re.compile(r"^(?:(?P<days>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{1,2})(?::(?P<s>\d{1,2}))?$")
_RANGES = {
    "second": (0, 59),
    "minute": (0, 59),
    "hour": (0, 23),
    "day": (1, 31),
    "month": (1, 12),
    "day-of-week": (0, 6),
}


class ScheduleError(ValueError):
    """A schedule expression the host would refuse; the message names the field and reason."""


class Schedule(Protocol):
    """When a timer fires: the first occurrence strictly after a given time."""

    @property
    def expression(self) -> str: ...

    def next_after(self, after: datetime) -> datetime: ...


@dataclass(frozen=True)
class CronSchedule:
    """An NCRONTAB expression (5 or 6 fields), evaluated in UTC."""

    expression: str
    with_seconds: bool

    def next_after(self, after: datetime) -> datetime:
        after = require_aware(after, "after")
        # NCRONTAB puts seconds first; croniter reads them there when told so.
        it = croniter(
            self.expression,
            after,
            day_or=False,
            second_at_beginning=self.with_seconds,
            ret_type=datetime,
        )
        nxt: datetime = it.get_next(datetime)
        return require_aware(nxt, "next occurrence").astimezone(UTC)


@dataclass(frozen=True)
class IntervalSchedule:
    """A TimeSpan schedule: a fixed interval counted from ``anchor`` (the host's start)."""

    expression: str
    interval: timedelta
    anchor: datetime | None = None

    def next_after(self, after: datetime) -> datetime:
        after = require_aware(after, "after")
        if self.anchor is None:
            return after + self.interval
        anchor = require_aware(self.anchor, "anchor")
        if after < anchor:
            return anchor + self.interval
        periods = int((after - anchor) / self.interval) + 1
        return anchor + periods * self.interval


def _check_cron_field(name: str, text: str) -> None:
    if not _FIELD_OK.match(text):
        bad = sorted({c for c in text if not re.match(r"[0-9A-Za-z*,/\-]", c)})
        raise ScheduleError(
            f"{name} field {text!r}: unsupported character(s) {''.join(bad)!r} "
            "(NCRONTAB allows digits, names, '*', ',', '-', '/')"
        )
    low, high = _RANGES[name]
    for part in text.split(","):
        if part == "":
            raise ScheduleError(f"{name} field {text!r}: empty list item")
        base, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            raise ScheduleError(f"{name} field {text!r}: step {step!r} must be a positive integer")
        for bound in base.split("-"):
            if bound.isdigit() and not low <= int(bound) <= high:
                raise ScheduleError(f"{name} field {text!r}: {bound} is outside {low}-{high}")
            if bound == "" and base != "":
                raise ScheduleError(f"{name} field {text!r}: malformed range")


def parse_schedule(expression: str, anchor: datetime | None = None) -> Schedule:
    """Parse a timer schedule; raises :class:`ScheduleError` naming the problem."""
    text = (expression or "").strip()
    if not text:
        raise ScheduleError("schedule is empty")
    span = _TIMESPAN.match(text)
    if span:
        days = int(span.group("days") or 0)
        hours, minutes = int(span.group("h")), int(span.group("m"))
        seconds = int(span.group("s") or 0)
        if hours > 23 or minutes > 59 or seconds > 59:
            raise ScheduleError(f"TimeSpan {text!r}: hours must be < 24, minutes and seconds < 60")
        interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if interval <= timedelta(0):
            raise ScheduleError(f"TimeSpan {text!r} must be longer than zero")
        return IntervalSchedule(text, interval, anchor)
    fields = text.split()
    if len(fields) not in (5, 6):
        raise ScheduleError(
            f"schedule {text!r} has {len(fields)} fields; NCRONTAB needs 6 "
            "({second} {minute} {hour} {day} {month} {day-of-week}) or 5 (no seconds)"
        )
    names = _FIELD_NAMES if len(fields) == 6 else _FIELD_NAMES[1:]
    for name, field in zip(names, fields, strict=True):
        _check_cron_field(name, field)
    schedule = CronSchedule(" ".join(fields), with_seconds=len(fields) == 6)
    try:
        schedule.next_after(datetime(2000, 1, 1, tzinfo=UTC))
    except (ValueError, KeyError, TypeError) as exc:
        raise ScheduleError(f"schedule {text!r}: {exc}") from None
    return schedule
