"""Route templates and function keys, as the host's HTTP routing reads them."""

from __future__ import annotations

import pytest

from devhost.server import HttpError, Request
from devhost.triggers import Keys, RouteError, RouteTemplate


def match(template: str, path: str) -> dict[str, str] | None:
    return RouteTemplate.parse(template).match(path)


def test_literal_routes_are_case_insensitive_and_ignore_trailing_slash() -> None:
    assert match("builds/status", "Builds/STATUS/") == {}
    assert match("builds/status", "builds") is None


def test_parameters_optional_and_defaults() -> None:
    assert match("items/{id}", "items/42") == {"id": "42"}
    assert match("items/{id}/{name?}", "items/42") == {"id": "42"}
    assert match("items/{id}/{name?}", "items/42/x") == {"id": "42", "name": "x"}
    assert match("items/{id}/{name=none}", "items/42") == {"id": "42", "name": "none"}
    assert match("items/{id}", "items") is None


def test_constraints_filter_matches() -> None:
    assert match("items/{id:int}", "items/42") == {"id": "42"}
    assert match("items/{id:int}", "items/abc") is None
    assert match("items/{id:int}", "items/99999999999") is None  # beyond int32
    assert match("items/{id:long}", "items/99999999999") == {"id": "99999999999"}
    assert match("v/{g:guid}", "v/0f8fad5b-d9cb-469f-a165-70867728950e") is not None
    assert match("v/{g:guid}", "v/nope") is None
    assert match("v/{n:alpha:minlength(2)}", "v/ab") == {"n": "ab"}
    assert match("v/{n:alpha:minlength(2)}", "v/a") is None
    assert match("v/{n:range(1,5)}", "v/6") is None
    assert match("v/{n:regex(^a\\d+$)}", "v/a12") == {"n": "a12"}
    assert match("v/{b:bool}", "v/TRUE") == {"b": "TRUE"}


def test_catch_all_and_complex_segments() -> None:
    assert match("files/{*rest}", "files/a/b/c.txt") == {"rest": "a/b/c.txt"}
    assert match("files/{*rest}", "files") == {}
    assert match("files/{name}.{ext}", "files/report.pdf") == {"name": "report", "ext": "pdf"}


def test_values_are_percent_decoded() -> None:
    assert match("items/{id}", "items/a%20b") == {"id": "a b"}


def test_literal_segments_outrank_parameters() -> None:
    literal = RouteTemplate.parse("items/new")
    param = RouteTemplate.parse("items/{id}")
    assert literal.precedence < param.precedence


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("items/{id", "unmatched"),
        ("items/{id:nosuch}", "unknown route constraint"),
        ("items/{1bad}", "not valid"),
        ("{*rest}/more", "catch-all"),
        ("items/{a?}/b", "optional"),
        ("x/{a}/{A}", "repeats"),
        ("x/{a}{b}", "no literal between"),
        ("x/{n:length(a)}", "integer"),
    ],
)
def test_bad_templates_name_the_problem(template: str, fragment: str) -> None:
    with pytest.raises(RouteError) as info:
        RouteTemplate.parse(template)
    assert fragment in str(info.value)


def request(headers: tuple[tuple[str, str], ...] = (), query: str = "") -> Request:
    return Request("GET", "/api/x", "/api/x", query, headers, b"", "http://127.0.0.1:1")


def test_keys_not_enforced_when_none_configured() -> None:
    Keys().check("function", request(), "f")
    Keys().check("admin", request(), "f")


def test_function_and_admin_levels() -> None:
    keys = Keys(function_key="fk", master_key="mk")
    keys.check("anonymous", request(), "f")
    keys.check("function", request((("x-functions-key", "fk"),)), "f")
    keys.check("function", request(query="code=mk"), "f")
    keys.check("admin", request(query="code=mk"), "f")
    with pytest.raises(HttpError) as missing:
        keys.check("function", request(), "function 'f'")
    assert missing.value.status == 401
    assert "x-functions-key" in missing.value.message
    with pytest.raises(HttpError) as wrong:
        keys.check("function", request(query="code=nope"), "f")
    assert wrong.value.status == 401
    with pytest.raises(HttpError):
        keys.check("admin", request(query="code=fk"), "f")
