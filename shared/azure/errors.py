"""Azure SDK failures mapped to the app's error model (shared/errors.py).

Throttling (429), server faults (5xx), request timeouts (408) and connection failures become
:class:`TemporaryError` carrying ``retry_after`` from the answer's ``Retry-After`` header, so the
orchestrator retries after a durable timer. Every other 4xx becomes a :class:`PermanentError`
(or its :class:`NotFoundError` / :class:`ConflictError` subclasses) whose message names the ARM
error code and message. A gateway that *expects* absence catches ``ResourceNotFoundError``
itself (see :func:`is_not_found`) before anything reaches this mapping.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TypeVar

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from shared.errors import (
    ConflictError,
    FactoryError,
    NotFoundError,
    PermanentError,
    TemporaryError,
)

# 409 answers whose ARM code says "another operation is still running": retrying helps.
RETRYABLE_CONFLICT_CODES = frozenset(
    {
        "anotheroperationinprogress",
        "operationpreempted",
        "retryableerror",
        "conflictingoperationinprogress",
    }
)
TEMPORARY_STATUSES = frozenset({408, 429})
_MAX_MESSAGE = 600
T = TypeVar("T")


def parse_retry_after(
    headers: Mapping[str, str] | None, now: datetime | None = None
) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date) or ``*retry-after-ms``."""
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    raw = lowered.get("retry-after")
    if raw:
        raw = raw.strip()
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = now or datetime.now(UTC)
        return max(0.0, (when - current).total_seconds())
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        raw = lowered.get(name)
        if raw:
            try:
                return max(0.0, float(raw) / 1000.0)
            except ValueError:
                return None
    return None


def arm_error(error: HttpResponseError) -> tuple[str, str]:
    """The ARM error ``(code, message)`` of a failed answer (body ``{"error": {...}}``)."""
    code = ""
    message = ""
    parsed = getattr(error, "error", None)
    if parsed is not None:
        code = str(getattr(parsed, "code", "") or "")
        message = str(getattr(parsed, "message", "") or "")
    if not code and error.response is not None:
        try:
            body = json.loads(error.response.text() or "{}")
        except (ValueError, TypeError):
            body = {}
        inner = body.get("error") if isinstance(body, dict) else None
        if isinstance(inner, dict):
            code = str(inner.get("code") or "")
            message = message or str(inner.get("message") or "")
    if not message:
        message = str(getattr(error, "reason", "") or error.message or "").strip()
    return code or "Unknown", message[:_MAX_MESSAGE]


def arm_reason(error: BaseException) -> str:
    """``"<ARM code> <message>"`` of a failure, to quote inside another error's message.

    For an app error mapped from an SDK answer (:func:`azure_call` raises it *from* that
    answer) the ARM code and message of the answer; else the error's own text. Never the
    class prefix (``NotFound:`` ...), which only the outermost message may start with.
    """
    answer = error if isinstance(error, HttpResponseError) else error.__cause__
    if isinstance(answer, HttpResponseError):
        code, message = arm_error(answer)
        return f"{code} {message}".strip()
    return Exception.__str__(error)


def status_of(error: BaseException) -> int | None:
    """The HTTP status of an SDK error, when it carries an answer."""
    if isinstance(error, HttpResponseError):
        status = error.status_code
        if status is None and error.response is not None:
            status = error.response.status_code
        return status
    return None


def is_not_found(error: BaseException) -> bool:
    """True for a 404 answer (what a gateway expecting absence catches)."""
    return isinstance(error, ResourceNotFoundError) or status_of(error) == 404


def to_factory_error(error: BaseException, what: str) -> FactoryError:
    """The app error for an SDK failure during ``what`` (e.g. ``"create VM vm-x"``)."""
    if isinstance(error, FactoryError):
        return error
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        # Connection refused/reset, DNS, TLS handshake, read timeouts: the request may be retried.
        return TemporaryError(f"{what}: Azure did not answer ({type(error).__name__}: {error})")
    if isinstance(error, HttpResponseError):
        status = status_of(error)
        code, message = arm_error(error)
        raw_headers = getattr(error.response, "headers", None) or {}
        headers = {str(k): str(v) for k, v in dict(raw_headers).items()}
        retry_after = parse_retry_after(headers)
        detail = f"{what}: HTTP {status} {code}: {message}"
        if status is not None and (status in TEMPORARY_STATUSES or status >= 500):
            return TemporaryError(detail, retry_after=retry_after)
        if status == 409 and code.lower() in RETRYABLE_CONFLICT_CODES:
            return TemporaryError(detail, retry_after=retry_after)
        if status == 404:
            return NotFoundError(detail)
        if status == 409:
            return ConflictError(detail)
        if isinstance(error, ClientAuthenticationError) or status in (401, 403):
            return PermanentError(f"{what}: not authorised: HTTP {status} {code}: {message}")
        return PermanentError(detail)
    if isinstance(error, AzureError):
        return TemporaryError(f"{what}: {type(error).__name__}: {error}")
    return PermanentError(f"{what}: {type(error).__name__}: {error}")


@contextmanager
def azure_call(what: str) -> Iterator[None]:
    """Run SDK calls; re-raise any Azure failure as the matching app error."""
    try:
        yield
    except FactoryError:
        raise
    except AzureError as error:
        raise to_factory_error(error, what) from error


def absent_as_none(what: str, fetch: Callable[[], T]) -> T | None:
    """``fetch()``, or ``None`` when Azure answers 404; other failures mapped as usual."""
    try:
        return fetch()
    except AzureError as error:
        if is_not_found(error):
            return None
        raise to_factory_error(error, what) from error
