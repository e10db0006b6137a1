"""ARM wire values: the request/response objects handlers see, and ARM's error answers.

Re-exported by :mod:`emulator.core` (``from emulator.core import ArmError, Request, Response``).
The helper constructors word their messages the way Azure Resource Manager does, so client code
that matches on codes or messages behaves as it would against Azure.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from emulator.store import parse_resource_id


class ArmError(Exception):
    """An ARM error answer: ``{"error": {"code", "message"}}`` with an HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        target: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.target = target
        self.details = details

    def error_body(self) -> dict[str, Any]:
        """The inner ``error`` object (also used for failed async operations)."""
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            err["target"] = self.target
        if self.details:
            err["details"] = self.details
        return err

    def body(self) -> dict[str, Any]:
        return {"error": self.error_body()}


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only header mapping."""

    def __init__(self, items: Mapping[str, str] | list[tuple[str, str]] | None = None) -> None:
        self._d: dict[str, tuple[str, str]] = {}
        pairs = items.items() if isinstance(items, Mapping) else (items or [])
        for k, v in pairs:
            self._d[k.lower()] = (k, v)

    def __getitem__(self, key: str) -> str:
        return self._d[key.lower()][1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._d

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._d.values())

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        return f"Headers({dict(self._d.values())!r})"


@dataclass
class Request:
    """What a handler sees. ``params`` are the route's path values as the client wrote them
    (URL-decoded); ``query`` keys are lower-cased; ``body`` is parsed JSON or None."""

    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    headers: Headers
    body: Any
    api_version: str
    subscription: str | None
    op: str = ""
    base_url: str = ""
    raw_body: bytes = b""
    correlation_id: str = ""
    request_id: str = ""

    @property
    def resource_id(self) -> str:
        """The addressed path (an ARM id for resource routes), without a trailing slash."""
        return self.path.rstrip("/")

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object, or 400 InvalidRequestContent."""
        if not isinstance(self.body, dict):
            raise ArmError(
                400,
                "InvalidRequestContent",
                "The request content was invalid and could not be deserialized: "
                "the request body must be a JSON object.",
            )
        return self.body


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


# -- ARM-worded errors ----------------------------------------------------------------------


def resource_not_found(resource_id: str) -> ArmError:
    """404 ResourceNotFound, worded as ARM words it."""
    rid = parse_resource_id(resource_id)
    typed = "/".join(
        [rid.provider or ""] + [f"{t}/{n}" for t, n in zip(rid.types, rid.names, strict=False)]
    )
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource '{typed}' under resource group '{rid.resource_group}' was not found. "
        "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


def parent_not_found(resource_id: str) -> ArmError:
    """404 ParentResourceNotFound for a child whose parent is missing."""
    rid = parse_resource_id(resource_id)
    parent = rid.parent or resource_id
    prid = parse_resource_id(parent)
    typed = "/".join(
        [prid.provider or ""] + [f"{t}/{n}" for t, n in zip(prid.types, prid.names, strict=False)]
    )
    return ArmError(
        404,
        "ParentResourceNotFound",
        f"Can not perform requested operation on nested resource. Parent resource "
        f"'{typed.split('/', 1)[-1]}' not found.",
    )


def bad_request(
    message: str, code: str = "InvalidParameter", target: str | None = None
) -> ArmError:
    return ArmError(400, code, message, target=target)


def conflict(message: str, code: str = "Conflict") -> ArmError:
    return ArmError(409, code, message)


def operation_not_allowed(message: str) -> ArmError:
    return ArmError(409, "OperationNotAllowed", message)


# Characters ARM refuses in any resource name (before the resource provider sees the request).
_ARM_BAD_CHARS = re.compile(r"[<>*%&:\\?+/#|\"\x00-\x1f]")


def check_name(
    name: str,
    *,
    kind: str,
    pattern: str | None = None,
    max_length: int = 80,
    min_length: int = 1,
    rule: str | None = None,
) -> None:
    """400 InvalidResourceName unless ``name`` is acceptable for a resource of ``kind``.

    ``pattern`` is a full-match regex for the resource type's own naming rule; ``rule`` is the
    sentence explaining it (Azure's messages state the rule).
    """
    bad = (
        _ARM_BAD_CHARS.search(name) is not None
        or not (min_length <= len(name) <= max_length)
        or name.endswith(".")
        or (pattern is not None and re.fullmatch(pattern, name) is None)
    )
    if bad:
        explanation = rule or (
            f"The name can be up to {max_length} characters long. It must begin with a word "
            "character, and it must end with a word character or with '_'. The name may contain "
            "word characters or '.', '-', '_'."
        )
        raise ArmError(
            400,
            "InvalidResourceName",
            f"Resource name {name} is invalid. {explanation}",
            target=kind,
        )


# -- typed access to request bodies (bad shapes become 400s, never crashes) -----------------


def _invalid(path: str, expected: str, value: Any) -> ArmError:
    return ArmError(
        400,
        "InvalidParameter",
        f"The value of parameter '{path}' is invalid: expected {expected}, got "
        f"{type(value).__name__}.",
        target=path,
    )


def as_object(value: Any, path: str) -> dict[str, Any]:
    """``value`` as a JSON object ({} for null), or 400 InvalidParameter naming ``path``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(path, "an object", value)
    return value


def as_list(value: Any, path: str) -> list[Any]:
    """``value`` as a JSON array ([] for null), or 400 InvalidParameter naming ``path``."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid(path, "an array", value)
    return value


def as_int(value: Any, path: str) -> int | None:
    """``value`` as an integer (None for null; numeric strings accepted), or 400."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _invalid(path, "an integer", value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise _invalid(path, "an integer", value)


def as_str(value: Any, path: str) -> str | None:
    """``value`` as a string (None for null), or 400 InvalidParameter naming ``path``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(path, "a string", value)
    return value


def merge_patch(
    target: dict[str, Any],
    patch: Mapping[str, Any],
    *,
    read_only: frozenset[str] = frozenset(),
    path: str = "",
) -> dict[str, Any]:
    """ARM's PATCH of ``properties``: a JSON merge patch (RFC 7386) applied in place.

    Objects merge key by key, anything else (lists included) replaces the old value, ``null``
    removes the key. Dotted paths in ``read_only`` (relative to the patched object, e.g.
    ``"provisioningState"`` or ``"storageProfile.osDisk.managedDisk.id"``) are ignored, as
    Azure ignores read-only properties in a request. Returns ``target``.
    """
    for key, value in patch.items():
        sub = f"{path}.{key}" if path else key
        if sub in read_only:
            continue
        old = target.get(key)
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(old, dict):
            merge_patch(old, value, read_only=read_only, path=sub)
        elif isinstance(value, Mapping):
            target[key] = merge_patch({}, value, read_only=read_only, path=sub)
        else:
            target[key] = value
    return target


def property_change_not_allowed(path: str) -> ArmError:
    """Compute's refusal of a change to a property fixed at creation."""
    return ArmError(
        409,
        "PropertyChangeNotAllowed",
        f"Changing property '{path}' is not allowed.",
        target=path,
    )
