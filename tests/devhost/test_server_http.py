"""HTTP triggers through the devhost's server: routes, methods, keys, responses, bad input."""

from __future__ import annotations

import http.client
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "apps_http"))
import devhost_testkit as kit

from devhost.clock import VirtualClock
from devhost.host import DevHost

HOST_JSON = {
    "version": "2.0",
    "extensions": {"http": {"routePrefix": "api"}, "durableTask": {"hubName": "%TASKHUB_NAME%"}},
}


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("app")
    (folder / "host.json").write_text(json.dumps(HOST_JSON))
    return folder


@pytest.fixture(scope="module")
def host(app_dir: Path) -> Iterator[DevHost]:
    app = kit.load("devhost_http_app").app
    with DevHost(app, app_dir=app_dir, settings={"TASKHUB_NAME": "fronttests"}) as running:
        yield running


@pytest.fixture(scope="module")
def keyed_host(app_dir: Path) -> Iterator[DevHost]:
    app = kit.load("devhost_http_app").app
    settings = {"DEVHOST_FUNCTION_KEY": "fkey", "DEVHOST_MASTER_KEY": "mkey"}
    with DevHost(app, app_dir=app_dir, settings=settings) as running:
        yield running


def test_route_params_query_headers_and_body(host: DevHost) -> None:
    reply = kit.call(
        "POST", f"{host.url}/api/items/42/red?x=1&y=two", b"payload", {"x-test": "yes"}
    )
    assert reply.status == 201
    assert reply.header("x-served-by") == "items"
    got = reply.json()
    assert got["method"] == "POST"
    assert got["route"] == {"id": "42", "tag": "red"}
    assert got["params"] == {"x": "1", "y": "two"}
    assert got["header"] == "yes"
    assert got["body"] == "payload"
    assert got["url"] == f"{host.url}/api/items/42/red?x=1&y=two"


def test_optional_parameter_and_constraint(host: DevHost) -> None:
    assert kit.call("GET", f"{host.url}/api/items/7").json()["route"] == {"id": "7"}
    assert kit.call("GET", f"{host.url}/api/hello").text == "hello world"
    assert kit.call("GET", f"{host.url}/api/hello/ada").text == "hello ada"
    assert kit.call("GET", f"{host.url}/api/hello?name=bob").text == "hello bob"
    # {id:int} does not take "abc"; "new" is served by the literal route.
    missing = kit.call("GET", f"{host.url}/api/items/abc")
    assert missing.status == 404
    assert "no HTTP function has a route" in missing.json()["error"]["message"]
    assert kit.call("GET", f"{host.url}/api/items/new").text == "the literal route wins"


def test_methods_filter_answers_404_naming_the_allowed_methods(host: DevHost) -> None:
    reply = kit.call("DELETE", f"{host.url}/api/items/1")
    assert reply.status == 404
    message = reply.json()["error"]["message"]
    assert "'items'" in message
    assert "GET, POST" in message


def test_async_function_context_and_string_result(host: DevHost) -> None:
    assert kit.call("POST", f"{host.url}/api/echo", b"shout").body == b"SHOUT"
    ctx = kit.call("GET", f"{host.url}/api/ctx").json()
    assert ctx["function"] == "ctx"
    assert len(ctx["invocation"]) == 36
    plain = kit.call("POST", f"{host.url}/api/secret")
    assert plain.status == 200
    assert plain.text == "admin only"
    assert plain.header("content-type") == "text/plain; charset=utf-8"


def test_none_result_is_204(host: DevHost) -> None:
    reply = kit.call("GET", f"{host.url}/api/nothing")
    assert reply.status == 204
    assert reply.body == b""


def test_a_failing_function_is_a_500_json_and_the_server_keeps_serving(host: DevHost) -> None:
    for _ in range(3):
        reply = kit.call("GET", f"{host.url}/api/boom")
        assert reply.status == 500
        error = reply.json()["error"]
        assert error["code"] == "FunctionFailed"
        assert "blew up on purpose" in error["message"]
    assert kit.call("GET", f"{host.url}/api/hello").status == 200


def test_keys_not_enforced_without_configuration(host: DevHost) -> None:
    assert kit.call("GET", f"{host.url}/api/items/1").status == 200
    assert kit.call("GET", f"{host.url}/admin/host/status").status == 200


def test_function_keys_when_configured(keyed_host: DevHost) -> None:
    url = f"{keyed_host.url}/api/items/1"
    denied = kit.call("GET", url)
    assert denied.status == 401
    assert "x-functions-key" in denied.json()["error"]["message"]
    assert kit.call("GET", url, headers={"x-functions-key": "fkey"}).status == 200
    assert kit.call("GET", f"{url}?code=fkey").status == 200
    assert kit.call("GET", f"{url}?code=mkey").status == 200  # the master key opens every level
    assert kit.call("GET", f"{url}?code=wrong").status == 401
    # admin level: the master key only
    assert kit.call("GET", f"{keyed_host.url}/api/secret?code=fkey").status == 401
    assert kit.call("GET", f"{keyed_host.url}/api/secret?code=mkey").status == 200
    # anonymous routes stay open
    assert kit.call("GET", f"{keyed_host.url}/api/hello").status == 200
    # the admin API wants the master key too
    assert kit.call("GET", f"{keyed_host.url}/admin/functions").status == 401
    assert kit.call("GET", f"{keyed_host.url}/admin/functions?code=mkey").status == 200


def test_admin_listing_and_status(host: DevHost) -> None:
    status = kit.call("GET", f"{host.url}/admin/host/status").json()
    assert status["state"] == "Running"
    assert status["taskHub"] == "fronttests"
    assert status["routePrefix"] == "api"
    listing = {f["name"]: f for f in kit.call("GET", f"{host.url}/admin/functions").json()}
    assert listing["items"]["invokeUrlTemplate"] == f"{host.url}/api/items/{{id:int}}/{{tag?}}"
    assert listing["items"]["methods"] == ["GET", "POST"]
    assert listing["items"]["authLevel"] == "function"
    assert listing["greet_orchestrator"]["trigger"] == "orchestrationTrigger"
    assert listing["http_start"]["durableClient"] is True
    assert listing["on_event"]["webhookUrl"].endswith(
        "/runtime/webhooks/eventgrid?functionName=on_event"
    )
    one = kit.call("GET", f"{host.url}/admin/functions/say_hello").json()
    assert one == {"name": "say_hello", "trigger": "activityTrigger"}
    assert kit.call("GET", f"{host.url}/admin/functions/nope").status == 404


def test_admin_invoke_refuses_http_functions(host: DevHost) -> None:
    reply = kit.call("POST", f"{host.url}/admin/functions/hello", {"input": ""}, json_body=True)
    assert reply.status == 400
    assert "call their route" in reply.json()["error"]["message"]


def test_unknown_paths_are_404_json(host: DevHost) -> None:
    for path in ("/nothing/here", "/api/no/such/route", "/admin/nope"):
        reply = kit.call("GET", f"{host.url}{path}")
        assert reply.status == 404, path
        assert reply.json()["error"]["code"] in ("NotFound",), path


def test_bad_request_framing_is_a_400_json(host: DevHost) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=10)
    try:
        conn.putrequest("POST", "/api/echo")
        conn.putheader("Content-Length", "nope")
        conn.endheaders()
        reply = conn.getresponse()
        assert reply.status == 400
        assert "Content-Length" in json.loads(reply.read())["error"]["message"]
    finally:
        conn.close()
    assert kit.call("GET", f"{host.url}/api/hello").status == 200


def test_keep_alive_connection_serves_several_requests(host: DevHost) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=10)
    try:
        for name in ("a", "b", "c"):
            conn.request("GET", f"/api/hello/{name}")
            reply = conn.getresponse()
            assert reply.read() == f"hello {name}".encode()
        # An iterable body goes out chunked (no Content-Length): the server must decode it.
        conn.request("POST", "/api/echo", body=iter([b"ch", b"unk"]))
        assert conn.getresponse().read() == b"CHUNK"
    finally:
        conn.close()


def test_virtual_time_stands_still_while_a_trigger_runs(app_dir: Path) -> None:
    module = kit.load("devhost_http_app")
    clock = VirtualClock(datetime(2025, 1, 1, tzinfo=UTC))
    # Someone always has work a minute ahead: an idle world jumps again and again.
    ahead = clock.participant("always-ahead", lambda: clock.now() + timedelta(minutes=1))
    module.NOW[:] = [clock.now]
    try:
        with DevHost(module.app, app_dir=app_dir, clock=clock, settings={}) as running:
            kit.poll(lambda: clock.jumps > 3, what="the clock to move while idle")
            seen = kit.call("GET", f"{running.url}/api/slow").json()
            assert seen["before"] == seen["after"]  # 200 real ms of work, no jump
            jumps = clock.jumps
            kit.poll(lambda: clock.jumps > jumps, what="the clock to move again")
    finally:
        module.NOW.clear()
        ahead.close()
        clock.close()
