"""The framework's ARM conventions, LRO protocol, scheduling, paging and admin API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from emulator.core import ArmError, Request, Response, resource_not_found

SUB = "00000000-0000-0000-0000-000000000001"
THINGS = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Test/things"


def _install_things(emu: Any) -> None:
    tmpl = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Test/things/{name}"

    @emu.route("PUT", tmpl, op="Microsoft.Test/things/write", api_versions={"2024-01-01"})
    def put(req: Request) -> Response:
        body = req.json_object()
        rid = req.resource_id
        doc = {
            "id": rid,
            "name": req.params["name"],
            "type": "Microsoft.Test/things",
            "location": body.get("location", "westeurope"),
            "tags": body.get("tags", {}),
            "properties": {"provisioningState": "Creating"},
        }
        emu.store.put(rid, doc)

        def done() -> None:
            emu.store.get(rid)["properties"]["provisioningState"] = "Succeeded"

        return emu.begin_lro(
            rid,
            duration=timedelta(minutes=5),
            on_complete=done,
            op=req.op,
            body=doc,
            publish_event=True,
        )

    @emu.route("GET", tmpl, op="Microsoft.Test/things/read")
    def get(req: Request) -> Response:
        doc = emu.store.get(req.resource_id)
        if doc is None:
            raise resource_not_found(req.resource_id)
        return Response(200, doc)

    @emu.route("GET", tmpl.rsplit("/", 1)[0], op="Microsoft.Test/things/read")
    def list_(req: Request) -> Response:
        return emu.paged(req, emu.store.list(req.path.rsplit("/", 1)[0], "Microsoft.Test/things"))

    @emu.route("POST", tmpl + "/boom", op="Microsoft.Test/things/boom/action")
    def boom(req: Request) -> Response:
        raise RuntimeError("a bug in a handler")


@pytest.fixture
def env(emulator_factory: Any) -> Any:
    e = emulator_factory(modules=["emulator.admin"])
    _install_things(e.emu)
    return e


def test_missing_api_version_is_400_with_azure_wording(env: Any) -> None:
    status, _, body = env.http("GET", f"{THINGS}/a")
    assert status == 400
    assert body["error"]["code"] == "MissingApiVersionParameter"
    assert "api-version" in body["error"]["message"]


def test_unsupported_api_version_is_400(env: Any) -> None:
    status, _, body = env.http("PUT", f"{THINGS}/a?api-version=1999-01-01", {"location": "x"})
    assert status == 400
    assert body["error"]["code"] == "InvalidApiVersionParameter"
    assert "2024-01-01" in body["error"]["message"]


def test_missing_token_is_401(env: Any) -> None:
    status, _, body = env.http("GET", f"{THINGS}/a?api-version=2024-01-01", auth=False)
    assert status == 401
    assert body["error"]["code"] == "AuthenticationFailed"


def test_unknown_type_and_unknown_resource(env: Any) -> None:
    status, _, body = env.http("GET", f"{THINGS.replace('things', 'gadgets')}/a?api-version=1")
    assert (status, body["error"]["code"]) == (404, "InvalidResourceType")
    status, _, body = env.http("GET", f"{THINGS}/nope?api-version=2024-01-01")
    assert (status, body["error"]["code"]) == (404, "ResourceNotFound")
    assert "Microsoft.Test/things/nope" in body["error"]["message"]


def test_unknown_subscription_is_404(env: Any) -> None:
    path = THINGS.replace(SUB, "99999999-0000-0000-0000-000000000000")
    status, _, body = env.http("GET", f"{path}/a?api-version=2024-01-01")
    assert (status, body["error"]["code"]) == (404, "SubscriptionNotFound")


def test_malformed_json_is_400_before_the_handler(env: Any) -> None:
    status, _, body = env.http("PUT", f"{THINGS}/a?api-version=2024-01-01", raw=b"{not json")
    assert (status, body["error"]["code"]) == (400, "InvalidRequestContent")
    assert env.emu.store.get(f"{THINGS}/a") is None


def test_invalid_name_is_400(env: Any) -> None:
    status, _, body = env.http("PUT", f"{THINGS}/bad%3Cname?api-version=2024-01-01", {})
    assert (status, body["error"]["code"]) == (400, "InvalidResourceName")


def test_handler_bug_is_a_logged_500_not_a_crash(env: Any) -> None:
    status, _, body = env.http("POST", f"{THINGS}/a/boom?api-version=2024-01-01", {})
    assert status == 500
    assert body["error"]["code"] == "InternalServerError"
    assert env.emu.metrics.unexpected_errors == 1
    # the server still answers
    status, _, _ = env.http("GET", f"{THINGS}/a?api-version=2024-01-01")
    assert status == 404


def test_lro_protocol_and_virtual_time(env: Any) -> None:
    start = env.clock.now()
    status, headers, body = env.http("PUT", f"{THINGS}/a?api-version=2024-01-01", {"tags": {}})
    assert status == 201
    assert body["properties"]["provisioningState"] == "Creating"
    assert "azure-asyncoperation" in headers
    assert "location" in headers
    # virtual clock: the Retry-After travels as a short real-time retry-after-ms
    assert headers["retry-after-ms"] == "20"
    assert int(headers["x-ms-emulator-retry-after"]) >= 1
    op_path = headers["azure-asyncoperation"].replace(env.url, "")
    deadline = 200
    while deadline:
        s, _, op = env.http("GET", op_path)
        assert s == 200
        if op["status"] != "InProgress":
            break
        deadline -= 1
        env.clock.wait_until(start + timedelta(minutes=5), real_timeout=0.05)
    assert op["status"] == "Succeeded"
    assert env.clock.now() - start >= timedelta(minutes=4)
    s, _, doc = env.http("GET", f"{THINGS}/a?api-version=2024-01-01")
    assert doc["properties"]["provisioningState"] == "Succeeded"
    s, _, _ = env.http("GET", headers["location"].replace(env.url, ""))
    assert s == 204
    events = env.emu.events.events("Microsoft.Resources.ResourceWriteSuccess")
    assert [e.subject for e in events] == [f"{THINGS}/a"]


def test_lro_failure_fault_ends_failed(env: Any) -> None:
    env.emu.faults.add({"type": "lro_failure", "op": "Microsoft.Test/things/write"})
    status, headers, _ = env.http("PUT", f"{THINGS}/b?api-version=2024-01-01", {})
    assert status == 201
    op_path = headers["azure-asyncoperation"].replace(env.url, "")
    env.clock.wait_until(env.clock.now() + timedelta(minutes=5), real_timeout=5)
    _, _, op = env.http("GET", op_path)
    assert op["status"] == "Failed"
    assert op["error"]["code"] == "OperationFailed"


def test_paging_with_next_link(env: Any) -> None:
    for i in range(7):
        env.emu.store.put(
            f"{THINGS}/t{i}", {"name": f"t{i}", "type": "Microsoft.Test/things", "properties": {}}
        )
    names: list[str] = []
    path = f"{THINGS}?api-version=2024-01-01"
    pages = 0
    while path:
        s, _, body = env.http("GET", path)
        assert s == 200
        pages += 1
        names += [x["name"] for x in body["value"]]
        path = body.get("nextLink", "").replace(env.url, "")
    assert names == [f"t{i}" for i in range(7)]
    assert pages == 3  # page_size 3 in the test scenario


def test_schedule_runs_in_host_time(env: Any) -> None:
    ran: list[Any] = []
    t0 = env.clock.now()
    env.emu.schedule(timedelta(hours=3), lambda: ran.append(env.clock.now()), "test")
    env.clock.wait_until(t0 + timedelta(hours=3), real_timeout=5)
    env.wait_idle()
    assert ran
    assert ran[0] - t0 == timedelta(hours=3)


def test_transient_fault_then_success(env: Any) -> None:
    env.emu.faults.add(
        {"type": "http", "op": "Microsoft.Test/things/read", "status": 503, "count": 1}
    )
    s1, _, b1 = env.http("GET", f"{THINGS}/x?api-version=2024-01-01")
    s2, _, _ = env.http("GET", f"{THINGS}/x?api-version=2024-01-01")
    assert (s1, b1["error"]["code"], s2) == (503, "ServiceUnavailable", 404)
    assert env.emu.metrics.faults_injected == 1


def test_admin_api(env: Any) -> None:
    assert env.admin("GET", "health")[0] == 200
    s, body = env.admin("POST", "faults", {"type": "http", "op": "x", "status": 500})
    assert s == 201
    assert body["id"] >= 1
    s, body = env.admin("POST", "faults", {"type": "nonsense"})
    assert s == 400
    assert body["error"]["details"][0]["target"] == "type"
    s, body = env.admin("GET", "clock")
    assert s == 200
    assert body["virtual"] is True
    s, body = env.admin("POST", "clock/advance", {"by": "10m"})
    assert s == 200
    s, body = env.admin("GET", "metrics")
    assert s == 200
    assert "requests" in body
    assert env.admin("GET", "nothing-here")[0] == 404


def test_arm_error_headers_are_kept() -> None:
    e = ArmError(429, "TooManyRequests", "slow down", {"Retry-After": "3"})
    assert e.body() == {"error": {"code": "TooManyRequests", "message": "slow down"}}
    assert e.headers == {"Retry-After": "3"}
