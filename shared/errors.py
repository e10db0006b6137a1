"""The small error model: permanent vs temporary failures, and input errors that name fields.

Activities raise these (never return error strings); orchestrators decide from the type whether
a retry can help. Across the activity boundary the durable SDK carries only the message, so each
message starts with the class's ``prefix`` and :func:`classify_failure` reads it back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class FactoryError(Exception):
    """Base of every error this app raises on purpose."""

    prefix = "FactoryError"

    def __str__(self) -> str:
        text = super().__str__()
        return text if text.startswith(self.prefix + ":") else f"{self.prefix}: {text}"


class PermanentError(FactoryError):
    """Retrying cannot help: bad input, a refused request, a broken image."""

    prefix = "PermanentError"


class TemporaryError(FactoryError):
    """Retrying later may help: throttling, a transient fault, a resource still in progress."""

    prefix = "TemporaryError"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = super().__str__()
        if self.retry_after is not None and "(retry after " not in text:
            text += f" (retry after {self.retry_after:g}s)"
        return text


@dataclass(frozen=True)
class FieldError:
    """One bad field: its dotted path (``images[1].steps[0]``) and why it is refused."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class InputError(PermanentError):
    """Input refused at the edge; carries every bad field, not just the first."""

    prefix = "InputError"

    def __init__(self, errors: Sequence[FieldError] | FieldError, summary: str = "invalid input"):
        self.errors: list[FieldError] = [errors] if isinstance(errors, FieldError) else list(errors)
        self.summary = summary
        super().__init__(f"{summary}: " + "; ".join(str(e) for e in self.errors))

    @classmethod
    def single(cls, path: str, reason: str, summary: str = "invalid input") -> InputError:
        return cls([FieldError(path, reason)], summary)

    def to_json(self) -> dict[str, object]:
        return {
            "error": {
                "code": "InvalidInput",
                "message": f"{self.summary}",
                "details": [{"field": e.path, "reason": e.reason} for e in self.errors],
            }
        }


class SettingsError(InputError):
    """An app setting is missing or malformed: the operator's to fix, never the caller's.

    Triggers refuse to start work on it with one clear log line (``refuse_without_settings``
    in shared/settings.py); an HTTP caller gets 503, Event Grid retries (the fix may come)."""

    prefix = "SettingsError"

    def to_json(self) -> dict[str, object]:
        body = super().to_json()
        body["error"]["code"] = "AppMisconfigured"  # type: ignore[index]
        return body


class NotFoundError(PermanentError):
    """A named thing (image, instance, version) does not exist."""

    prefix = "NotFound"


class ConflictError(PermanentError):
    """The request clashes with current state (a build already running, a version in use)."""

    prefix = "Conflict"


def field_errors_from_pydantic(errors: Iterable[dict[str, object]]) -> list[FieldError]:
    """Turn pydantic's ``ValidationError.errors()`` into dotted-path field errors."""
    out: list[FieldError] = []
    for err in errors:
        loc = err.get("loc", ())
        path = ""
        for part in loc if isinstance(loc, tuple | list) else ():
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                path += ("." if path else "") + str(part)
        out.append(FieldError(path, str(err.get("msg", "invalid"))))
    return out


_ACTIVITY_HEAD = re.compile(r"^\s*Activity function '[^']*' failed:\s*")
_EXCEPTION_NAME = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception):\s*")
# Unexpected exceptions that are transient by nature (network, time-outs): worth a retry.
_TRANSIENT_BUILTINS = frozenset(
    {
        "TimeoutError",
        "ConnectionError",
        "ConnectionResetError",
        "ConnectionRefusedError",
        "ServiceRequestError",
        "ServiceResponseError",
        "FunctionTimeoutException",
    }
)
_RETRY_AFTER = re.compile(r"\(retry after (\d+(?:\.\d+)?)s\)")


def _leading(message: str | None) -> str:
    """The message without the host's ``Activity function 'x' failed:`` head."""
    return _ACTIVITY_HEAD.sub("", (message or "").lstrip(), count=1)


def classify_failure(message: str | None) -> type[FactoryError]:
    """Which error class a failed activity's message came from.

    Only the *leading* prefix counts (after the host's "Activity function ... failed:" head),
    so a temporary error that quotes another error's text stays temporary. A message with no
    known prefix came from an unexpected exception (a bug, a missing file): permanent, since
    retrying the same code on the same input cannot help.
    """
    text = _leading(message)
    for _ in range(3):  # e.g. "StepFailedError: PermanentError: ..." from the worker
        for cls in (InputError, NotFoundError, ConflictError, PermanentError, TemporaryError):
            if text.startswith(cls.prefix + ":"):
                return cls
        if text.split(":", 1)[0].rsplit(".", 1)[-1] in _TRANSIENT_BUILTINS:
            return TemporaryError
        stripped = _EXCEPTION_NAME.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return PermanentError


def is_permanent(message: str | None) -> bool:
    return issubclass(classify_failure(message), PermanentError)


def retry_after_of(message: str | None) -> float | None:
    """The ``(retry after Ns)`` hint a TemporaryError carried across the boundary, if any."""
    found = _RETRY_AFTER.search(message or "")
    return float(found.group(1)) if found else None
