"""The X-MS-CLIENT-PRINCIPAL parser: App Service Authentication's shape, and what it refuses."""

from __future__ import annotations

import base64
import json

import pytest

from shared.domain.principal import encode_principal, parse_principal


def _b64(doc: object) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


def test_entra_principal_with_roles() -> None:
    header = _b64(
        {
            "auth_typ": "aad",
            "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
            "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
            "claims": [
                {
                    "typ": "http://schemas.microsoft.com/identity/claims/objectidentifier",
                    "val": "oid-1",
                },
                {
                    "typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
                    "val": "bob@contoso.com",
                },
                {
                    "typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
                    "val": "Approver",
                },
                {"typ": "roles", "val": "Reader"},
            ],
        }
    )
    p = parse_principal(header)
    assert p is not None
    assert p.name == "bob@contoso.com"
    assert p.actor == "bob@contoso.com"
    assert p.object_id == "oid-1"
    assert p.has_role("approver")
    assert p.has_role("Reader")
    assert not p.has_role("Operator")
    assert p.auth_type == "aad"


def test_round_trip_and_unpadded_base64() -> None:
    header = encode_principal("carol@contoso.com", ("Operator",)).rstrip("=")
    p = parse_principal(header)
    assert p is not None
    assert p.name == "carol@contoso.com"
    assert p.roles == {"Operator"}


def test_object_id_stands_in_for_a_missing_name() -> None:
    header = _b64({"claims": [{"typ": "oid", "val": "1234"}]})
    p = parse_principal(header)
    assert p is not None
    assert p.name == "1234"
    assert p.roles == frozenset()


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "not base64 !!",
        base64.b64encode(b"not json").decode(),
        _b64(["a", "list"]),
        _b64({"claims": "nope"}),
        _b64({"claims": [{"typ": "roles", "val": "Approver"}]}),  # roles but nobody
        "A" * 20_000,
    ],
)
def test_unreadable_or_anonymous_headers_are_none(header: str | None) -> None:
    assert parse_principal(header) is None
