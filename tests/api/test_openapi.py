"""The OpenAPI document: valid 3.1, in the repo as generated, and agreeing with every route."""

from __future__ import annotations

import json
import re

import pytest
import schemathesis
from api_kit import READER, FakeDurable, app_functions, call

from triggers._api import REGISTRY, Role, openapi_document, path_params
from triggers.openapi_doc import DOC_PATH, rendered


@pytest.fixture(scope="module")
def document() -> dict[str, object]:
    doc: dict[str, object] = json.loads(DOC_PATH.read_text(encoding="utf-8"))
    return doc


def http_functions() -> set[tuple[str, str]]:
    """(METHOD, route) of every HTTP-triggered function of the app."""
    found = set()
    for info in app_functions():
        if info.trigger_type == "httpTrigger":
            for method in info.trigger.get("methods") or []:
                found.add((str(method).upper(), str(info.trigger.get("route"))))
    return found


def test_the_document_in_the_repo_is_the_generated_one() -> None:
    assert DOC_PATH.read_text(encoding="utf-8") == rendered(), (
        "docs/openapi.json is out of date: run python -m triggers.openapi_doc"
    )


def test_the_document_is_valid_openapi_3_1(document: dict[str, object]) -> None:
    assert document["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(document).validate()


def test_every_http_function_is_a_registered_route_and_back() -> None:
    registered = {(s.method, s.path) for s in REGISTRY.values()}
    assert http_functions() == registered


def test_every_route_is_in_the_document_as_registered(document: dict[str, object]) -> None:
    paths = document["paths"]
    assert isinstance(paths, dict)
    documented = {
        (method.upper(), path) for path, operations in paths.items() for method in operations
    }
    assert documented == {(s.method, s.openapi_path) for s in REGISTRY.values()}
    for spec in REGISTRY.values():
        operation = paths[spec.openapi_path][spec.method.lower()]
        assert operation["operationId"] == spec.name
        assert operation["x-required-role"] == spec.role.value
        in_path = [p["name"] for p in operation["parameters"] if p["in"] == "path"]
        assert in_path == path_params(spec.path)
        for p in operation["parameters"]:
            if p["in"] == "path":
                assert re.compile(p["schema"]["pattern"])
        assert str(spec.status) in operation["responses"]
        for code in ("401", "403"):
            assert code in operation["responses"], (spec.name, code)
        if spec.request is not None:
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref == f"#/components/schemas/{spec.request.__name__}"
            assert "413" in operation["responses"]
        else:
            assert "requestBody" not in operation
        if spec.query is not None:
            documented_query = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
            assert documented_query == set(spec.query.model_fields)


def test_request_models_refuse_unknown_fields_in_the_document(
    document: dict[str, object],
) -> None:
    schemas = document["components"]["schemas"]  # type: ignore[index]
    for spec in REGISTRY.values():
        if spec.request is not None:
            assert schemas[spec.request.__name__]["additionalProperties"] is False


def test_mutations_need_operator_or_approver_and_reads_a_reader() -> None:
    for spec in REGISTRY.values():
        if spec.method == "GET":
            assert spec.role is Role.READER, spec.name
        else:
            assert spec.role in (Role.OPERATOR, Role.APPROVER), spec.name
    assert REGISTRY["approve_version"].role is Role.APPROVER


def test_the_app_serves_the_same_document() -> None:
    answer = call("get_openapi", READER, FakeDurable())
    assert answer.status == 200
    assert answer.body == json.loads(json.dumps(openapi_document()))
