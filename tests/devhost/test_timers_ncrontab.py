"""NCRONTAB and TimeSpan schedules as the Functions host reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devhost.ncrontab import ScheduleError, parse_schedule

T0 = datetime(2025, 1, 1, tzinfo=UTC)  # a Wednesday


def firings(expression: str, count: int, start: datetime = T0) -> list[datetime]:
    schedule = parse_schedule(expression, anchor=start)
    out: list[datetime] = []
    at = start
    for _ in range(count):
        at = schedule.next_after(at)
        out.append(at)
    return out


def test_six_fields_seconds_first() -> None:
    assert firings("0 */5 * * * *", 3) == [T0 + timedelta(minutes=m) for m in (5, 10, 15)]
    assert firings("*/20 * * * * *", 2) == [T0 + timedelta(seconds=s) for s in (20, 40)]


def test_five_fields_fire_at_second_zero() -> None:
    assert firings("*/5 * * * *", 2) == [T0 + timedelta(minutes=m) for m in (5, 10)]


def test_weekday_names_and_ranges() -> None:
    got = firings("0 30 9 * * Mon-Fri", 3)
    assert [d.weekday() for d in got] == [2, 3, 4]  # Wed, Thu, Fri
    assert all(d.hour == 9 and d.minute == 30 for d in got)


def test_both_day_fields_must_match_like_ncrontab() -> None:
    # The first Tuesday of the month; Vixie cron would also fire every Tuesday and day 1-7.
    got = firings("0 0 8 1-7 * Tue", 2)
    assert got == [datetime(2025, 1, 7, 8, tzinfo=UTC), datetime(2025, 2, 4, 8, tzinfo=UTC)]


def test_timespan_is_an_interval_from_the_anchor() -> None:
    schedule = parse_schedule("00:05:00", anchor=T0)
    assert schedule.next_after(T0 + timedelta(minutes=7)) == T0 + timedelta(minutes=10)
    assert firings("1.00:00:00", 1) == [T0 + timedelta(days=1)]


def test_results_are_aware_utc() -> None:
    (first,) = firings("0 0 * * * *", 1)
    assert first.tzinfo is not None
    assert first.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("", "empty"),
        ("* * * *", "4 fields"),
        ("0 0 25 * * *", "hour field '25': 25 is outside 0-23"),
        ("0 0 0 ? * *", "unsupported character"),
        ("0 0 0 * * 7", "outside 0-6"),
        ("0 */0 * * * *", "step"),
        ("0 0 0 30 2 *", "0 0 0 30 2 *"),
        ("25:00:00", "hours must be < 24"),
        ("00:00:00", "longer than zero"),
    ],
)
def test_bad_schedules_name_the_problem(expression: str, fragment: str) -> None:
    with pytest.raises(ScheduleError, match=None) as info:
        parse_schedule(expression)
    assert fragment in str(info.value)


def test_naive_times_are_refused() -> None:
    schedule = parse_schedule("0 * * * * *")
    with pytest.raises(ValueError, match="naive"):
        schedule.next_after(datetime(2025, 1, 1))  # noqa: DTZ001 - the point of the test
