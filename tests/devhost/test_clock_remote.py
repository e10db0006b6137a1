"""RemoteClock and the /_clock routes: another process shares the owner's (virtual) time."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

import pytest

from devhost.clock import BaseClock, RealClock, VirtualClock
from devhost.remote_clock import ClockService, RemoteClock, parse_query

T0 = datetime(2025, 1, 1, tzinfo=UTC)


class _Owner:
    """A tiny HTTP server mounting ClockService.route, as the devhost server does."""

    def __init__(self, clock: BaseClock, lease: float = 30.0) -> None:
        self.service = ClockService(clock, lease=lease)
        service = self.service

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, payload = service.route(
                    self.command, parts.path, parse_query(parts.query), body
                )
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_DELETE = do_POST = _answer  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.service.close()


@pytest.fixture
def owner_clock() -> Iterator[VirtualClock]:
    clock = VirtualClock(T0)
    yield clock
    clock.close()


@pytest.fixture
def owner(owner_clock: VirtualClock) -> Iterator[_Owner]:
    server = _Owner(owner_clock)
    yield server
    server.close()


def _request(url: str, method: str = "GET", body: Any = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    req = Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urlopen(req, timeout=5) as response:
            return response.status, json.loads(response.read())
    except Exception as exc:  # urllib raises HTTPError for 4xx
        status = getattr(exc, "code", 0)
        payload = json.loads(exc.read()) if hasattr(exc, "read") else {}
        return status, payload


def _eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.005)
    raise AssertionError("condition not reached in time")


def test_remote_now_follows_the_owner(owner: _Owner, owner_clock: VirtualClock) -> None:
    remote = RemoteClock(owner.url)
    try:
        assert remote.virtual is True
        assert remote.now() == T0
        owner_clock.advance(timedelta(hours=2))
        assert remote.now() == T0 + timedelta(hours=2)
    finally:
        remote.close()


def test_a_busy_remote_holds_virtual_time(owner: _Owner, owner_clock: VirtualClock) -> None:
    owner_clock.pause()
    local = owner_clock.participant("devhost", lambda: T0 + timedelta(minutes=10))
    remote = RemoteClock(owner.url)
    participant = remote.participant("emulator", lambda: None)
    try:
        participant.enter()
        owner_clock.resume()
        time.sleep(0.1)
        assert owner_clock.now() == T0, "the owner jumped while the remote was busy"
        participant.leave()
        _eventually(lambda: owner_clock.now() == T0 + timedelta(minutes=10))
    finally:
        local.close()
        remote.close()


def test_remote_due_time_comes_first_and_wait_until_wakes(
    owner: _Owner, owner_clock: VirtualClock
) -> None:
    owner_clock.pause()
    due: list[datetime | None] = [T0 + timedelta(minutes=5)]
    local = owner_clock.participant("devhost", lambda: T0 + timedelta(minutes=10))
    remote = RemoteClock(owner.url)
    participant = remote.participant("emulator", lambda: due[0])
    woke: list[datetime] = []

    def worker() -> None:
        remote.wait_until(T0 + timedelta(minutes=5), real_timeout=10)
        with participant.busy():
            woke.append(remote.now())
            due[0] = None

    thread = threading.Thread(target=worker)
    try:
        thread.start()
        owner_clock.resume()
        thread.join(timeout=10)
        assert woke == [T0 + timedelta(minutes=5)]
        # The remote reported nothing more due: the owner moves on to its own timer.
        _eventually(lambda: owner_clock.now() == T0 + timedelta(minutes=10))
    finally:
        local.close()
        remote.close()


def test_closing_the_remote_removes_its_participant(
    owner: _Owner, owner_clock: VirtualClock
) -> None:
    remote = RemoteClock(owner.url)
    remote.participant("emulator", lambda: T0 + timedelta(hours=1))
    assert [p["name"] for p in owner.service.get_clock()["participants"]] == ["emulator"]
    remote.close()
    assert owner.service.get_clock()["participants"] == []
    assert all(not p.name.startswith("remote:") for p in owner_clock.participants())


def test_bad_requests_name_the_field(owner: _Owner) -> None:
    status, body = _request(f"{owner.url}/_clock/participants/x", "PUT", {"busy": -1})
    assert status == 400
    assert body["error"]["message"].startswith("busy:")
    status, body = _request(
        f"{owner.url}/_clock/participants/x", "PUT", {"busy": 0, "next_due": "tomorrow"}
    )
    assert status == 400
    assert "next_due" in body["error"]["message"]
    status, body = _request(
        f"{owner.url}/_clock/participants/x", "PUT", {"busy": 0, "next_due": "2025-01-01T00:00:00"}
    )
    assert status == 400
    assert "UTC offset" in body["error"]["message"]
    status, body = _request(f"{owner.url}/_clock/wait?after=yesterday")
    assert status == 400
    assert body["error"]["message"].startswith("after:")
    status, body = _request(f"{owner.url}/_clock/participants/ghost", "DELETE")
    assert status == 404
    status, body = _request(f"{owner.url}/_clock/nowhere")
    assert status == 404


def test_get_clock_reports_time_and_remotes(owner: _Owner) -> None:
    status, body = _request(
        f"{owner.url}/_clock/participants/emu",
        "PUT",
        {"busy": 2, "next_due": "2025-01-01T01:00:00Z"},
    )
    assert status == 200
    assert body["now"] == "2025-01-01T00:00:00.000000Z"
    status, body = _request(f"{owner.url}/_clock")
    assert status == 200
    assert body["virtual"] is True
    assert body["participants"] == [
        {"name": "emu", "busy": 2, "next_due": "2025-01-01T01:00:00.000000Z"}
    ]
    # An older report (lower seq) never overwrites a newer one.
    _request(f"{owner.url}/_clock/participants/emu", "PUT", {"busy": 0, "seq": 5})
    _request(f"{owner.url}/_clock/participants/emu", "PUT", {"busy": 3, "seq": 4})
    assert owner.service.get_clock()["participants"][0]["busy"] == 0


def test_wait_long_polls_until_time_moves(owner: _Owner, owner_clock: VirtualClock) -> None:
    started = time.monotonic()
    status, body = _request(f"{owner.url}/_clock/wait?after=2025-01-01T00:00:00Z&timeout=0.2")
    assert status == 200
    assert body["now"] == "2025-01-01T00:00:00.000000Z"
    assert time.monotonic() - started >= 0.15
    threading.Timer(0.05, owner_clock.advance, args=(timedelta(seconds=1),)).start()
    status, body = _request(f"{owner.url}/_clock/wait?after=2025-01-01T00:00:00Z&timeout=5")
    assert body["now"] == "2025-01-01T00:00:01.000000Z"


def test_a_silent_remote_loses_its_lease(owner_clock: VirtualClock) -> None:
    server = _Owner(owner_clock, lease=0.2)
    try:
        owner_clock.pause()
        _request(f"{server.url}/_clock/participants/dead", "PUT", {"busy": 1})
        assert server.service.get_clock()["participants"][0]["busy"] == 1
        _eventually(lambda: server.service.get_clock()["participants"] == [], timeout=3)
        local = owner_clock.participant("devhost", lambda: T0 + timedelta(minutes=1))
        owner_clock.resume()
        _eventually(lambda: owner_clock.now() == T0 + timedelta(minutes=1))
        local.close()
    finally:
        server.close()


def test_real_owner_real_time() -> None:
    clock = RealClock()
    server = _Owner(clock)
    try:
        remote = RemoteClock(server.url)
        assert remote.virtual is False
        assert abs((remote.now() - datetime.now(UTC)).total_seconds()) < 1
        started = time.monotonic()
        remote.wait_until(remote.now() + timedelta(milliseconds=100), real_timeout=5)
        assert 0.08 <= time.monotonic() - started < 2
        remote.close()
    finally:
        server.close()
        clock.close()


def test_the_devhost_serves_the_clock_to_a_remote(tmp_path: Any) -> None:
    """Mounted in the real devhost: a busy remote holds the engine's durable timers."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "apps"))
    from engine_harness import app_for, load

    from devhost.host import DevHost

    clock = VirtualClock(T0)
    load("engine_sample_app").reset(clock.now)
    host = DevHost(app_for("engine_sample_app"), app_dir=tmp_path, settings={}, clock=clock)
    with host:
        remote = RemoteClock(host.url)
        try:
            participant = remote.participant("emulator", lambda: None)
            participant.enter()
            iid = host.engine.start_new("sleepy", None, 5)
            host.engine.wait_for(iid, 10, statuses=("Running",))
            time.sleep(0.1)
            assert remote.now() == T0, "virtual time moved while the remote was busy"
            participant.leave()
            status = host.engine.wait_for(iid, 10)
            assert status["output"] == (T0 + timedelta(minutes=5)).isoformat()
            assert remote.now() == T0 + timedelta(minutes=5)
        finally:
            remote.close()
    clock.close()
