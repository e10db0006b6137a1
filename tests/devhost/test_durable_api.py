"""The Durable HTTP API end to end: HTTP starters using the REAL SDK client, on the real engine."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

sys.path.insert(0, str(Path(__file__).parent / "apps_http"))
import devhost_testkit as kit

from devhost.host import DevHost

API = "/runtime/webhooks/durabletask"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHost]:
    app = kit.load("devhost_http_app").app
    folder = tmp_path_factory.mktemp("durable")
    with DevHost(app, app_dir=folder, settings={}, task_hub="DurableTests") as running:
        yield running


def start(host: DevHost, orchestrator: str, data: Any = None) -> dict[str, Any]:
    """Start through the app's HTTP starter (client.start_new + create_check_status_response)."""
    body = json.dumps(data) if data is not None else b""
    reply = kit.call("POST", f"{host.url}/api/orchestrators/{orchestrator}", body)
    assert reply.status == 202, reply.text
    payload: dict[str, Any] = reply.json()
    assert reply.header("Location") == payload["statusQueryGetUri"]
    return payload


def client(
    host: DevHost, op: str, instance_id: str = "", data: Any = None, method: str = "POST"
) -> Any:
    url = f"{host.url}/api/client/{op}" + (f"/{instance_id}" if instance_id else "")
    reply = kit.call(method, url, json.dumps(data) if data is not None else b"")
    assert reply.status == 200, reply.text
    return reply.json()


def test_start_and_poll_status_through_the_sdk_client(host: DevHost) -> None:
    links = start(host, "greet_orchestrator", ["Tokyo", "Seattle"])
    assert links["statusQueryGetUri"].startswith(f"{host.url}{API}/instances/{links['id']}?")
    assert "taskHub=DurableTests" in links["statusQueryGetUri"]
    assert links["sendEventPostUri"].endswith(
        "/raiseEvent/{eventName}?taskHub=DurableTests&connection=Storage"
    )
    done = kit.wait_status(links["statusQueryGetUri"])
    assert done["output"] == ["Hello Tokyo!", "Hello Seattle!"]
    assert done["input"] == ["Tokyo", "Seattle"]
    assert done["name"] == "greet_orchestrator"
    final = kit.call("GET", links["statusQueryGetUri"])
    assert final.status == 200


def test_running_status_is_202_with_location(host: DevHost) -> None:
    links = start(host, "approval_orchestrator", {"build": 1})
    running = kit.wait_status(links["statusQueryGetUri"], ("Running",))
    assert running["customStatus"] == "waiting"
    reply = kit.call("GET", links["statusQueryGetUri"])
    assert reply.status == 202
    assert reply.header("Location") == links["statusQueryGetUri"]
    client(host, "terminate", links["id"])


def test_raise_event_through_the_sdk_client_and_the_webhook(host: DevHost) -> None:
    # The SDK client posts json.dumps(data) as JSON: the orchestrator gets that text, as on Azure.
    links = start(host, "approval_orchestrator", {"build": 2})
    kit.wait_status(links["statusQueryGetUri"], ("Running",))
    assert client(host, "raise", links["id"], {"ok": True}) == {"raised": links["id"]}
    done = kit.wait_status(links["statusQueryGetUri"])
    assert done["output"] == {"input": {"build": 2}, "approval": '{"ok": true}'}

    # A plain JSON body on sendEventPostUri arrives as the JSON value.
    links = start(host, "approval_orchestrator", {"build": 3})
    kit.wait_status(links["statusQueryGetUri"], ("Running",))
    url = links["sendEventPostUri"].replace("{eventName}", "approve")
    reply = kit.call("POST", url, {"ok": True}, json_body=True)
    assert reply.status == 202
    done = kit.wait_status(links["statusQueryGetUri"])
    assert done["output"]["approval"] == {"ok": True}
    # ...and raising to a completed instance is 410 Gone.
    gone = kit.call("POST", url, {"late": True}, json_body=True)
    assert gone.status == 410
    assert "takes no events" in gone.json()["error"]["message"]


def test_terminate_status_and_purge_through_the_sdk_client(host: DevHost) -> None:
    links = start(host, "approval_orchestrator", {"build": 4})
    kit.wait_status(links["statusQueryGetUri"], ("Running",))
    client(host, "terminate", links["id"])
    done = kit.wait_status(links["statusQueryGetUri"], ("Terminated",))
    assert done["runtimeStatus"] == "Terminated"
    status = client(host, "status", links["id"], method="GET")
    assert status["runtimeStatus"] == "Terminated"
    assert status["instanceId"] == links["id"]
    # terminating again: the webhook answers 410 (the SDK client treats that as done)
    again = kit.call("POST", links["terminatePostUri"].replace("{text}", "again"))
    assert again.status == 410
    assert client(host, "terminate", links["id"]) == {"terminated": links["id"]}
    assert client(host, "purge", links["id"], method="DELETE") == {"deleted": 1}
    assert client(host, "purge", links["id"], method="DELETE") == {"deleted": 0}
    assert kit.call("GET", links["statusQueryGetUri"]).status == 404
    missing = client(host, "status", links["id"], method="GET")
    assert missing["found"] is False


def test_query_through_the_sdk_client(host: DevHost) -> None:
    done = start(host, "greet_orchestrator", ["Q"])
    kit.wait_status(done["statusQueryGetUri"])
    waiting = start(host, "approval_orchestrator", {"build": 5})
    kit.wait_status(waiting["statusQueryGetUri"], ("Running",))
    completed = client(host, "query", data={"status": ["Completed"]})
    running = client(host, "query", data={"status": ["Running"]})
    everything = client(host, "all", method="GET")
    assert done["id"] in completed
    assert waiting["id"] not in completed
    assert waiting["id"] in running
    assert {done["id"], waiting["id"]} <= set(everything)
    client(host, "terminate", waiting["id"])


def test_wait_for_completion_or_check_status(host: DevHost) -> None:
    reply = kit.call(
        "POST", f"{host.url}/api/orchestrators/greet_orchestrator/wait", json.dumps(["W"])
    )
    assert reply.status == 200
    assert reply.json() == ["Hello W!"]


def test_failed_orchestration_reports_failed(host: DevHost) -> None:
    links = start(host, "failing_orchestrator")
    failed = kit.wait_status(links["statusQueryGetUri"], ("Failed",))
    assert "failed on purpose" in json.dumps(failed["output"])
    assert kit.call("GET", links["statusQueryGetUri"]).status == 200


def test_duplicate_running_instance_id_is_409(host: DevHost) -> None:
    first = client(host, "start-with-id", "fixed-id-1", {"n": 1})
    assert first == {"started": "fixed-id-1"}
    dup = kit.call("POST", f"{host.url}/api/client/start-with-id/fixed-id-1", b"")
    assert dup.status == 409
    assert "fixed-id-1" in dup.json()["error"]
    direct = kit.call("POST", f"{host.url}{API}/orchestrators/approval_orchestrator/fixed-id-1")
    assert direct.status == 409
    assert direct.json()["error"]["code"] == "InstanceExists"
    client(host, "terminate", "fixed-id-1")


def test_unknown_orchestrator_through_the_client_is_a_clean_error(host: DevHost) -> None:
    reply = kit.call("POST", f"{host.url}/api/client/start-unknown")
    assert reply.status == 400
    assert "no_such_orchestrator" in reply.json()["error"]


def test_management_payload_from_the_client(host: DevHost) -> None:
    links = client(host, "links", "some-id", method="GET")
    assert links["id"] == "some-id"
    assert links["statusQueryGetUri"] == (
        f"{host.url}{API}/instances/some-id?taskHub=DurableTests&connection=Storage"
    )


def test_http_api_start_with_input_and_create_and_wait(host: DevHost) -> None:
    reply = kit.call(
        "POST",
        f"{host.url}{API}/orchestrators/greet_orchestrator/api-start-1?timeout=10&pollingInterval=1",
        ["Direct"],
        json_body=True,
    )
    assert reply.status == 200
    assert reply.json()["output"] == ["Hello Direct!"]
    assert reply.json()["instanceId"] == "api-start-1"
    started = kit.call(
        "POST", f"{host.url}{API}/orchestrators/approval_orchestrator", {"x": 1}, json_body=True
    )
    assert started.status == 202
    payload = started.json()
    assert started.header("Location") == payload["statusQueryGetUri"]
    status = kit.wait_status(payload["statusQueryGetUri"], ("Running",))
    assert status["input"] == {"x": 1}
    terminate = kit.call("POST", payload["terminatePostUri"].replace("{text}", "done"))
    assert terminate.status == 202


def test_list_instances_with_filters_and_pages(host: DevHost) -> None:
    ids = []
    for n in range(3):
        reply = kit.call(
            "POST",
            f"{host.url}{API}/orchestrators/greet_orchestrator/page-{n}?timeout=10&pollingInterval=1",
            [f"p{n}"],
            json_body=True,
        )
        assert reply.status == 200
        ids.append(f"page-{n}")
    everything = kit.call("GET", f"{host.url}{API}/instances?runtimeStatus=Completed")
    assert everything.status == 200
    assert set(ids) <= {i["instanceId"] for i in everything.json()}
    seen: list[str] = []
    token: str | None = None
    for _ in range(20):
        headers = {"x-ms-continuation-token": token} if token else {}
        page = kit.call(
            "GET", f"{host.url}{API}/instances?instanceIdPrefix=page-&top=2", headers=headers
        )
        assert page.status == 200
        assert len(page.json()) <= 2
        seen += [i["instanceId"] for i in page.json()]
        token = page.header("x-ms-continuation-token")
        if not token:
            break
    assert sorted(seen) == ids


def test_purge_many_by_filter(host: DevHost) -> None:
    for n in range(2):
        kit.call(
            "POST",
            f"{host.url}{API}/orchestrators/greet_orchestrator/purge-{n}?timeout=10&pollingInterval=1",
            ["x"],
            json_body=True,
        )
    url = f"{host.url}{API}/instances?createdTimeFrom=2000-01-01T00:00:00Z&runtimeStatus=Completed"
    reply = kit.call("DELETE", url)
    assert reply.status == 200
    assert reply.json()["instancesDeleted"] >= 2
    assert kit.call("GET", f"{host.url}{API}/instances/purge-0").status == 404
    assert kit.call("DELETE", url).status == 404  # nothing left to purge


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "fragment"),
    [
        ("POST", "/orchestrators/greet_orchestrator", "{not json", {}, 400, "not valid JSON"),
        ("POST", "/orchestrators/no_such", "", {}, 400, "doesn't exist"),
        ("POST", "/orchestrators/greet_orchestrator/bad%23id", "", {}, 400, "must not contain"),
        ("POST", "/orchestrators/greet_orchestrator/" + "x" * 101, "", {}, 400, "at most 100"),
        (
            "POST",
            "/orchestrators/greet_orchestrator?timeout=abc&pollingInterval=1",
            "",
            {},
            400,
            "timeout",
        ),
        ("GET", "/instances/never-started", "", {}, 404, "No instance with ID 'never-started'"),
        ("GET", "/instances/x?showHistory=maybe", "", {}, 400, "showHistory"),
        ("GET", "/instances?runtimeStatus=Sleeping", "", {}, 400, "runtimeStatus 'Sleeping'"),
        ("GET", "/instances?top=-3", "", {}, 400, "top"),
        ("GET", "/instances?createdTimeFrom=yesterday", "", {}, 400, "createdTimeFrom"),
        ("DELETE", "/instances", "", {}, 400, "createdTimeFrom"),
        ("DELETE", "/instances/never-started", "", {}, 404, "never-started"),
        ("POST", "/instances/never-started/raiseEvent/e", "{}", {}, 404, "never-started"),
        ("POST", "/instances/never-started/terminate", "", {}, 404, "never-started"),
        ("GET", "/instances/x?taskHub=OtherHub", "", {}, 404, "task hub 'OtherHub'"),
        ("POST", "/instances/x/rewind", "", {}, 501, "rewind"),
        ("GET", "/entities/tally/none-yet", "", {}, 404, "@tally@none-yet"),
        ("POST", "/entities/nobody/one?op=add", "", {}, 400, "No entity function named 'nobody'"),
        ("GET", "/entities/tally", "", {}, 400, "entities/{name}/{key}"),
        ("GET", "/nonsense", "", {}, 404, "No such API"),
        ("PUT", "/instances/x", "", {}, 404, "No such API"),
    ],
)
def test_bad_requests_are_4xx_json_naming_the_problem(
    host: DevHost,
    method: str,
    path: str,
    body: str,
    headers: dict[str, str],
    status: int,
    fragment: str,
) -> None:
    reply = kit.call(method, f"{host.url}{API}{path}", body, headers)
    assert reply.status == status, reply.text
    payload = reply.json()
    assert fragment in payload["error"]["message"]
    assert payload["ExceptionMessage"] == payload["error"]["message"]


def test_raise_event_needs_json_content_and_valid_json(host: DevHost) -> None:
    links = start(host, "approval_orchestrator", {"build": 6})
    kit.wait_status(links["statusQueryGetUri"], ("Running",))
    url = links["sendEventPostUri"].replace("{eventName}", "approve")
    form = kit.call("POST", url, "a=b", {"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status == 400
    assert "application/json" in form.json()["error"]["message"]
    broken = kit.call("POST", url, "{oops", {"Content-Type": "application/json"})
    assert broken.status == 400
    assert "not valid JSON" in broken.json()["error"]["message"]
    kit.call("POST", links["terminatePostUri"].replace("{text}", "x"))


def test_entities_through_the_sdk_client_and_the_http_api(host: DevHost) -> None:
    for value in ({"n": 1}, "two", 3):
        client(host, "signal", "t1", {"op": "add", "input": value})
    # Falsy input: the SDK client posts no body, so the operation has no input at all.
    client(host, "signal", "t1", {"op": "add", "input": 0})
    host.engine.wait_idle(10)
    assert client(host, "entity", "t1", method="GET") == {
        "exists": True,
        "state": [{"n": 1}, "two", 3],
    }
    assert client(host, "entity", "t-none", method="GET") == {"exists": False, "state": None}
    # The webhook form: POST .../entities/{name}/{key}?op= with a JSON body, GET for the state.
    # The host stores the parsed body serialized again and the SDK decodes the input twice, so
    # a caller posts the input's JSON text as a JSON string, as the SDK client does.
    signal = kit.call(
        "POST",
        f"{host.url}{API}/entities/Tally/t2?op=add",
        json.dumps(json.dumps("five")),
        {"Content-Type": "application/json"},
    )
    assert signal.status == 202, signal.text
    host.engine.wait_idle(10)
    state = kit.call("GET", f"{host.url}{API}/entities/tally/t2")
    assert (state.status, state.json()) == (200, ["five"])
    client(host, "signal", "t2", {"op": "reset"})
    host.engine.wait_idle(10)
    assert kit.call("GET", f"{host.url}{API}/entities/tally/t2").status == 404


def test_rpc_base_serves_the_same_api(host: DevHost) -> None:
    links = start(host, "greet_orchestrator", ["R"])
    kit.wait_status(links["statusQueryGetUri"])
    rpc = kit.call("GET", f"{host.url}/durabletask/instances/{quote(links['id'])}?showInput=True")
    assert rpc.status == 200
    assert rpc.json()["output"] == ["Hello R!"]


def test_purge_by_filter_through_the_sdk_client(host: DevHost) -> None:
    links = start(host, "greet_orchestrator", ["purge-by"])
    kit.wait_status(links["statusQueryGetUri"])
    deleted = client(host, "purge-by", data={"status": ["Completed"]})["deleted"]
    assert deleted >= 1
    assert kit.call("GET", links["statusQueryGetUri"]).status == 404
    # nothing Completed left: the API answers 404, which the SDK reads as "0 deleted"
    assert client(host, "purge-by", data={"status": ["Completed"]}) == {"deleted": 0}


@pytest.fixture(scope="module")
def keyed_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHost]:
    app = kit.load("devhost_http_app").app
    folder = tmp_path_factory.mktemp("keyed")
    with DevHost(app, app_dir=folder, settings={"DEVHOST_FUNCTION_KEY": "k1"}) as running:
        yield running


def test_keys_on_the_public_api_not_on_the_rpc_base(keyed_host: DevHost) -> None:
    links = start(keyed_host, "greet_orchestrator", ["Key"])
    status_url = links["statusQueryGetUri"]
    assert status_url.endswith("&code=k1")
    assert kit.wait_status(status_url)["output"] == ["Hello Key!"]
    without = kit.call("GET", status_url.replace("&code=k1", ""))
    assert without.status == 401
    assert without.json()["ExceptionMessage"] == without.json()["error"]["message"]
    rpc = kit.call("GET", f"{keyed_host.url}/durabletask/instances/{links['id']}")
    assert rpc.status == 200
