"""Function discovery: what the Functions host learns from indexing ``function_app.app``.

The v2 programming model's ``FunctionApp.get_functions()`` may be called only once per app
object (a second call raises "does not have a unique function name"), so the index is built once
per app and cached here. Everything else in the devhost looks functions up through it.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ORCHESTRATION = "orchestrationTrigger"
ACTIVITY = "activityTrigger"
ENTITY = "entityTrigger"
HTTP = "httpTrigger"
EVENT_GRID = "eventGridTrigger"
TIMER = "timerTrigger"
DURABLE_CLIENT = "durableClient"


class UnknownFunctionError(LookupError):
    """A function name (or kind) the app does not define."""

    def __init__(self, name: str, kind: str | None = None, known: list[str] | None = None):
        self.name = name
        self.kind = kind
        what = f"{kind} function" if kind else "function"
        hint = f"; known: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"unknown {what} {name!r}{hint}")


@dataclass(frozen=True)
class FunctionInfo:
    """One indexed function: its trigger, its bindings and the callable the worker invokes."""

    name: str
    trigger_type: str
    trigger_param: str
    user_function: Callable[..., Any]
    bindings: tuple[dict[str, Any], ...]
    trigger: dict[str, Any] = field(default_factory=dict)

    def binding_names(self, binding_type: str) -> list[str]:
        return [b["name"] for b in self.bindings if b.get("type") == binding_type]

    @property
    def durable_client_param(self) -> str | None:
        names = self.binding_names(DURABLE_CLIENT)
        return names[0] if names else None


def _plain(value: Any) -> Any:
    """Binding dicts hold enums (direction, methods, auth level): reduce them to JSON values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    enum_value = getattr(value, "value", None)
    if enum_value is not None and not isinstance(value, str | int | float | bool):
        return enum_value
    return value


class FunctionIndex:
    """The indexed functions of one app object, by name and by trigger type."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._functions: dict[str, FunctionInfo] = {}
        for fn in app.get_functions():
            trigger = fn.get_trigger()
            raw = fn.get_dict_repr()
            bindings = tuple(_plain(b) for b in raw.get("bindings", []))
            trigger_json: dict[str, Any] = next(
                (b for b in bindings if b.get("name") == trigger.name), {}
            )
            info = FunctionInfo(
                name=fn.get_function_name(),
                trigger_type=str(trigger_json.get("type") or trigger.get_binding_name()),
                trigger_param=trigger.name,
                user_function=fn.get_user_function(),
                bindings=bindings,
                trigger=trigger_json,
            )
            self._functions[info.name] = info

    @property
    def names(self) -> list[str]:
        return sorted(self._functions)

    def all(self) -> list[FunctionInfo]:
        return [self._functions[n] for n in self.names]

    def of_type(self, trigger_type: str) -> list[FunctionInfo]:
        return [f for f in self.all() if f.trigger_type == trigger_type]

    def get(self, name: str, trigger_type: str | None = None) -> FunctionInfo:
        info = self._functions.get(name)
        if info is None or (trigger_type is not None and info.trigger_type != trigger_type):
            known = [f.name for f in self.of_type(trigger_type)] if trigger_type else self.names
            raise UnknownFunctionError(name, trigger_type, known)
        return info

    def has(self, name: str, trigger_type: str | None = None) -> bool:
        info = self._functions.get(name)
        return info is not None and (trigger_type is None or info.trigger_type == trigger_type)


_cache: dict[int, FunctionIndex] = {}
_cache_lock = threading.Lock()


def index_app(app: Any) -> FunctionIndex:
    """The (cached) index of an app object: get_functions() runs once per object."""
    with _cache_lock:
        found = _cache.get(id(app))
        if found is None or found.app is not app:
            found = FunctionIndex(app)
            _cache[id(app)] = found
        return found


def load_app(spec: str = "function_app:app") -> Any:
    """Import ``module:attribute`` (default: the project's function_app.app)."""
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr or "app")
