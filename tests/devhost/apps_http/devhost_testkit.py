"""Small helpers shared by the devhost front tests: load a test app, call the host, poll."""

from __future__ import annotations

import http.client
import importlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

APPS = Path(__file__).parent


def load(name: str) -> ModuleType:
    """Import a test app module from this folder (once per process: apps index once)."""
    if str(APPS) not in sys.path:
        sys.path.insert(0, str(APPS))
    return importlib.import_module(name)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


def call(
    method: str,
    url: str,
    body: bytes | str | Any = None,
    headers: dict[str, str] | None = None,
    *,
    json_body: bool = False,
    timeout: float = 30.0,
) -> Reply:
    """One HTTP request (no redirects, no exceptions on 4xx/5xx)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    sent_headers = dict(headers or {})
    if json_body:
        body = json.dumps(body)
        sent_headers.setdefault("Content-Type", "application/json")
    data = body.encode() if isinstance(body, str) else body
    try:
        conn.request(method, path, body=data, headers=sent_headers)
        response = conn.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        conn.close()


def poll(
    check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.01, what: str = ""
) -> Any:
    """Call ``check`` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or check}: last {last!r}")


def wait_status(url: str, statuses: tuple[str, ...] = ("Completed",), timeout: float = 15.0) -> Any:
    """Poll a statusQueryGetUri until the instance reaches one of ``statuses``."""

    def check() -> Any:
        reply = call("GET", url)
        if reply.status in (200, 202):
            payload = reply.json()
            if payload.get("runtimeStatus") in statuses:
                return payload
        return None

    return poll(check, timeout, what=f"{url} to reach {statuses}")
