"""No delivery crashes the Event Grid webhook; the real app acknowledges what can never succeed.

The real app on the devhost also shows the HTTP edge end to end: a nested or truncated build
request is refused and starts nothing.

Event Grid retries a 5xx for 24 hours, so the webhook answers 5xx only when a function failed
(a retry may succeed); a delivery that is malformed, too deep or too large is a 4xx JSON error.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent / "apps_http"))
import devhost_testkit as kit

from devhost.eventgrid import MAX_DELIVERY_BYTES, MAX_DELIVERY_DEPTH
from devhost.functions import load_app
from devhost.host import DevHost
from shared import names

ROOT = Path(__file__).resolve().parents[2]
NOTIFY = {"aeg-event-type": "Notification", "Content-Type": "application/json"}
SUB = "11111111-1111-1111-1111-111111111111"
FOREIGN = "99999999-9999-9999-9999-999999999999"

# Every Event Grid function of the app: each must acknowledge a foreign delivery.
EVENT_GRID_FUNCTIONS = frozenset(
    {
        "on_marketplace_image_published",
        "on_sysprep_signal",
        "on_image_version_staged",
        "on_image_version_validated",
        "on_resource_event",
    }
)


@pytest.fixture(scope="module")
def app() -> ModuleType:
    return kit.load("devhost_http_app")


@pytest.fixture(scope="module")
def host(app: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHost]:
    with DevHost(app.app, app_dir=tmp_path_factory.mktemp("egedge"), settings={}) as running:
        yield running


@pytest.fixture
def events(app: ModuleType) -> list[dict[str, Any]]:
    with app.LOCK:
        app.EVENTS.clear()
    return app.EVENTS  # type: ignore[no-any-return]


def hook(host: DevHost, function: str = "on_event") -> str:
    return f"{host.url}/runtime/webhooks/eventgrid?functionName={function}"


def nested_event(depth: int) -> str:
    """An Event Grid delivery (array, event, data, ...) whose containers nest ``depth`` deep."""
    event = {
        "id": "ev-deep",
        "subject": "s",
        "eventType": "T",
        "eventTime": "2025-01-01T00:00:00Z",
        "dataVersion": "1",
        "data": "DATA",
    }
    data = "[" * (depth - 2) + "]" * (depth - 2)
    return json.dumps([event]).replace('"DATA"', data)


def test_deeply_nested_delivery_is_a_400_naming_the_body(
    host: DevHost, events: list[dict[str, Any]]
) -> None:
    reply = kit.call("POST", hook(host), "[" * 100_000 + "]" * 100_000, NOTIFY)
    assert reply.status == 400
    error = reply.json()["error"]
    assert "Event Grid delivery" in error["message"]
    assert "nested" in error["message"]
    assert events == []


def test_nesting_past_the_limit_is_refused_and_at_the_limit_delivered(
    host: DevHost, events: list[dict[str, Any]]
) -> None:
    assert json.loads(nested_event(4))[0]["data"] == [[]]
    reply = kit.call("POST", hook(host), nested_event(MAX_DELIVERY_DEPTH + 1), NOTIFY)
    assert reply.status == 400
    assert str(MAX_DELIVERY_DEPTH) in reply.json()["error"]["message"]
    assert events == []
    reply = kit.call("POST", hook(host), nested_event(MAX_DELIVERY_DEPTH), NOTIFY)
    assert reply.status == 202, reply.text
    assert len(events) == 1


def test_a_delivery_over_the_cap_is_a_413_naming_the_limit(
    host: DevHost, events: list[dict[str, Any]]
) -> None:
    body = json.dumps([{"id": "x", "data": "x" * MAX_DELIVERY_BYTES}])
    reply = kit.call("POST", hook(host), body, NOTIFY)
    assert reply.status == 413
    error = reply.json()["error"]
    assert error["code"] == "PayloadTooLarge"
    assert str(MAX_DELIVERY_BYTES) in error["message"]
    assert reply.json()["limit_bytes"] == MAX_DELIVERY_BYTES
    assert events == []


# -- the real app on the devhost ------------------------------------------------------------------
@pytest.fixture(scope="module")
def app_host() -> Iterator[DevHost]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
        patch.setenv("ALLOWED_SUBSCRIPTIONS", SUB)
        patch.delenv("IMAGE_CATALOGUE_PATH", raising=False)
        settings = {
            "TASKHUB_NAME": "edgetests",
            "AZURE_SUBSCRIPTION_ID": SUB,
            "DEVHOST_PRINCIPAL": "edge@tests:Operator",  # the API needs a principal
        }
        with DevHost(load_app("function_app:app"), app_dir=ROOT, settings=settings) as running:
            yield running


def marketplace_cloud_event(source: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "ce-market-1",
        "type": names.EG_MARKETPLACE_IMAGE_PUBLISHED,
        "source": source,
        "subject": "marketplace/MicrosoftWindowsDesktop/windows-11/win11-25h2-avd",
        "time": "2026-01-01T00:00:00Z",
        "data": {
            "publisher": "MicrosoftWindowsDesktop",
            "offer": "windows-11",
            "sku": "win11-25h2-avd",
            "version": "26100.1.1",
            "location": "westeurope",
        },
    }


@pytest.mark.parametrize(
    "function", sorted(EVENT_GRID_FUNCTIONS), ids=lambda name: name.removeprefix("on_")
)
def test_a_foreign_cloudevent_is_acknowledged_by_every_event_grid_function(
    app_host: DevHost, function: str
) -> None:
    event = marketplace_cloud_event(f"/subscriptions/{FOREIGN}/resourceGroups/eg")
    reply = kit.call("POST", hook(app_host, function), json.dumps(event), NOTIFY)
    assert reply.status == 202, reply.text
    assert reply.json() == {"delivered": 1}
    queues, _ = app_host.engine.query(instance_id_prefix=names.BUILD_REQUEST_PREFIX)
    assert queues == [], "nothing was queued"


def test_every_event_grid_function_of_the_app_is_covered(app_host: DevHost) -> None:
    listed = {f["name"] for f in app_host.functions_listing() if f["trigger"] == "eventGridTrigger"}
    assert listed == EVENT_GRID_FUNCTIONS


def test_deep_json_to_the_build_route_is_a_400_naming_the_body(app_host: DevHost) -> None:
    url = f"{app_host.url}/api/images/win11-office/builds"
    reply = kit.call(
        "POST", url, "[" * 100_000 + "]" * 100_000, {"Content-Type": "application/json"}
    )
    assert reply.status == 400, reply.text
    assert [d["field"] for d in reply.json()["error"]["details"]] == ["body"]
    queues, _ = app_host.engine.query(instance_id_prefix=names.BUILD_REQUEST_PREFIX)
    assert queues == []


def test_deep_json_through_the_admin_invoke_is_a_400(
    host: DevHost, events: list[dict[str, Any]]
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for body in (json.dumps({"input": deep}), '{"input": ' + deep + "}"):
        reply = kit.call("POST", f"{host.url}/admin/functions/on_event", body, NOTIFY)
        assert reply.status == 400, reply.text
        assert "nested" in reply.json()["error"]["message"]
    assert events == []


def test_a_build_request_cut_short_is_refused_and_starts_nothing(app_host: DevHost) -> None:
    """The issue's repro: Content-Length 100, no body, client closes; was 202 and a build."""
    head = (
        "POST /api/images/win11-office/builds HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", app_host.port), timeout=10) as sock:
        sock.sendall(head.encode())
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    queues, _ = app_host.engine.query(instance_id_prefix=names.BUILD_REQUEST_PREFIX)
    assert queues == []
