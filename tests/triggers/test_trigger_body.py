"""POST /api/images/{image}/builds: no body crashes the trigger; every refusal is JSON naming it."""

from __future__ import annotations

import json

import azure.functions as func
import pytest
from trigger_kit import SUB, FakeClient, run, user_function

from triggers import builds
from triggers._common import MAX_BODY_BYTES, MAX_JSON_DEPTH

start_build = user_function(builds.start_build)
IMAGE = "win11-office"


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    monkeypatch.delenv("IMAGE_CATALOGUE_PATH", raising=False)


def post(body: bytes, client: FakeClient | None = None) -> tuple[int, dict[str, object]]:
    req = func.HttpRequest(
        method="POST",
        url=f"http://127.0.0.1:7071/api/images/{IMAGE}/builds",
        headers={"Content-Type": "application/json"},
        route_params={"image": IMAGE},
        body=body,
    )
    response = run(start_build(req=req, client=client or FakeClient()))
    assert response.mimetype == "application/json"
    return response.status_code, json.loads(response.get_body())


def fields(answer: dict[str, object]) -> list[object]:
    error = answer["error"]
    assert isinstance(error, dict)
    return [d["field"] for d in error.get("details", [])]


def test_deeply_nested_json_is_a_400_naming_the_body() -> None:
    client = FakeClient()
    status, answer = post(b"[" * 100_000 + b"]" * 100_000, client)
    assert status == 400
    assert fields(answer) == ["body"]
    assert client.calls == [], "nothing is queued"


def nested(depth: int) -> bytes:
    """A JSON object ``depth`` levels deep: {"reason": "x", "n": {"n": {... {} ...}}}."""
    return b'{"reason": "x", "n": ' + b'{"n": ' * (depth - 2) + b"{}" + b"}" * (depth - 1)


def test_nesting_past_the_limit_is_refused_and_at_the_limit_reaches_the_model() -> None:
    assert json.loads(nested(3)) == {"reason": "x", "n": {"n": {}}}
    status, answer = post(nested(MAX_JSON_DEPTH + 1))
    assert status == 400
    assert fields(answer) == ["body"]
    assert "deep" in json.dumps(answer)
    # At the limit the parser passes it on; the model then names the unknown field.
    status, answer = post(nested(MAX_JSON_DEPTH))
    assert status == 400
    assert fields(answer) == ["n"]


def test_a_body_over_the_cap_is_a_413_naming_the_limit() -> None:
    client = FakeClient()
    body = json.dumps({"reason": "x" * MAX_BODY_BYTES}).encode()
    status, answer = post(body, client)
    assert status == 413
    error = answer["error"]
    assert isinstance(error, dict)
    assert error["code"] == "PayloadTooLarge"
    assert error["limit_bytes"] == MAX_BODY_BYTES
    assert str(MAX_BODY_BYTES) in str(error["message"])
    assert client.calls == []


@pytest.mark.parametrize(
    "body",
    [b"{", b"\xff\xfe", b"[1]", b'"text"', b"null", b"1e999999"],
)
def test_malformed_bodies_are_a_400_naming_the_body_or_field(body: bytes) -> None:
    client = FakeClient()
    status, answer = post(body, client)
    assert status == 400, answer
    assert fields(answer) in (["body"], ["reason"])
    assert client.calls == []


def test_a_good_body_is_queued() -> None:
    client = FakeClient()
    status, answer = post(json.dumps({"reason": "change", "key": "chg-1"}).encode(), client)
    assert status == 202
    assert answer["key"] == "manual:chg-1"
    assert [c[0] for c in client.calls] == ["start_new"]
    assert answer["status_url"].endswith(answer["request_instance_id"])


def test_a_durable_client_failure_is_a_5xx_because_a_retry_can_succeed() -> None:
    client = FakeClient(fail={"start_new": ConnectionError("host unreachable")})
    with pytest.raises(ConnectionError):
        post(b"{}", client)
