"""Callbacks: a signed notice reaches a local HTTPS receiver; the watcher and notifier do the rest.

The receiver is a real TLS server on loopback with a certificate from a throwaway CA (trustme,
as the emulator does); the activity trusts that CA through ``CALLBACK_CA_BUNDLE``. The receiver
checks the HMAC-SHA256 signature over the exact bytes it got with the shared secret.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme
from api_kit import IMAGE, FakeDurable, app_functions

from activities.callbacks import deliver_callback, notice_bytes
from orchestrators.api import api_notify
from shared import names
from shared.domain.callbacks import (
    SIGNATURE_HEADER,
    callback_url_problem,
    retry_delay,
    sign,
    signature_matches,
)
from triggers.callbacks import watch_once

SECRET = "receiver-shares-this-secret"


class Receiver:
    """A loopback HTTPS server that records each POST and answers ``answers`` in turn."""

    def __init__(self, tmp: Path) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_path = tmp / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.answers.pop(0) if receiver.answers else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}/hooks/itsm"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    r = Receiver(tmp_path)
    monkeypatch.setenv("CALLBACK_ALLOWED_HOSTS", f"127.0.0.1:{r.server.server_address[1]}")
    monkeypatch.setenv("CALLBACK_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("CALLBACK_CA_BUNDLE", str(r.ca_path))
    yield r
    r.close()


NOTICE = {"notice_id": "n1", "event": "operation.ended", "status": "Completed", "image": IMAGE}


def test_the_receiver_verifies_the_signature_of_the_notice(receiver: Receiver) -> None:
    result = deliver_callback({"url": receiver.url, "notice": NOTICE, "attempt": 1})
    assert result == {"delivered": True, "status": 204}
    [(headers, body)] = receiver.received
    assert json.loads(body) == NOTICE
    assert signature_matches(SECRET, body, headers[SIGNATURE_HEADER.lower()])
    assert not signature_matches("another-secret", body, headers[SIGNATURE_HEADER.lower()])
    assert not signature_matches(SECRET, body + b" ", headers[SIGNATURE_HEADER.lower()])
    assert headers[SIGNATURE_HEADER.lower()] == sign(SECRET, notice_bytes(NOTICE))


def test_the_secret_is_never_in_the_notice_or_the_log(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("DEBUG"):
        deliver_callback({"url": receiver.url, "notice": NOTICE, "attempt": 1})
        deliver_callback({"url": "https://elsewhere.example/x", "notice": NOTICE, "attempt": 1})
    [(headers, body)] = receiver.received
    assert SECRET not in body.decode()
    assert all(SECRET not in v for v in headers.values())
    assert SECRET not in caplog.text


def test_a_server_error_is_retried_a_client_error_is_not(receiver: Receiver) -> None:
    receiver.answers = [503, 410]
    first = deliver_callback({"url": receiver.url, "notice": NOTICE, "attempt": 1})
    assert first["delivered"] is False
    assert first["permanent"] is False
    second = deliver_callback({"url": receiver.url, "notice": NOTICE, "attempt": 2})
    assert second["permanent"] is True


def test_an_untrusted_certificate_is_not_delivered(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CALLBACK_CA_BUNDLE")
    result = deliver_callback({"url": receiver.url, "notice": NOTICE, "attempt": 1})
    assert result["delivered"] is False
    assert receiver.received == []


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://hooks.example.com/x", "https"),
        ("https://other.example.com/x", "allow-list"),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("https://hooks.example.com:8443/x", None),
        ("https://HOOKS.example.com/x", None),
        ("https://127.0.0.1:9443/x", None),
        ("https://127.0.0.1:9444/x", "allow-list"),
        ("not a url", "https"),
    ],
)
def test_callback_urls_are_https_on_the_allow_list(url: str, problem: str | None) -> None:
    found = callback_url_problem(url, ["hooks.example.com", "127.0.0.1:9443"])
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def test_retries_back_off_doubling_to_an_hour() -> None:
    seconds = [retry_delay(a).total_seconds() for a in range(1, 10)]
    assert seconds[:4] == [30, 60, 120, 240]
    assert max(seconds) == 3600
    assert seconds == sorted(seconds)


# ---- the notifier orchestration, step by step ---------------------------------------------


class _Task:
    def __init__(self, kind: str, detail: Any) -> None:
        self.kind, self.detail = kind, detail


class FakeContext:
    """What ``api_notify`` asks of its context, recorded."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.current_utc_datetime = datetime(2026, 6, 1, tzinfo=UTC)
        self.statuses: list[Any] = []

    def get_input(self) -> dict[str, Any]:
        return self.spec

    def set_custom_status(self, value: Any) -> None:
        self.statuses.append(value)

    def wait_for_external_event(self, name: str) -> _Task:
        return _Task("event", name)

    def call_activity(self, name: str, payload: Any) -> _Task:
        return _Task("activity", (name, payload))

    def create_timer(self, at: datetime) -> _Task:
        return _Task("timer", at)


def test_the_notifier_waits_then_retries_on_timers_until_delivered() -> None:
    spec = {
        "notice_id": "n9",
        "callback_url": "https://hooks.example.com/x",
        "operation": {"kind": "instance", "name": "activation", "instance_id": "activation:x"},
        "max_attempts": 5,
    }
    context = FakeContext(spec)
    gen = _orchestrator(context)
    task = next(gen)
    assert (task.kind, task.detail) == ("event", names.EVT_OPERATION_ENDED)
    assert context.statuses[-1]["state"] == "waiting"
    task = gen.send(json.dumps({"status": "Completed", "outcome": {"version": "1.0.3"}}))
    assert task.kind == "activity"
    name, payload = task.detail
    assert name == names.ACT_DELIVER_CALLBACK
    assert payload["notice"]["status"] == "Completed"
    assert payload["notice"]["outcome"] == {"version": "1.0.3"}
    task = gen.send({"delivered": False, "status": 503})
    assert task.kind == "timer"
    assert task.detail == context.current_utc_datetime + retry_delay(1)
    task = gen.send(None)
    assert task.kind == "activity"
    assert task.detail[1]["attempt"] == 2
    with pytest.raises(StopIteration) as done:
        gen.send({"delivered": True, "status": 200})
    assert done.value.value == {"delivered": True, "attempts": 2, "status": 200}


def test_the_notifier_gives_up_on_a_permanent_refusal() -> None:
    context = FakeContext({"callback_url": "https://h/x", "operation": {}, "max_attempts": 5})
    gen = _orchestrator(context)
    next(gen)
    gen.send({"status": "Failed"})
    with pytest.raises(StopIteration) as done:
        gen.send({"delivered": False, "status": 404, "permanent": True})
    assert done.value.value["delivered"] is False
    assert done.value.value["attempts"] == 1


def _orchestrator(context: FakeContext) -> Any:
    """The user generator under the SDK's orchestration decorator."""
    return api_notify._function._func.orchestrator_function(context)


# ---- the watcher ----------------------------------------------------------------------------


def test_the_watcher_releases_notices_of_ended_operations_only() -> None:
    client = FakeDurable()
    client.put("activation:a", names.ORCH_ACTIVATE_VERSION, "Completed", output={"ok": True})
    client.put("activation:b", names.ORCH_ACTIVATE_VERSION, "Running")
    client.put(
        "build-request:a",
        names.ORCH_BUILD_REQUEST,
        "Completed",
        custom_status={"outcome": "accepted", "build_id": f"{IMAGE}-000001"},
    )
    client.put(names.build_instance_id(f"{IMAGE}-000001"), names.ORCH_BUILD_IMAGE, "Completed")
    client.put(
        "build-request:b",
        names.ORCH_BUILD_REQUEST,
        "Running",
        custom_status={"outcome": "accepted", "build_id": f"{IMAGE}-000002"},
    )
    waiting = {
        "notify:1": {"kind": "instance", "instance_id": "activation:a"},
        "notify:2": {"kind": "instance", "instance_id": "activation:b"},
        "notify:3": {"kind": "build", "instance_id": "build-request:a"},
        "notify:4": {"kind": "build", "instance_id": "build-request:b"},  # build queued
    }
    for instance_id, operation in waiting.items():
        client.put(
            instance_id,
            names.ORCH_API_NOTIFY,
            "Running",
            custom_status={"state": "waiting", "operation": operation},
        )
    client.put("notify:5", names.ORCH_API_NOTIFY, "Running", custom_status={"state": "delivering"})
    assert asyncio.run(watch_once(client)) == 2
    raised = {c[1]: c[3] for c in client.calls if c[0] == "raise_event"}
    assert set(raised) == {"notify:1", "notify:3"}
    assert raised["notify:1"]["status"] == "Completed"
    assert raised["notify:1"]["outcome"] == {"ok": True}
    assert raised["notify:3"]["status"] == "Completed"
    assert raised["notify:3"]["instance_id"] == names.build_instance_id(f"{IMAGE}-000001")


def test_the_app_registers_the_callback_functions() -> None:
    listed = {info.name for info in app_functions()}
    assert {
        names.ORCH_API_NOTIFY,
        names.ORCH_API_ANSWER,
        names.ACT_DELIVER_CALLBACK,
        "callback_watch",
    } <= listed
