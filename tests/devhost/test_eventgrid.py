"""The Event Grid webhook: validation handshakes (both schemas), batches, failures, bad input."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent / "apps_http"))
import devhost_testkit as kit

from devhost.host import DevHost

NOTIFY = {"aeg-event-type": "Notification", "Content-Type": "application/json"}


def eg_event(n: int, **data: Any) -> dict[str, Any]:
    return {
        "id": f"ev-{n}",
        "topic": "/subscriptions/s/resourceGroups/rg",
        "subject": f"/things/{n}",
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2025-01-01T00:00:00.1234567Z",
        "data": {"n": n, **data},
        "dataVersion": "1",
        "metadataVersion": "1",
    }


def cloud_event(n: int) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"ce-{n}",
        "source": "/imagefactory",
        "type": "ImageFactory.BuildFinished",
        "time": "2025-01-01T00:00:00Z",
        "subject": f"builds/{n}",
        "data": {"n": n},
    }


@pytest.fixture(scope="module")
def app() -> ModuleType:
    return kit.load("devhost_http_app")


@pytest.fixture(scope="module")
def host(app: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHost]:
    with DevHost(app.app, app_dir=tmp_path_factory.mktemp("eg"), settings={}) as running:
        yield running


@pytest.fixture
def events(app: ModuleType) -> list[dict[str, Any]]:
    with app.LOCK:
        app.EVENTS.clear()
    return app.EVENTS  # type: ignore[no-any-return]


def hook(host: DevHost, function: str = "on_event") -> str:
    return f"{host.url}/runtime/webhooks/eventgrid?functionName={function}"


def test_subscription_validation_handshake(host: DevHost, events: list[dict[str, Any]]) -> None:
    body = [
        {
            "id": "v-1",
            "topic": "/subscriptions/s",
            "subject": "",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2025-01-01T00:00:00Z",
            "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
            "dataVersion": "2",
        }
    ]
    reply = kit.call(
        "POST",
        hook(host),
        json.dumps(body),
        {"aeg-event-type": "SubscriptionValidation", "Content-Type": "application/json"},
    )
    assert reply.status == 200
    assert reply.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert events == []  # the function is not invoked for the handshake


def test_cloudevents_abuse_protection_handshake(host: DevHost) -> None:
    reply = kit.call(
        "OPTIONS", hook(host), headers={"WebHook-Request-Origin": "eventgrid.azure.net"}
    )
    assert reply.status == 200
    assert reply.header("WebHook-Allowed-Origin") == "eventgrid.azure.net"
    assert reply.header("WebHook-Allowed-Rate") == "*"
    missing = kit.call("OPTIONS", hook(host))
    assert missing.status == 400
    assert "WebHook-Request-Origin" in missing.json()["error"]["message"]


def test_event_grid_batch_invokes_once_per_event_in_order(
    host: DevHost, events: list[dict[str, Any]]
) -> None:
    batch = [eg_event(n) for n in range(3)]
    reply = kit.call("POST", hook(host), json.dumps(batch), NOTIFY)
    assert reply.status == 202
    assert reply.json() == {"delivered": 3}
    assert [e["id"] for e in events] == ["ev-0", "ev-1", "ev-2"]
    first = events[0]
    assert first["kind"] == "EventGridEvent"
    assert first["type"] == "Microsoft.Resources.ResourceWriteSuccess"
    assert first["subject"] == "/things/0"
    assert first["data"] == {"n": 0}


def test_cloudevents_single_and_batch(host: DevHost, events: list[dict[str, Any]]) -> None:
    single = kit.call("POST", hook(host), json.dumps(cloud_event(1)), NOTIFY)
    assert single.status == 202
    batch = kit.call("POST", hook(host), json.dumps([cloud_event(2), cloud_event(3)]), NOTIFY)
    assert batch.status == 202
    assert [(e["kind"], e["id"]) for e in events] == [
        ("CloudEvent", "ce-1"),
        ("CloudEvent", "ce-2"),
        ("CloudEvent", "ce-3"),
    ]
    assert events[0]["source"] == "/imagefactory"
    assert events[0]["data"] == {"n": 1}


def test_a_failing_event_is_a_500_naming_it_and_the_others_are_delivered(
    host: DevHost, events: list[dict[str, Any]]
) -> None:
    batch = [eg_event(1), eg_event(2, fail=True), eg_event(3)]
    reply = kit.call("POST", hook(host), json.dumps(batch), NOTIFY)
    assert reply.status == 500
    payload = reply.json()
    assert payload["failed"][0]["id"] == "ev-2"
    assert "asked to fail" in payload["failed"][0]["error"]
    assert payload["delivered"] == 2
    assert [e["id"] for e in events] == ["ev-1", "ev-2", "ev-3"]
    # the host is still serving
    assert kit.call("POST", hook(host), json.dumps([eg_event(4)]), NOTIFY).status == 202


def test_unsubscribe_is_accepted(host: DevHost, events: list[dict[str, Any]]) -> None:
    reply = kit.call("POST", hook(host), b"", {"aeg-event-type": "Unsubscribe"})
    assert reply.status == 202
    assert events == []


@pytest.mark.parametrize(
    ("function", "body", "headers", "status", "fragment"),
    [
        ("nope", "[]", NOTIFY, 404, "no Event Grid trigger function named 'nope'"),
        ("hello", "[]", NOTIFY, 404, "Event Grid functions: on_event"),
        ("on_event", "[{not json", NOTIFY, 400, "not valid JSON"),
        ("on_event", '"a string"', NOTIFY, 400, "JSON array of events"),
        ("on_event", "", NOTIFY, 400, "no body"),
        ("on_event", "[1]", NOTIFY, 400, "event [0] must be a JSON object"),
        ("on_event", '[{"eventType": "x", "subject": "s"}]', NOTIFY, 400, "'id'"),
        (
            "on_event",
            '[{"id": "1", "eventType": "x", "subject": "s", "eventTime": "yesterday"}]',
            NOTIFY,
            400,
            "'eventTime'",
        ),
        ("on_event", '{"specversion": "0.3", "id": "1"}', NOTIFY, 400, "specversion"),
        ("on_event", '{"specversion": "1.0", "id": "1", "type": "t"}', NOTIFY, 400, "'source'"),
        ("on_event", "[]", {"aeg-event-type": "Bogus"}, 400, "aeg-event-type 'Bogus'"),
        (
            "on_event",
            json.dumps([eg_event(1)]),
            {"aeg-event-type": "SubscriptionValidation"},
            400,
            "validationCode",
        ),
    ],
)
def test_bad_deliveries_are_4xx_json_naming_the_problem(
    host: DevHost,
    events: list[dict[str, Any]],
    function: str,
    body: str,
    headers: dict[str, str],
    status: int,
    fragment: str,
) -> None:
    reply = kit.call("POST", hook(host, function), body, headers)
    assert reply.status == status
    assert fragment in reply.json()["error"]["message"]
    assert events == []


def test_missing_function_name_and_wrong_method(host: DevHost) -> None:
    reply = kit.call("POST", f"{host.url}/runtime/webhooks/eventgrid", "[]", NOTIFY)
    assert reply.status == 400
    assert "functionName" in reply.json()["error"]["message"]
    wrong = kit.call("GET", hook(host))
    assert wrong.status == 405
    assert wrong.header("Allow") == "POST, OPTIONS"


def test_event_grid_trigger_with_a_durable_client_starts_an_orchestration(host: DevHost) -> None:
    event = eg_event(77)
    reply = kit.call("POST", hook(host, "on_event_start"), json.dumps([event]), NOTIFY)
    assert reply.status == 202
    status = host.engine.wait_for("eg-ev-77", real_timeout=15)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == ["Hello /things/77!"]


def test_admin_invoke_delivers_an_event(host: DevHost, events: list[dict[str, Any]]) -> None:
    body = {"input": json.dumps(eg_event(9))}
    reply = kit.call("POST", f"{host.url}/admin/functions/on_event", body, json_body=True)
    assert reply.status == 202
    assert [e["id"] for e in events] == ["ev-9"]
