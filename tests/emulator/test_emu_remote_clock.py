"""The emulator on the devhost's clock through RemoteClock (what ``--clock-url`` does)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.mgmt.compute import ComputeManagementClient

import emulator
from devhost.clock import VirtualClock
from devhost.remote_clock import ClockService, RemoteClock, parse_query
from emulator.scenario import load_scenario
from tests.emulator.conftest import FAST_CLIENT, StaticCredential


class _Owner:
    """The devhost side: ClockService on a tiny loopback HTTP server."""

    def __init__(self, clock: VirtualClock) -> None:
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

            do_GET = do_PUT = do_DELETE = do_POST = _answer  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.service.close()


@pytest.fixture
def shared(small_scenario: dict[str, Any], tmp_path: Path) -> Iterator[tuple[Any, VirtualClock]]:
    scenario = load_scenario(small_scenario)
    owner_clock = VirtualClock(scenario.start_time)
    owner = _Owner(owner_clock)
    remote = RemoteClock(owner.url)
    running = emulator.start(scenario, clock=remote, ca_dir=tmp_path)
    try:
        yield running, owner_clock
    finally:
        running.stop()
        remote.close()
        owner.close()
        owner_clock.close()


def test_owner_time_waits_for_and_jumps_to_emulator_work(
    shared: tuple[Any, VirtualClock], make_vm_body: Any
) -> None:
    running, owner_clock = shared
    client = ComputeManagementClient(
        StaticCredential(),
        "00000000-0000-0000-0000-000000000001",
        base_url=running.url,
        connection_verify=str(running.ca_path),
        **FAST_CLIENT,
    )
    start = owner_clock.now()
    vm = client.virtual_machines.begin_create_or_update("rg", "r1", make_vm_body()).result()
    assert vm.properties.provisioning_state == "Succeeded"
    # The VM's three minutes passed on the owner's clock, driven by the emulator's schedule.
    assert owner_clock.now() - start >= timedelta(minutes=2)
    assert running.emu.now() >= start + timedelta(minutes=2)
    client.close()
