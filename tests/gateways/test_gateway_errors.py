"""Azure SDK failures become the app's errors: temporary (with Retry-After) or permanent."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import HttpRequest, RequestsTransportResponse
from azure.mgmt.core.exceptions import ARMErrorFormat

from shared.azure.errors import (
    absent_as_none,
    arm_reason,
    azure_call,
    is_not_found,
    parse_retry_after,
    to_factory_error,
)
from shared.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    PermanentError,
    TemporaryError,
    classify_failure,
)


def _response(status: int, body: object | None = None, headers: dict[str, str] | None = None):
    """A real azure-core transport response over a real requests.Response (no network)."""
    raw = requests.Response()
    raw.status_code = status
    raw.headers.update(headers or {})
    raw._content = json.dumps(body).encode() if body is not None else b""
    raw.encoding = "utf-8"
    request = HttpRequest("GET", "https://management.example/subscriptions/s/resourceGroups/rg")
    return RequestsTransportResponse(request, raw)


def _arm_error(status: int, code: str, message: str, cls=HttpResponseError, **headers: str):
    response = _response(status, {"error": {"code": code, "message": message}}, headers)
    return cls(response=response, error_format=ARMErrorFormat)


def test_throttling_is_temporary_with_retry_after_seconds() -> None:
    error = to_factory_error(
        _arm_error(429, "TooManyRequests", "slow down", **{"Retry-After": "17"}), "get VM vm1"
    )
    assert isinstance(error, TemporaryError)
    assert error.retry_after == 17.0
    assert "TooManyRequests" in str(error)
    assert "get VM vm1" in str(error)
    assert classify_failure(str(error)) is TemporaryError


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_faults_and_timeouts_are_temporary(status: int) -> None:
    error = to_factory_error(_arm_error(status, "InternalServerError", "boom"), "op")
    assert isinstance(error, TemporaryError)
    assert error.retry_after is None


def test_retry_after_as_http_date() -> None:
    now = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after({"Retry-After": later}, now=now) == pytest.approx(90.0)
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"x-ms-retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"Retry-After": "not a date"}) is None
    assert parse_retry_after({}) is None


def test_client_errors_are_permanent_and_name_the_arm_code() -> None:
    error = to_factory_error(
        _arm_error(400, "InvalidParameter", "The value of parameter vmSize is invalid."),
        "create VM vm1",
    )
    assert isinstance(error, PermanentError)
    assert not isinstance(error, TemporaryError)
    assert "InvalidParameter" in str(error)
    assert "vmSize is invalid" in str(error)
    assert classify_failure(str(error)) is PermanentError


def test_not_found_and_conflict_have_their_own_classes() -> None:
    missing = _arm_error(404, "ResourceNotFound", "gone", cls=ResourceNotFoundError)
    assert is_not_found(missing)
    assert isinstance(to_factory_error(missing, "get"), NotFoundError)
    conflict = _arm_error(409, "Conflict", "in use", cls=ResourceExistsError)
    assert isinstance(to_factory_error(conflict, "put"), ConflictError)


def test_conflict_with_operation_in_progress_is_temporary() -> None:
    busy = _arm_error(409, "AnotherOperationInProgress", "wait", **{"Retry-After": "5"})
    error = to_factory_error(busy, "deallocate")
    assert isinstance(error, TemporaryError)
    assert error.retry_after == 5.0


def test_authorisation_failures_are_permanent() -> None:
    error = to_factory_error(_arm_error(403, "AuthorizationFailed", "no role"), "get")
    assert isinstance(error, PermanentError)
    assert "not authorised" in str(error)
    assert "AuthorizationFailed" in str(error)


def test_error_body_without_arm_shape_still_maps() -> None:
    error = to_factory_error(HttpResponseError(response=_response(502, None)), "get")
    assert isinstance(error, TemporaryError)


def test_connection_failures_are_temporary() -> None:
    assert isinstance(to_factory_error(ServiceRequestError("refused"), "get"), TemporaryError)
    assert isinstance(to_factory_error(ServiceResponseTimeoutError("slow"), "get"), TemporaryError)


def test_azure_call_re_raises_mapped_and_keeps_the_cause() -> None:
    original = _arm_error(429, "TooManyRequests", "x", **{"Retry-After": "3"})
    with pytest.raises(TemporaryError) as caught, azure_call("list disks"):
        raise original
    assert caught.value.__cause__ is original
    # App errors and everything else pass through untouched.
    with pytest.raises(InputError), azure_call("x"):
        raise InputError.single("vm_id", "bad")
    with pytest.raises(KeyError), azure_call("x"):
        raise KeyError("bug")


def test_absent_as_none_only_swallows_404() -> None:
    def missing() -> None:
        raise _arm_error(404, "NotFound", "no", cls=ResourceNotFoundError)

    def throttled() -> None:
        raise _arm_error(429, "TooManyRequests", "x")

    assert absent_as_none("get", missing) is None
    assert absent_as_none("get", lambda: 5) == 5
    with pytest.raises(TemporaryError):
        absent_as_none("get", throttled)


def test_arm_reason_quotes_the_answer_without_a_class_prefix() -> None:
    with pytest.raises(NotFoundError) as caught, azure_call("create image definition g/i"):
        raise _arm_error(404, "ParentResourceNotFound", "gallery g is not there")
    assert str(caught.value).startswith("NotFound: ")
    assert arm_reason(caught.value) == "ParentResourceNotFound gallery g is not there"
    assert arm_reason(PermanentError("no answer behind it")) == "no answer behind it"
