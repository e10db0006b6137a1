"""Every Event Grid function of the app has its subscription in the one table."""

from __future__ import annotations

import subprocess
import sys

import pytest

from devhost.functions import index_app
from function_app import app
from shared.event_subscriptions import (
    APP_EVENT_SUBSCRIPTIONS,
    BUILD_FUNCTIONS,
    SYSTEM_TOPIC_SUBSCRIPTIONS,
)


def _event_grid_functions() -> set[str]:
    # through the devhost's cached index: get_functions() may run once per app object
    return {f.name for f in index_app(app).of_type("eventGridTrigger")}


def test_every_event_grid_function_is_subscribed() -> None:
    functions = _event_grid_functions()
    assert functions, "the scan found no Event Grid function"
    subscribed = set(APP_EVENT_SUBSCRIPTIONS) | set(SYSTEM_TOPIC_SUBSCRIPTIONS)
    missing = sorted(functions - subscribed)
    assert not missing, f"shared/event_subscriptions.py lacks: {missing}"
    unknown = sorted(subscribed - functions)
    assert not unknown, f"subscriptions name functions the app does not have: {unknown}"
    assert set(BUILD_FUNCTIONS) <= functions


@pytest.mark.parametrize(
    ("args", "table"),
    [([], APP_EVENT_SUBSCRIPTIONS), (["--system"], SYSTEM_TOPIC_SUBSCRIPTIONS)],
    ids=["app-topic", "system-topic"],
)
def test_the_hook_reads_one_line_per_subscription(
    args: list[str], table: dict[str, tuple[str, ...]]
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "shared.event_subscriptions", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    parsed = {line.split()[0]: tuple(line.split()[1].split(",")) for line in out}
    assert parsed == table
