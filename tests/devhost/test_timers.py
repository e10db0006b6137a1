"""Timer triggers fire on their NCRONTAB schedules in host time (virtual: real milliseconds)."""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

from devhost.clock import RealClock, VirtualClock
from devhost.functions import index_app
from devhost.host import DevHost
from devhost.triggers import FunctionInvoker, TimerScheduler

APPS = Path(__file__).parent / "apps_http"
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def load(name: str) -> ModuleType:
    if str(APPS) not in sys.path:
        sys.path.insert(0, str(APPS))
    return importlib.import_module(name)


def wait_until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.005)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def timer_app() -> Iterator[ModuleType]:
    module = load("devhost_timer_app")
    with module.LOCK:
        module.TICKS.clear()
    yield module
    module.NOW.clear()


def test_every_five_minutes_fires_twelve_times_in_a_virtual_hour(timer_app: ModuleType) -> None:
    clock = VirtualClock(T0)
    clock.pause()
    invoker = FunctionInvoker()
    scheduler = TimerScheduler(
        index_app(timer_app.app), invoker, clock, settings={"HOURLY_SCHEDULE": "0 0 * * * *"}
    )
    timer_app.NOW[:] = [clock.now]
    started = time.monotonic()
    try:
        scheduler.start()
        clock.resume()
        wait_until(lambda: len(timer_app.TICKS.get("every_five_minutes", [])) >= 12)
        elapsed = time.monotonic() - started
    finally:
        scheduler.stop()
        invoker.stop()
        clock.close()
    ticks = timer_app.TICKS["every_five_minutes"][:12]
    assert [t["at"] for t in ticks] == [T0 + timedelta(minutes=5 * i) for i in range(1, 13)]
    assert not any(t["past_due"] for t in ticks)
    assert ticks[0]["next"] == (T0 + timedelta(minutes=10)).isoformat()
    assert ticks[0]["schedule"] == {"AdjustForDST": True}
    assert elapsed < 5.0  # a virtual hour in real milliseconds, not an hour


def test_run_on_startup_setting_schedule_and_failures(timer_app: ModuleType) -> None:
    clock = VirtualClock(T0)
    clock.pause()
    invoker = FunctionInvoker()
    scheduler = TimerScheduler(
        index_app(timer_app.app), invoker, clock, settings={"HOURLY_SCHEDULE": "0 0 * * * *"}
    )
    timer_app.NOW[:] = [clock.now]
    try:
        scheduler.start()
        clock.resume()
        wait_until(lambda: len(timer_app.TICKS.get("failing_every_two_hours", [])) >= 2)
        wait_until(lambda: scheduler.timers["failing_every_two_hours"].failures >= 2)
    finally:
        scheduler.stop()
        invoker.stop()
        clock.close()
    hourly = [t["at"] for t in timer_app.TICKS["hourly_from_setting"][:3]]
    # runOnStartup fires at once, then the schedule (from %HOURLY_SCHEDULE%) takes over.
    assert hourly == [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
    failing = [t["at"] for t in timer_app.TICKS["failing_every_two_hours"][:2]]
    assert failing == [T0 + timedelta(hours=2), T0 + timedelta(hours=4)]  # failures don't stop it
    assert "broken_schedule" not in scheduler.timers
    assert "broken_schedule" not in timer_app.TICKS
    assert "not a schedule" in scheduler.errors["broken_schedule"]


def test_missing_setting_is_reported_not_fatal(timer_app: ModuleType) -> None:
    clock = VirtualClock(T0)
    clock.pause()
    invoker = FunctionInvoker()
    scheduler = TimerScheduler(index_app(timer_app.app), invoker, clock, settings={})
    try:
        scheduler.start()
        assert "HOURLY_SCHEDULE" in scheduler.errors["hourly_from_setting"]
        assert "every_five_minutes" in scheduler.timers
    finally:
        scheduler.stop()
        invoker.stop()
        clock.close()


def test_fire_now_runs_out_of_schedule_in_real_time(timer_app: ModuleType) -> None:
    clock = RealClock()
    invoker = FunctionInvoker()
    scheduler = TimerScheduler(
        index_app(timer_app.app), invoker, clock, settings={"HOURLY_SCHEDULE": "0 0 0 1 1 *"}
    )
    timer_app.NOW[:] = [clock.now]
    try:
        scheduler.start()
        # runOnStartup fires the hourly one at once, in real time too.
        wait_until(lambda: len(timer_app.TICKS.get("hourly_from_setting", [])) >= 1)
        scheduler.fire_now("every_five_minutes")
        wait_until(lambda: len(timer_app.TICKS.get("every_five_minutes", [])) >= 1)
    finally:
        scheduler.stop()
        invoker.stop()
        clock.close()
    (tick,) = timer_app.TICKS["every_five_minutes"]
    assert tick["past_due"] is False
    with pytest.raises(KeyError):
        scheduler.fire_now("broken_schedule")


def test_timers_through_the_devhost_admin_api_and_clock_routes(
    timer_app: ModuleType, tmp_path: Path
) -> None:
    kit = load("devhost_testkit")
    clock = VirtualClock(T0)
    clock.pause()
    timer_app.NOW[:] = [clock.now]
    settings = {"HOURLY_SCHEDULE": "0 0 * * * *"}
    try:
        with DevHost(timer_app.app, app_dir=tmp_path, clock=clock, settings=settings) as host:
            clock.resume()
            kit.poll(lambda: len(timer_app.TICKS.get("every_five_minutes", [])) >= 12)
            listing = {f["name"]: f for f in kit.call("GET", f"{host.url}/admin/functions").json()}
            five = listing["every_five_minutes"]
            assert five["schedule"] == "0 */5 * * * *"
            assert five["firings"] >= 12
            assert "error" not in five
            assert "not a schedule" in listing["broken_schedule"]["error"]
            status = kit.call("GET", f"{host.url}/admin/host/status").json()
            assert status["clock"]["virtual"] is True
            assert "broken_schedule" in status["errors"]
            refused = kit.call("POST", f"{host.url}/admin/functions/broken_schedule")
            assert refused.status == 409
            clock.pause()
            before = len(timer_app.TICKS["every_five_minutes"])
            fired = kit.call("POST", f"{host.url}/admin/functions/every_five_minutes", b"{}")
            assert fired.status == 202
            kit.poll(lambda: len(timer_app.TICKS["every_five_minutes"]) > before)
            shared = kit.call("GET", f"{host.url}/_clock").json()
            assert shared["virtual"] is True
            assert datetime.fromisoformat(shared["now"].replace("Z", "+00:00")) == clock.now()
            bad = kit.call("PUT", f"{host.url}/_clock/participants/x", b'{"busy": -1}')
            assert bad.status == 400
            assert "busy" in bad.json()["error"]["message"]
    finally:
        clock.close()
