"""The small error model: permanent vs temporary failures, and input errors that name fields.

Activities raise these (never return error strings); orchestrators decide from the type whether
a retry can help. Across the activity boundary the durable SDK carries only the message, so each
message starts with the class's ``prefix`` and :func:`classify_failure` reads it back.
"""

from __future__ import annotations

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


def classify_failure(message: str | None) -> type[FactoryError]:
    """Which error class a failed activity's message came from (default: temporary)."""
    text = (message or "").lstrip()
    for cls in (InputError, NotFoundError, ConflictError, PermanentError, TemporaryError):
        if text.startswith(cls.prefix + ":") or f" {cls.prefix}: " in text[:400]:
            return cls
    return TemporaryError


def is_permanent(message: str | None) -> bool:
    return issubclass(classify_failure(message), PermanentError)
