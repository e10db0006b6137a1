"""The clock pieces of the two-process world, in process: durable time, awaited remotes,
a RemoteClock that outlives its owner, ``--clock-url`` forms, and the SDK's request logging."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from devhost.clock import ClockFile, VirtualClock
from devhost.remote_clock import ClockService, RemoteClock, normalise_clock_url, parse_query
from shared.azure.clients import HTTP_LOGGER, configure_sdk_logging

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


class _Owner:
    """A clock owner: ClockService over a loopback HTTP server on ``port`` (0: any)."""

    def __init__(self, clock: VirtualClock, port: int = 0) -> None:
        self.clock = clock
        service = self.service = ClockService(clock)

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

            do_GET = do_PUT = do_DELETE = _answer  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.service.close()
        self.clock.close()


def _eventually(probe: Any, real_timeout: float = 10.0) -> None:
    done = threading.Event()
    deadline = threading.Timer(real_timeout, done.set)
    deadline.start()
    try:
        while not probe():
            assert not done.wait(0.01), "condition not met in time"
    finally:
        deadline.cancel()


# -- the durable clock ----------------------------------------------------------------------------
def test_clock_file_round_trips_and_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "state.clock.json"
    state = ClockFile(path)
    assert (state.now, state.remotes) == (None, [])
    state.save_now(T0)
    state.save_remotes(["emulator", "emulator"])
    again = ClockFile(path)
    assert (again.now, again.remotes) == (T0, ["emulator"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.clock.json"]
    with pytest.raises(ValueError, match="backwards"):
        again.save_now(T0 - timedelta(seconds=1))


def test_a_restarted_virtual_clock_resumes_from_its_last_instant(tmp_path: Path) -> None:
    path = tmp_path / "state.clock.json"
    first = VirtualClock(T0, state=ClockFile(path))
    first.advance(timedelta(hours=5))
    first.close()  # or killed: every instant is saved before anyone sees it
    assert ClockFile(path).now == T0 + timedelta(hours=5)

    resumed = VirtualClock(state=ClockFile(path))  # no start: not the wall clock either
    earlier = VirtualClock(T0, state=ClockFile(path))  # an earlier start never wins
    try:
        assert resumed.now() == T0 + timedelta(hours=5)
        assert earlier.now() == T0 + timedelta(hours=5)
    finally:
        resumed.close()
        earlier.close()


def test_every_jump_is_saved_before_it_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "state.clock.json"
    clock = VirtualClock(T0, state=ClockFile(path))
    due = T0 + timedelta(minutes=30)
    p = clock.participant("timers", lambda: due)
    try:
        clock.wait_until(due, real_timeout=10)
        assert clock.now() == due
        assert ClockFile(path).now == due
    finally:
        p.close()
        clock.close()


def test_time_holds_for_an_awaited_participant_until_it_arrives(tmp_path: Path) -> None:
    clock = VirtualClock(T0)
    due = T0 + timedelta(hours=1)
    p = clock.participant("timers", lambda: due)
    try:
        clock.expect("emulator")
        assert clock.expected() == ["emulator"]
        placeholder = [x for x in clock.participants() if x.name == "awaiting:emulator"]
        assert [x.busy_count for x in placeholder] == [1]  # a busy participant: no jump
        clock.arrived("emulator")
        assert clock.expected() == []
        clock.wait_until(due, real_timeout=10)
        assert clock.now() == due
    finally:
        p.close()
        clock.close()


def test_an_awaited_participant_that_never_comes_is_given_up_after_its_patience() -> None:
    clock = VirtualClock(T0)
    due = T0 + timedelta(hours=1)
    p = clock.participant("timers", lambda: due)
    try:
        clock.expect("emulator", patience=0.1)
        clock.wait_until(due, real_timeout=10)
        assert clock.now() == due
        assert clock.expected() == []
    finally:
        p.close()
        clock.close()


def test_a_durable_owner_awaits_the_remotes_it_had(tmp_path: Path) -> None:
    path = tmp_path / "state.clock.json"
    owner = VirtualClock(T0, state=ClockFile(path))
    service = ClockService(owner)
    service.put_participant("emulator", {"busy": 0, "next_due": None})
    assert ClockFile(path).remotes == ["emulator"]
    service.close()  # the owner stops (or dies): its remotes are still remembered
    owner.close()
    assert ClockFile(path).remotes == ["emulator"]

    restarted = VirtualClock(state=ClockFile(path))
    service = ClockService(restarted)
    try:
        assert restarted.expected() == ["emulator"]
        assert service.get_clock()["awaiting"] == ["emulator"]
        service.put_participant("emulator", {"busy": 0, "next_due": None})
        assert restarted.expected() == []
        service.delete_participant("emulator")  # a remote that leaves is forgotten
        assert ClockFile(path).remotes == []
    finally:
        service.close()
        restarted.close()


# -- the remote side --------------------------------------------------------------------------
@pytest.fixture
def owner() -> Iterator[_Owner]:
    server = _Owner(VirtualClock(T0))
    yield server
    server.close()


def test_clock_url_may_be_the_base_or_the_clock_route() -> None:
    base = "http://127.0.0.1:7071"
    assert normalise_clock_url(base) == base
    assert normalise_clock_url(base + "/") == base
    assert normalise_clock_url(base + "/_clock") == base
    assert normalise_clock_url(base + "/_clock/") == base
    for bad in ("127.0.0.1:7071", "ftp://127.0.0.1:1", "http://127.0.0.1:1/_clock?x=1"):
        with pytest.raises(ValueError, match="clock URL"):
            normalise_clock_url(bad)


def test_remote_clock_accepts_the_clock_route_url(owner: _Owner) -> None:
    remote = RemoteClock(owner.url + "/_clock")
    try:
        assert remote.virtual is True
        assert remote.now() == T0
    finally:
        remote.close()


def test_remote_clock_outlives_its_owner_and_reconnects() -> None:
    first = _Owner(VirtualClock(T0))
    port = first.port
    remote = RemoteClock(first.url, heartbeat=0.2, max_backoff=0.1)
    due = T0 + timedelta(hours=2)
    wanted: list[datetime | None] = [None]  # nothing due yet: the first owner never jumps
    participant = remote.participant("emulator", lambda: wanted[0])
    try:
        first.clock.advance(timedelta(minutes=10))
        seen = remote.now()
        assert seen == T0 + timedelta(minutes=10)
        first.close()  # the owner dies

        # Nothing raises while it is away, and time stands still at what was last seen.
        assert remote.now() == seen
        participant.enter()
        participant.leave()
        remote.wait_until(due, real_timeout=0.2)
        assert remote.now() == seen
        assert remote.online is False

        wanted[0] = due  # work due while the owner is away: reported once it is back
        participant.notify()
        later = T0 + timedelta(minutes=10)
        second = _Owner(VirtualClock(later), port=port)  # restarted on the same address
        try:
            _eventually(lambda: remote.online and "emulator" in second.service._remotes)
            assert remote.reconnects == 1
            # Reported again: the new owner knows its due time and jumps to it.
            second.clock.wait_until(due, real_timeout=10)
            assert second.clock.now() == due
            remote.wait_until(due, real_timeout=10)
            assert remote.now() == due
        finally:
            remote.close()
            second.close()
    finally:
        remote.close()


# -- the SDK's request logging ----------------------------------------------------------------
def test_sdk_request_logging_is_off_unless_a_setting_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger(HTTP_LOGGER)
    before = logger.level
    try:
        assert configure_sdk_logging({}) == logging.WARNING
        assert logger.level == logging.WARNING
        assert configure_sdk_logging({"AZURE_SDK_HTTP_LOG_LEVEL": "info"}) == logging.INFO
        assert logger.isEnabledFor(logging.INFO)
        assert configure_sdk_logging({"AZURE_SDK_HTTP_LOG_LEVEL": "loud"}) == logging.WARNING
        monkeypatch.delenv("AZURE_SDK_HTTP_LOG_LEVEL", raising=False)
        logger.setLevel(logging.NOTSET)
        from shared.azure.clients import credential
        from shared.settings import load_settings

        monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000001")
        monkeypatch.setenv("AZURE_ARM_ENDPOINT", "https://127.0.0.1:1")
        monkeypatch.setenv("AZURE_CA_BUNDLE", "ca.pem")
        credential(load_settings())  # every client takes its credential first
        assert logger.level == logging.WARNING
    finally:
        logger.setLevel(before)
