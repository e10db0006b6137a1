"""The ``context`` argument the Python worker passes to functions that declare one."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import azure.functions as func
from azure.functions._abc import TraceContext


def new_trace_parent() -> str:
    """A W3C traceparent for an invocation that arrived without one."""
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00"


class _TraceContext(TraceContext):
    def __init__(self, trace_parent: str = "", trace_state: str = "") -> None:
        self._parent = trace_parent or new_trace_parent()
        self._state = trace_state

    @property
    def trace_state(self) -> str:
        return self._state

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class InvocationContext(func.Context):
    """Invocation id, function name and directory, trace context, thread-local storage."""

    def __init__(self, function_name: str, directory: str = ".", trace_parent: str = "") -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._directory = directory
        self._trace = _TraceContext(trace_parent)
        self._tls = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._tls

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._directory

    @property
    def trace_context(self) -> TraceContext:
        return self._trace

    @property
    def retry_context(self) -> Any:
        return None
