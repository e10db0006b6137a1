"""Fault injection: seeded, rule-driven failures so unhappy paths can be exercised on purpose.

Four rule types (see emulator/README.md):

- ``http``: an error answer before the handler runs (transient 500/503, 429 with Retry-After,
  or any status/code), matched on operation name and resource id (globs, case-insensitive);
- ``lro_failure``: a long-running operation that ends ``Failed`` with the given error;
- ``flag``: a named condition a module asks about (``faults.flag("host_never_registers",
  host_pool="hp1")``), e.g. a session host that never registers;
- ``multiplier``: a named factor (``faults.multiplier("replication_slow", region="eastus")``).

Each rule may fire with a ``probability`` (drawn from the seeded generator), skip its first
``after`` matches and fire at most ``count`` times. Same seed, same requests: same faults.
"""

from __future__ import annotations

import fnmatch
import random
import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from emulator.arm import ArmError

RuleType = Literal["http", "lro_failure", "flag", "multiplier"]

_DEFAULT_CODES = {
    400: ("BadRequest", "The request is invalid."),
    409: ("Conflict", "The operation could not be completed because of a conflict."),
    429: (
        "TooManyRequests",
        "The request is being throttled as the limit has been reached for this operation.",
    ),
    500: (
        "InternalServerError",
        "An internal execution error occurred. Please retry later.",
    ),
    502: ("BadGateway", "The service received an invalid response from an upstream server."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable. Please retry later."),
    504: ("GatewayTimeout", "The gateway did not receive a response within the specified time."),
}


class FaultRule(BaseModel):
    """One injected fault. ``kind`` names a flag/multiplier; ``match`` filters its keywords."""

    model_config = ConfigDict(extra="forbid")

    type: RuleType
    op: str = "*"
    resource: str = "*"
    kind: str | None = None
    match: dict[str, str] = Field(default_factory=dict)
    status: int = Field(default=503, ge=400, le=599)
    code: str | None = None
    message: str | None = None
    retry_after: int | None = Field(default=None, ge=0)
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    after: int = Field(default=0, ge=0)
    count: int | None = Field(default=None, ge=0)
    factor: float = Field(default=1.0, gt=0.0)


def _glob(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


class _Armed:
    def __init__(self, rule_id: int, rule: FaultRule) -> None:
        self.id = rule_id
        self.rule = rule
        self.matched = 0
        self.fired = 0


class FaultInjector:
    """Evaluates fault rules; thread-safe; deterministic for a given seed and request order."""

    def __init__(self, seed: int | str = 0) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Armed] = []
        self._next_id = 1
        self._rng = random.Random(f"faults:{seed}")

    def reseed(self, seed: int | str) -> None:
        with self._lock:
            self._rng = random.Random(f"faults:{seed}")

    def add(self, rule: FaultRule | dict[str, Any]) -> int:
        r = rule if isinstance(rule, FaultRule) else FaultRule.model_validate(rule)
        if r.type in ("flag", "multiplier") and not r.kind:
            raise ValueError(f"a {r.type} rule needs 'kind'")
        with self._lock:
            rid = self._next_id
            self._next_id += 1
            self._rules.append(_Armed(rid, r))
            return rid

    def remove(self, rule_id: int) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [a for a in self._rules if a.id != rule_id]
            return len(self._rules) != before

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "id": a.id,
                    "matched": a.matched,
                    "fired": a.fired,
                    **a.rule.model_dump(exclude_defaults=True),
                }
                for a in self._rules
            ]

    def _fires(self, armed: _Armed) -> bool:
        """Called under the lock for a rule whose filters matched."""
        armed.matched += 1
        r = armed.rule
        if armed.matched <= r.after:
            return False
        if r.count is not None and armed.fired >= r.count:
            return False
        if r.probability < 1.0 and self._rng.random() >= r.probability:
            return False
        armed.fired += 1
        return True

    @staticmethod
    def _error(r: FaultRule, status: int) -> ArmError:
        code, message = _DEFAULT_CODES.get(status, ("InjectedFault", "An injected fault."))
        headers: dict[str, str] = {}
        retry_after = r.retry_after if r.retry_after is not None else (5 if status == 429 else None)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        return ArmError(status, r.code or code, r.message or message, headers)

    def check(self, op: str, resource_id: str) -> None:
        """Raise the ArmError of the first ``http`` rule that fires for this request."""
        with self._lock:
            for a in self._rules:
                r = a.rule
                if r.type != "http" or not _glob(r.op, op) or not _glob(r.resource, resource_id):
                    continue
                if self._fires(a):
                    raise self._error(r, r.status)

    def lro_failure(self, op: str, resource_id: str) -> ArmError | None:
        """The error a long-running operation should end with, or None."""
        with self._lock:
            for a in self._rules:
                r = a.rule
                if r.type != "lro_failure":
                    continue
                if not _glob(r.op, op) or not _glob(r.resource, resource_id):
                    continue
                if self._fires(a):
                    status = r.status if r.status != 503 else 500
                    err = self._error(r, status)
                    if r.code is None:
                        err.code = "OperationFailed"
                    if r.message is None:
                        err.message = f"The operation '{op}' failed (injected fault)."
                    return err
        return None

    def _matches(self, r: FaultRule, kind: str, match: dict[str, Any]) -> bool:
        if r.kind is None or r.kind.lower() != kind.lower():
            return False
        for key, pattern in r.match.items():
            if key not in match or not _glob(pattern, str(match[key])):
                return False
        return True

    def flag(self, kind: str, **match: Any) -> bool:
        """True when a ``flag`` rule of this kind matches every keyword it names and fires."""
        with self._lock:
            for a in self._rules:
                if a.rule.type == "flag" and self._matches(a.rule, kind, match) and self._fires(a):
                    return True
        return False

    def multiplier(self, kind: str, **match: Any) -> float:
        """Product of the factors of every ``multiplier`` rule of this kind that fires (1.0)."""
        factor = 1.0
        with self._lock:
            for a in self._rules:
                r = a.rule
                if r.type == "multiplier" and self._matches(r, kind, match) and self._fires(a):
                    factor *= r.factor
        return factor
