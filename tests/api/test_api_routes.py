"""Every API route: it answers its role, refuses the others, and a refusal starts nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from api_kit import (
    ALICE,
    APPROVER,
    IMAGE,
    NOBODY,
    OPERATOR,
    READER,
    SUB,
    T0,
    FakeDurable,
    call,
    standard_versions,
    use_gallery,
    version,
)

from shared import names
from triggers._api import REGISTRY, Role
from triggers._common import MAX_BODY_BYTES


@pytest.fixture(autouse=True)
def _world(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    monkeypatch.delenv("IMAGE_CATALOGUE_PATH", raising=False)
    monkeypatch.setenv("CALLBACK_ALLOWED_HOSTS", "hooks.example.com,127.0.0.1:9443")
    monkeypatch.setenv("CALLBACK_SIGNING_SECRET", "s3cret-for-tests")
    use_gallery(monkeypatch, standard_versions())


def running_build(client: FakeDurable, build_id: str = f"{IMAGE}-0a1b2c3d", **kw: Any) -> str:
    client.put(
        names.build_instance_id(build_id),
        names.ORCH_BUILD_IMAGE,
        kw.pop("state", "Running"),
        custom_status={"image": build_id.rsplit("-", 1)[0], "phase": "customise", "percent": 30},
        **kw,
    )
    return build_id


# One successful call per route: (principal, params, query, body, expected status).
SUCCESS: dict[str, tuple[str, dict[str, str], dict[str, str] | None, Any, int]] = {
    "list_images": (READER, {}, None, None, 200),
    "get_image": (READER, {"image": IMAGE}, None, None, 200),
    "list_versions": (READER, {"image": IMAGE}, None, None, 200),
    "get_version": (READER, {"image": IMAGE, "version": "1.0.1"}, None, None, 200),
    "diff_versions": (READER, {"image": IMAGE, "version": "1.0.2"}, None, None, 200),
    "audit": (READER, {}, None, None, 200),
    "get_openapi": (READER, {}, None, None, 200),
    "start_build": (OPERATOR, {"image": IMAGE}, None, {"reason": "test"}, 202),
    "get_build_queue": (READER, {"image": IMAGE}, None, None, 200),
    "list_builds": (READER, {}, None, None, 200),
    "get_build_request": (READER, {"image": IMAGE, "key": "manual:k1"}, None, None, 200),
    "start_validation": (OPERATOR, {"image": IMAGE, "version": "1.0.4"}, None, {}, 202),
    "get_validation": (READER, {"image": IMAGE, "version": "1.0.4"}, None, None, 200),
    "start_rings": (OPERATOR, {"image": IMAGE, "version": "1.0.3"}, None, {}, 202),
    "get_rings": (READER, {"image": IMAGE, "version": "1.0.3"}, None, None, 200),
    "retention_plan": (READER, {}, None, None, 200),
    "start_retention_run": (OPERATOR, {}, None, {"dry_run": True}, 202),
    "get_retention_run": (READER, {"run_id": "run-0123456789ab"}, None, None, 200),
    "get_build": (READER, {"build_id": f"{IMAGE}-0a1b2c3d"}, None, None, 200),
    "cancel_build": (OPERATOR, {"build_id": f"{IMAGE}-0a1b2c3d"}, None, {}, 202),
    "approve_version": (
        APPROVER,
        {"image": IMAGE, "version": "1.0.2"},
        None,
        {"decision": "approve", "change_ticket": "CHG1"},
        200,
    ),
    "activate": (OPERATOR, {"image": IMAGE}, None, {"version": "1.0.3", "change_ticket": "C"}, 202),
    "rollback": (OPERATOR, {"image": IMAGE}, None, {"change_ticket": "C", "reason": "bad"}, 202),
}

# Who is refused where (beyond "no principal" and "no app role", refused everywhere).
DENIED = {
    Role.READER: [],
    Role.OPERATOR: [READER, APPROVER],
    Role.APPROVER: [READER, OPERATOR],
}


def client_for(name: str) -> FakeDurable:
    client = FakeDurable(
        ends={
            names.ORCH_DECIDE_APPROVAL: {"status": "approved", "version": "1.0.2"},
            names.ORCH_RETENTION: {"plan": []},
        }
    )
    running_build(client)
    client.put(
        names.build_request_instance_id(IMAGE, "manual:k1"),
        names.ORCH_BUILD_REQUEST,
        "Completed",
        custom_status={"outcome": "accepted", "build_id": f"{IMAGE}-000001"},
    )
    image, version = IMAGE, "1.0.4"
    if name == "get_validation":
        client.put(names.validation_instance_id(image, version), "validate", "Running")
    if name == "get_rings":
        client.put(names.rings_instance_id(image, "1.0.3"), "rings", "Running")
    if name == "get_retention_run":
        client.put(names.retention_instance_id("run-0123456789ab"), "retention", "Completed")
    return client


def test_every_registered_route_has_a_success_case() -> None:
    assert set(SUCCESS) == set(REGISTRY)


@pytest.mark.parametrize("name", sorted(SUCCESS))
def test_each_route_answers_its_role(name: str) -> None:
    who, params, query, body, expected = SUCCESS[name]
    answer = call(name, who, client_for(name), params=params, query=query, body=body)
    assert answer.status == expected, answer.body
    if expected == 202:
        assert answer.headers["Location"] == answer.body["status_url"]
        assert int(answer.headers["Retry-After"]) > 0


@pytest.mark.parametrize("name", sorted(SUCCESS))
def test_without_a_principal_every_route_is_401_and_starts_nothing(name: str) -> None:
    _, params, query, body, _ = SUCCESS[name]
    client = client_for(name)
    before = list(client.calls)
    answer = call(name, None, client, params=params, query=query, body=body)
    assert answer.status == 401
    assert answer.error["code"] == "Unauthenticated"
    assert client.calls == before


@pytest.mark.parametrize(
    ("name", "who"),
    [
        (name, who)
        for name, spec in sorted(REGISTRY.items())
        for who in [NOBODY, *DENIED[spec.role]]
    ],
)
def test_a_principal_without_the_role_is_403_naming_it(name: str, who: str) -> None:
    _, params, query, body, _ = SUCCESS[name]
    client = client_for(name)
    before = list(client.calls)
    answer = call(name, who, client, params=params, query=query, body=body)
    assert answer.status == 403, answer.body
    assert answer.error["missing_role"] == REGISTRY[name].role.value
    assert REGISTRY[name].role.value in answer.error["message"]
    assert client.calls == before


def test_the_requester_may_not_approve_her_own_build() -> None:
    client = client_for("approve_version")
    answer = call(
        "approve_version",
        ALICE,
        client,
        params={"image": IMAGE, "version": "1.0.2"},
        body={"decision": "approve", "change_ticket": "CHG1"},
    )
    assert answer.status == 403
    assert answer.error["code"] == "SelfApprovalRefused"
    assert answer.error["requested_by"] == "alice@contoso.com"
    assert client.started() == []


def test_an_approval_records_the_approver_and_the_ticket() -> None:
    client = client_for("approve_version")
    who, params, _, body, _ = SUCCESS["approve_version"]
    answer = call("approve_version", who, client, params=params, body=body)
    assert answer.status == 200
    [(_, name, instance_id, payload)] = client.started()
    assert name == names.ORCH_DECIDE_APPROVAL
    assert instance_id == names.approval_instance_id(IMAGE, "1.0.2")
    assert payload["actor"] == "bob@contoso.com"
    assert payload["change_ticket"] == "CHG1"


def test_a_build_is_requested_by_the_principal_not_by_the_body() -> None:
    client = FakeDurable()
    answer = call(
        "start_build",
        OPERATOR,
        client,
        params={"image": IMAGE},
        body={"requested_by": "someone-else@contoso.com"},
    )
    assert answer.status == 202
    [started] = client.started(names.ORCH_BUILD_REQUEST)
    assert started[3]["request"]["requested_by"] == "otto@contoso.com"


# ---- idempotency --------------------------------------------------------------------------


def test_a_repeated_idempotency_key_returns_the_first_answer_and_builds_once() -> None:
    client = FakeDurable()
    key = {"Idempotency-Key": "chg-4711"}
    first = call("start_build", OPERATOR, client, params={"image": IMAGE}, body={}, headers=key)
    second = call("start_build", OPERATOR, client, params={"image": IMAGE}, body={}, headers=key)
    assert first.status == second.status == 202
    assert second.body == first.body
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Location"] == first.headers["Location"]
    assert len(client.started(names.ORCH_BUILD_REQUEST)) == 1
    # The answer is kept durably (an orchestration's input), not in this process.
    [kept] = client.started(names.ORCH_API_ANSWER)
    assert kept[3]["body"] == first.body


def test_the_same_key_with_another_body_is_422_and_starts_nothing() -> None:
    client = FakeDurable()
    key = {"Idempotency-Key": "chg-4712"}
    call("start_build", OPERATOR, client, params={"image": IMAGE}, body={}, headers=key)
    before = list(client.calls)
    again = call(
        "start_build",
        OPERATOR,
        client,
        params={"image": IMAGE},
        body={"reason": "x"},
        headers=key,
    )
    assert again.status == 422
    assert again.error["field"] == "Idempotency-Key"
    assert client.calls == before


def test_keys_are_per_principal() -> None:
    client = FakeDurable()
    key = {"Idempotency-Key": "shared-key"}
    call("start_build", OPERATOR, client, params={"image": IMAGE}, body={}, headers=key)
    other = call("start_build", ALICE, client, params={"image": IMAGE}, body={}, headers=key)
    assert "Idempotent-Replayed" not in other.headers
    assert len(client.started(names.ORCH_API_ANSWER)) == 2


def test_a_refusal_is_not_remembered() -> None:
    client = client_for("activate")
    key = {"Idempotency-Key": "act-1"}
    body = {"version": "1.0.4", "change_ticket": "C"}  # staged, not approved: 409
    refused = call("activate", OPERATOR, client, params={"image": IMAGE}, body=body, headers=key)
    assert refused.status == 409
    assert client.started(names.ORCH_API_ANSWER) == []


def test_a_bad_idempotency_key_is_400_naming_the_header() -> None:
    answer = call(
        "start_build",
        OPERATOR,
        FakeDurable(),
        params={"image": IMAGE},
        body={},
        headers={"Idempotency-Key": "spaces are not allowed"},
    )
    assert answer.status == 400
    assert answer.error["field"] == "Idempotency-Key"


# ---- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"{", "body"),
        (b"[1]", "body"),
        (b'{"version": 103, "change_ticket": "C"}', "version"),
        (b'{"version": "1.0.3", "change_ticket": "C", "extra": 1}', "extra"),
        (b'{"change_ticket": "C"}', "version"),
        (
            b'{"version": "1.0.3", "change_ticket": "C", "callback_url": "http://hooks.example.com/x"}',
            "callback_url",
        ),
        (
            b'{"version": "1.0.3", "change_ticket": "C", "callback_url": "https://evil.example/x"}',
            "callback_url",
        ),
    ],
)
def test_bad_bodies_are_400_naming_the_field_and_start_nothing(raw: bytes, field: str) -> None:
    client = client_for("activate")
    answer = call("activate", OPERATOR, client, params={"image": IMAGE}, raw=raw)
    assert answer.status == 400, answer.body
    assert answer.error["field"] == field
    assert client.started() == []


def test_a_body_over_the_cap_is_413() -> None:
    client = FakeDurable()
    raw = json.dumps({"reason": "x" * MAX_BODY_BYTES}).encode()
    answer = call("start_build", OPERATOR, client, params={"image": IMAGE}, raw=raw)
    assert answer.status == 413
    assert answer.error["field"] == "body"
    assert answer.error["limit_bytes"] == MAX_BODY_BYTES
    assert client.calls == []


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("get_image", {"image": "No_Such"}, "image"),
        ("get_version", {"image": IMAGE, "version": "1.x"}, "version"),
        ("get_build", {"build_id": "a b"}, "build_id"),
    ],
)
def test_malformed_path_parameters_are_400(name: str, params: dict[str, str], field: str) -> None:
    answer = call(name, READER, FakeDurable(), params=params)
    assert answer.status == 400
    assert answer.error["field"] == field


@pytest.mark.parametrize(
    ("name", "params", "code"),
    [
        ("get_image", {"image": "no-such-image"}, "ImageNotFound"),
        ("get_version", {"image": IMAGE, "version": "9.9.9"}, "VersionNotFound"),
        ("get_build", {"build_id": "nothing-here"}, "BuildNotFound"),
        ("cancel_build", {"build_id": "nothing-here"}, "BuildNotFound"),
    ],
)
def test_unknown_ids_are_404(name: str, params: dict[str, str], code: str) -> None:
    who = OPERATOR if REGISTRY[name].role is Role.OPERATOR else READER
    body = {} if REGISTRY[name].request is not None else None
    answer = call(name, who, FakeDurable(), params=params, body=body)
    assert answer.status == 404
    assert answer.error["code"] == code


def test_bad_query_values_are_400_naming_them() -> None:
    answer = call("list_builds", READER, FakeDurable(), query={"top": "0"})
    assert answer.status == 400
    assert answer.error["field"] == "top"
    answer = call("audit", READER, FakeDurable(), query={"since": "yesterday"})
    assert answer.status == 400
    assert answer.error["field"] == "since"


def test_azure_unreachable_is_503_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(image: Any) -> Any:
        raise ConnectionError("gallery unreachable")

    from triggers import images

    monkeypatch.setattr(images, "_read_versions", broken)
    answer = call("get_image", READER, FakeDurable(), params={"image": IMAGE})
    assert answer.status == 503
    assert answer.headers["Retry-After"]


# ---- what the routes answer -------------------------------------------------------------------


def test_an_image_shows_its_versions_by_state_and_latest_per_ring() -> None:
    answer = call("get_image", READER, FakeDurable(), params={"image": IMAGE})
    body = answer.body
    assert body["active"] == "1.0.1"
    assert body["backup"] == ["1.0.0"]
    assert body["staged"] == ["1.0.4"]
    assert body["approved"] == ["1.0.3"]
    assert {r["region"]: r["latest"] for r in body["rings"]}["westeurope"] == "1.0.1"


def test_a_version_carries_its_manifest_and_a_diff_names_the_changes() -> None:
    got = call("get_version", READER, FakeDurable(), params={"image": IMAGE, "version": "1.0.1"})
    assert got.body["state"] == "active"
    assert [s["name"] for s in got.body["manifest"]["steps"]] == ["office", "teams"]
    diff = call(
        "diff_versions", READER, FakeDurable(), params={"image": IMAGE, "version": "1.0.2"}
    ).body
    assert (diff["old_version"], diff["new_version"]) == ("1.0.1", "1.0.2")
    assert diff["steps_added"] == ["fslogix"]
    assert diff["steps_removed"] == ["teams"]
    assert diff["steps_changed"] == ["office"]
    assert diff["apps_changed"] == {"Office": ["16.0.1", "16.0.2"]}
    assert diff["apps_removed"] == {"Teams": "2.0"}


def test_a_diff_against_a_version_without_manifest_is_409() -> None:
    answer = call(
        "diff_versions",
        READER,
        FakeDurable(),
        params={"image": IMAGE, "version": "1.0.2"},
        query={"against": "1.0.0"},
    )
    assert answer.status == 409
    assert answer.error["field"] == "against"


def test_the_audit_lists_transitions_newest_first_and_filters_by_time() -> None:
    answer = call("audit", READER, FakeDurable(), query={"image": IMAGE})
    rows = answer.body["transitions"]
    assert [r["version"] for r in rows] == ["1.0.4", "1.0.3", "1.0.2", "1.0.1", "1.0.0"]
    assert rows[1]["by"] == "bob@contoso.com"
    query = {"since": "2026-06-01T10:30:00+00:00", "image": IMAGE}
    since = call("audit", READER, FakeDurable(), query=query)
    assert [r["version"] for r in since.body["transitions"]] == ["1.0.4", "1.0.3"]


def test_builds_are_listed_without_their_children_and_filtered() -> None:
    client = FakeDurable()
    running_build(client, f"{IMAGE}-00000001")
    running_build(client, "win11-dev-00000002", state="Completed")
    client.put(f"build:{IMAGE}-00000001:cleanup", names.ORCH_CLEANUP_BUILD, "Running")
    listed = call("list_builds", READER, client).body["builds"]
    assert sorted(b["build_id"] for b in listed) == ["win11-dev-00000002", f"{IMAGE}-00000001"]
    only = call("list_builds", READER, client, query={"status": "Completed"}).body["builds"]
    assert [b["image"] for b in only] == ["win11-dev"]


def test_a_build_shows_each_step_with_its_seconds_and_the_phase_timings() -> None:
    client = FakeDurable()
    output = {
        "status": "staged",
        "phase_seconds": {"customise": 420.0, "capture": 60.0},
        "manifest": {
            "steps": [
                {
                    "name": "office",
                    "state": "Succeeded",
                    "exit_code": 0,
                    "started": "2026-06-01T08:00:00+00:00",
                    "ended": "2026-06-01T08:05:30+00:00",
                }
            ]
        },
    }
    build_id = running_build(client, state="Completed", output=output)
    body = call("get_build", READER, client, params={"build_id": build_id}).body
    assert body["runtimeStatus"] == "Completed"
    assert body["steps"] == [
        {
            "name": "office",
            "state": "Succeeded",
            "exit_code": 0,
            "started": "2026-06-01T08:00:00+00:00",
            "ended": "2026-06-01T08:05:30+00:00",
            "seconds": 330.0,
        }
    ]
    assert body["phase_seconds"] == {"customise": 420.0, "capture": 60.0}


def test_cancel_terminates_a_running_build_and_refuses_an_ended_one() -> None:
    client = FakeDurable()
    build_id = running_build(client)
    answer = call("cancel_build", OPERATOR, client, params={"build_id": build_id}, body={})
    assert answer.status == 202
    assert [c[0:2] for c in client.calls] == [("terminate", names.build_instance_id(build_id))]
    again = call("cancel_build", OPERATOR, client, params={"build_id": build_id}, body={})
    assert again.status == 409
    assert again.error["runtime_status"] == "Terminated"


def test_an_activation_in_progress_is_409_and_starts_nothing() -> None:
    client = client_for("activate")
    client.put(names.activation_instance_id(IMAGE), names.ORCH_ACTIVATE_VERSION, "Running")
    before = list(client.calls)
    answer = call(
        "activate",
        OPERATOR,
        client,
        params={"image": IMAGE},
        body={"version": "1.0.3", "change_ticket": "C"},
    )
    assert answer.status == 409
    assert answer.error["code"] == "ActivationInProgress"
    assert client.calls == before


# ---- callbacks ----------------------------------------------------------------------------------


def test_an_accepted_request_with_a_callback_registers_one_notice() -> None:
    client = client_for("activate")
    answer = call(
        "activate",
        OPERATOR,
        client,
        params={"image": IMAGE},
        body={
            "version": "1.0.3",
            "change_ticket": "C",
            "callback_url": "https://hooks.example.com/n",
        },
    )
    assert answer.status == 202
    assert answer.body["callback"]["status"] == "registered"
    [(_, _, instance_id, payload)] = client.started(names.ORCH_API_NOTIFY)
    assert instance_id == names.notify_instance_id(answer.body["callback"]["notice_id"])
    assert payload["operation"]["instance_id"] == names.activation_instance_id(IMAGE)
    assert payload["callback_url"] == "https://hooks.example.com/n"
    assert "secret" not in json.dumps(payload)


def test_callbacks_without_a_signing_secret_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALLBACK_SIGNING_SECRET")
    client = FakeDurable()
    answer = call(
        "start_build",
        OPERATOR,
        client,
        params={"image": IMAGE},
        body={"callback_url": "https://hooks.example.com/n"},
    )
    assert answer.status == 400
    assert answer.error["field"] == "callback_url"
    assert client.calls == []


def test_a_build_with_a_callback_gets_a_key_the_watcher_can_follow() -> None:
    client = FakeDurable()
    answer = call(
        "start_build",
        OPERATOR,
        client,
        params={"image": IMAGE},
        body={"callback_url": "https://127.0.0.1:9443/hook"},
    )
    assert answer.status == 202
    [(_, _, _, payload)] = client.started(names.ORCH_API_NOTIFY)
    assert payload["operation"]["kind"] == "build"
    assert payload["operation"]["key"] == answer.body["key"]
    assert payload["operation"]["instance_id"] == answer.body["request_instance_id"]
    assert answer.body["key"].startswith("manual:")
    assert answer.headers["Location"].endswith(
        f"/api/images/{IMAGE}/build-requests/{answer.body['key'].replace(':', '%3A')}"
    )


def test_a_version_without_state_is_not_in_the_audit(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = version("2.0.0", "staged", at=T0)
    plain.tags.pop("imagefactory:state")  # type: ignore[attr-defined]
    use_gallery(monkeypatch, [plain])
    assert call("audit", READER, FakeDurable()).body["transitions"] == []


def test_an_unknown_image_is_404_whatever_the_body() -> None:
    client = FakeDurable()
    answer = call("activate", OPERATOR, client, params={"image": "no-such-image"}, raw=b"{")
    assert answer.status == 404
    assert answer.error["field"] == "image"
    assert client.calls == []


def test_a_missing_app_setting_is_a_503_naming_it_never_a_400(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator's mistake, not the caller's: 503 with Retry-After, nothing started."""
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID")
    client = FakeDurable()
    answer = call("list_images", READER, client)
    assert answer.status == 503, answer.body
    assert answer.error["code"] == "AppMisconfigured"
    assert "AZURE_SUBSCRIPTION_ID" in answer.error["message"]
    assert answer.headers.get("Retry-After") == "300"
