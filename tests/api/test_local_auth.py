"""The devhost's stand-in for App Service Authentication, and the CLI client's own rules."""

from __future__ import annotations

import pytest

from cli.client import ApiClient, Exit, exit_for, principal_header
from devhost.server import HttpError, Request
from devhost.triggers import PRINCIPAL_HEADER, LocalAuth
from shared.domain.principal import encode_principal, parse_principal


def request(*headers: tuple[str, str]) -> Request:
    return Request("GET", "/api/images", "/api/images", "", tuple(headers), b"", "http://x")


def test_a_callers_own_principal_is_passed_on() -> None:
    own = encode_principal("alice@contoso.com", ("Reader",))
    auth = LocalAuth.from_settings({"DEVHOST_PRINCIPAL": "ops@contoso.com:Operator"})
    seen = auth.apply(request((PRINCIPAL_HEADER, own)))
    assert seen.header(PRINCIPAL_HEADER) == own


def test_the_setting_is_injected_when_a_request_has_none() -> None:
    auth = LocalAuth.from_settings({"DEVHOST_PRINCIPAL": "ops@contoso.com:Operator,Reader"})
    principal = parse_principal(auth.apply(request()).header(PRINCIPAL_HEADER))
    assert principal is not None
    assert principal.name == "ops@contoso.com"
    assert principal.roles == frozenset({"Operator", "Reader"})


def test_without_a_principal_the_devhost_refuses_unless_told_otherwise() -> None:
    with pytest.raises(HttpError) as refused:
        LocalAuth.from_settings({}).apply(request())
    assert refused.value.status == 401
    assert "DEVHOST_PRINCIPAL" in refused.value.message
    allowed = LocalAuth.from_settings({"DEVHOST_ALLOW_ANONYMOUS": "true"}).apply(request())
    assert allowed.header(PRINCIPAL_HEADER) is None
    # A unit-test DevHost passes requests through unless asked to require a principal.
    assert LocalAuth.from_settings({}, require=False).apply(request()).headers == ()


def test_the_cli_encodes_a_principal_like_app_service() -> None:
    principal = parse_principal(principal_header("bob@contoso.com:Approver"))
    assert principal is not None
    assert (principal.name, principal.roles) == ("bob@contoso.com", frozenset({"Approver"}))
    encoded = encode_principal("x@y", ("Reader",))
    assert principal_header(encoded) == encoded


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (200, Exit.OK),
        (202, Exit.OK),
        (400, Exit.REFUSED),
        (401, Exit.REFUSED),
        (403, Exit.REFUSED),
        (404, Exit.NOT_FOUND),
        (409, Exit.REFUSED),
        (422, Exit.REFUSED),
        (500, Exit.UNAVAILABLE),
        (503, Exit.UNAVAILABLE),
    ],
)
def test_exit_codes_follow_the_answer(status: int, code: Exit) -> None:
    assert exit_for(status) is code


def test_the_client_sends_the_principal_or_a_bearer_token() -> None:
    local = ApiClient("http://127.0.0.1:7071", principal="a@b:Reader")
    assert PRINCIPAL_HEADER in local._auth_headers()

    class Token:
        token = "eyJ.test.token"

    class Credential:
        scopes: list[str] = []

        def get_token(self, scope: str) -> Token:
            self.scopes.append(scope)
            return Token()

    credential = Credential()
    deployed = ApiClient("https://app.example", app_id_uri="api://factory/", _credential=credential)
    assert deployed._auth_headers() == {"Authorization": "Bearer eyJ.test.token"}
    assert credential.scopes == ["api://factory/.default"]
    assert (
        deployed.url("builds", {"image": "x", "top": None})
        == "https://app.example/api/builds?image=x"
    )
