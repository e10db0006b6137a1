"""Calling orchestrator, entity and activity functions the way the Python worker does.

The worker decodes a trigger with the binding's converter from ``azure.functions``
(``OrchestrationTriggerConverter`` gives an ``OrchestrationContext`` whose body is the host's
request JSON; ``ActivityTriggerConverter`` JSON-decodes the activity input with the durable
codec), calls the user function with that value under the trigger's parameter name (and
``context`` when the function asks for one), and encodes the return value with the same
converter. An entity function gets the whole batch in one call (``EntityTriggerConverter``: an
``EntityContext`` whose body is the batch request JSON) and returns the batch result JSON
(``entityExists``, ``entityState``, ``results``, ``signals``). A failing function becomes an
``RpcException`` whose message is ``"<ExceptionType>: <message>"``; the Durable extension
reports a failed activity as ``Activity function '<name>' failed: <that message>``. Async
activities run on one event loop thread, as the worker runs coroutine functions.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.functions import meta
from azure.functions.durable_functions import (
    ActivityTriggerConverter,
    EnitityTriggerConverter,
    OrchestrationTriggerConverter,
)

from devhost.context import InvocationContext
from devhost.functions import FunctionInfo

OUT_OF_PROC_MARKER = "$OutOfProcData$:"


@dataclass(frozen=True)
class ActivityOutcome:
    """What an activity invocation gave: a JSON result, or a failure reason and details."""

    ok: bool
    result: str | None = None
    reason: str | None = None
    details: str | None = None


@dataclass(frozen=True)
class OrchestratorOutcome:
    """What an orchestrator episode gave: the SDK's state JSON, or the error it raised."""

    state: dict[str, Any] | None
    error: str | None = None
    details: str | None = None


class AsyncRunner:
    """One event loop on a daemon thread for coroutine functions (started on first use)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    ready.set()
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="devhost-async", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._ensure())
        return future.result()

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop, self._thread = None, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(timeout=5)
            loop.close()


def _arguments(
    info: FunctionInfo, trigger_value: Any, directory: str
) -> tuple[dict[str, Any], str | None]:
    """Keyword arguments for the user function, or the reason it cannot be called."""
    kwargs: dict[str, Any] = {}
    try:
        parameters = inspect.signature(info.user_function).parameters
    except (TypeError, ValueError):
        return {info.trigger_param: trigger_value}, None
    for name, parameter in parameters.items():
        if name == info.trigger_param:
            kwargs[name] = trigger_value
        elif name == "context":
            kwargs[name] = InvocationContext(info.name, directory)
        elif parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue
        elif parameter.default is parameter.empty:
            return {}, (
                f"parameter {name!r} of function {info.name!r} has no binding the devhost "
                "can supply (only the trigger and 'context')"
            )
    if info.trigger_param not in kwargs:
        kwargs[info.trigger_param] = trigger_value
    return kwargs, None


def _failure(name: str, exc: BaseException) -> ActivityOutcome:
    message = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    if cause is not None and str(cause) not in message:
        message += f" (caused by {type(cause).__name__}: {cause})"
    details = "".join(traceback.format_exception(exc)).strip()
    return ActivityOutcome(
        ok=False, reason=f"Activity function '{name}' failed: {message}", details=details
    )


def run_activity(
    info: FunctionInfo,
    input_json: str | None,
    runner: AsyncRunner,
    directory: str = ".",
) -> ActivityOutcome:
    """Invoke one activity as the worker does; never raises for a user error."""
    try:
        value = ActivityTriggerConverter.decode(
            meta.Datum(type="json", value=input_json if input_json is not None else "null"),
            trigger_metadata={},
        )
    except Exception as exc:
        return _failure(info.name, exc)
    kwargs, problem = _arguments(info, value, directory)
    if problem is not None:
        return ActivityOutcome(
            ok=False, reason=f"Activity function '{info.name}' failed: {problem}", details=None
        )
    try:
        result = info.user_function(**kwargs)
        if inspect.isawaitable(result):
            result = runner.run(_await(result))
    except Exception as exc:
        return _failure(info.name, exc)
    try:
        datum = ActivityTriggerConverter.encode(result, expected_type=None)
    except Exception as exc:
        return _failure(info.name, exc)
    encoded = datum.value
    return ActivityOutcome(ok=True, result=encoded if isinstance(encoded, str) else None)


async def _await(awaitable: Any) -> Any:
    return await awaitable


_FAST_LOCK = threading.Lock()


def install_fast_timestamps() -> bool:
    """Speed up the SDK's history parsing without changing what it produces.

    The SDK parses every history event's ``Timestamp`` with ``dateutil`` on every replay: about
    three quarters of an episode's cost. The engine writes one fixed-width format
    (``2025-01-01T00:00:00.000000Z``); for exactly that format this parses with
    ``datetime.fromisoformat`` and attaches the very tzinfo ``dateutil`` gives for ``Z`` on this
    machine, so the values are identical (checked before installing). Any other text goes to
    ``dateutil`` as before. Returns whether the fast path is installed (idempotent).
    """
    module = sys.modules.get("azure.durable_functions.models.history.HistoryEvent")
    if module is None:
        importlib.import_module("azure.durable_functions.models.history.HistoryEvent")
        module = sys.modules["azure.durable_functions.models.history.HistoryEvent"]
    with _FAST_LOCK:
        current = getattr(module, "dt_parse", None)
        if current is None:
            return False
        if getattr(current, "devhost_fast", False):
            return True
        original: Callable[..., datetime] = current
        zones: dict[tuple[str, ...], Any] = {}

        def fast(text: Any, *args: Any, **kwargs: Any) -> datetime:
            if (
                not args
                and not kwargs
                and isinstance(text, str)
                and len(text) == 27
                and text[10] == "T"
                and text[26] == "Z"
                and text[19] == "."
            ):
                key = tuple(time.tzname)
                zone = zones.get(key)
                if zone is None:
                    zone = original("2000-01-01T00:00:00.000000Z").tzinfo
                    zones[key] = zone
                try:
                    return datetime.fromisoformat(text[:26]).replace(tzinfo=zone)
                except ValueError:
                    pass
            return original(text, *args, **kwargs)

        samples = ("2025-01-01T00:00:00.000000Z", "2031-12-31T23:59:59.999999Z")
        for sample in samples:
            expected, got = original(sample), fast(sample)
            if expected != got or repr(expected) != repr(got):
                return False
        fast.devhost_fast = True  # type: ignore[attr-defined]
        module.dt_parse = fast  # type: ignore[attr-defined]
        return True


def split_out_of_proc_error(message: str) -> tuple[str, dict[str, Any] | None]:
    """Split the SDK's ``<error>\\n\\n$OutOfProcData$:<state JSON>`` into its two parts."""
    head, marker, tail = message.partition(OUT_OF_PROC_MARKER)
    if not marker:
        return message.strip(), None
    try:
        state = json.loads(tail)
    except ValueError:
        return head.strip(), None
    return head.strip(), state if isinstance(state, dict) else None


def run_orchestrator(info: FunctionInfo, request_json: str) -> OrchestratorOutcome:
    """Run one orchestrator episode as the worker does: request JSON in, state JSON out."""
    context = OrchestrationTriggerConverter.decode(
        meta.Datum(type="string", value=request_json), trigger_metadata={}
    )
    user: Callable[..., Any] = info.user_function
    try:
        returned = user(**{info.trigger_param: context})
        datum = OrchestrationTriggerConverter.encode(returned, expected_type=None)
    except Exception as exc:
        head, state = split_out_of_proc_error(str(exc))
        error = None
        if state is not None:
            error = state.get("error")
        if not error:
            error = head or type(exc).__name__
            if state is None:
                error = f"{type(exc).__name__}: {error}"
        details = "".join(traceback.format_exception(exc.__cause__ or exc)).strip()
        return OrchestratorOutcome(state=state, error=str(error), details=details)
    raw = datum.value
    try:
        state = json.loads(raw) if isinstance(raw, str | bytes) else raw
    except ValueError as exc:
        return OrchestratorOutcome(
            state=None, error=f"the orchestrator returned no valid state JSON: {exc}"
        )
    if not isinstance(state, dict):
        return OrchestratorOutcome(
            state=None, error=f"the orchestrator returned {type(state).__name__}, not a state"
        )
    return OrchestratorOutcome(state=state)


@dataclass(frozen=True)
class EntityBatchOutcome:
    """What an entity batch gave: the SDK's result JSON, or the error the function raised."""

    result: dict[str, Any] | None
    error: str | None = None


def run_entity_batch(info: FunctionInfo, request_json: str) -> EntityBatchOutcome:
    """Run one entity batch as the worker does: batch request JSON in, batch result JSON out."""
    context = EnitityTriggerConverter.decode(
        meta.Datum(type="string", value=request_json), trigger_metadata={}
    )
    try:
        returned = info.user_function(**{info.trigger_param: context})
        datum = EnitityTriggerConverter.encode(returned, expected_type=None)
    except Exception as exc:
        return EntityBatchOutcome(result=None, error=f"{type(exc).__name__}: {exc}")
    raw = datum.value
    try:
        result = json.loads(raw) if isinstance(raw, str | bytes) else raw
    except ValueError as exc:
        return EntityBatchOutcome(result=None, error=f"the entity returned no valid JSON: {exc}")
    if not isinstance(result, dict) or not isinstance(result.get("results"), list):
        return EntityBatchOutcome(result=None, error="the entity returned no batch result")
    return EntityBatchOutcome(result=result)
