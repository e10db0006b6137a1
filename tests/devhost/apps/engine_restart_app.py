"""A blueprint for the kill-and-restart test: slow activities that log when they start and end.

The log file (``DEVHOST_RESTART_LOG``) is how the test sees which activities were in flight
when the process was killed and how often each one ran.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

import azure.durable_functions as df

bp = df.Blueprint()


def _log(line: str) -> None:
    path = os.environ["DEVHOST_RESTART_LOG"]
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


@bp.activity_trigger(input_name="payload")
def slow_step(payload: dict[str, Any]) -> str:
    key = payload["key"]
    _log(f"start {key} {os.getpid()}")
    time.sleep(float(payload["sleep"]))
    _log(f"end {key} {os.getpid()}")
    return f"done-{key}"


@bp.orchestration_trigger(context_name="context")
def restart_flow(context: df.DurableOrchestrationContext) -> Any:
    spec = context.get_input()
    fan = [
        context.call_activity("slow_step", {"key": f"fan-{i}", "sleep": spec["sleep"]})
        for i in range(int(spec["fan"]))
    ]
    results = yield context.task_all(fan)
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=spec["timer"]))
    for i in range(int(spec["tail"])):
        step = {"key": f"tail-{i}", "sleep": spec["sleep"]}
        results.append((yield context.call_activity("slow_step", step)))
    return results
