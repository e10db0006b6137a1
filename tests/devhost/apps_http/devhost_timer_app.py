"""A test Functions app with timer triggers only (virtual-time firing, runOnStartup, failures)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

TICKS: dict[str, list[dict[str, Any]]] = {}
NOW: list[Callable[[], datetime]] = []  # the test puts the host clock's now() here
LOCK = threading.Lock()


def record(name: str, timer: func.TimerRequest) -> None:
    with LOCK:
        TICKS.setdefault(name, []).append(
            {
                "at": NOW[0]() if NOW else None,
                "past_due": timer.past_due,
                "next": timer.schedule_status.get("Next"),
                "schedule": timer.schedule,
            }
        )


@app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer")
def every_five_minutes(timer: func.TimerRequest) -> None:
    record("every_five_minutes", timer)


@app.timer_trigger(schedule="%HOURLY_SCHEDULE%", arg_name="timer", run_on_startup=True)
async def hourly_from_setting(timer: func.TimerRequest) -> None:
    record("hourly_from_setting", timer)


@app.timer_trigger(schedule="0 0 */2 * * *", arg_name="timer")
def failing_every_two_hours(timer: func.TimerRequest) -> None:
    record("failing_every_two_hours", timer)
    raise RuntimeError("this timer fails on purpose")


@app.timer_trigger(schedule="not a schedule", arg_name="timer")
def broken_schedule(timer: func.TimerRequest) -> None:
    record("broken_schedule", timer)
