"""Registering activities: one helper for every activity module, with a trace span per call.

``registered(bp, name)`` registers a function as the activity ``name`` (function name = activity
name = the constant in ``shared/names.py``), input parameter ``payload``. Each call runs inside
:func:`shared.telemetry.operation_span`, keyed by the build, rollout or other operation id the
payload names, so all activities of one build form one trace with the Azure SDK calls inside as
dependencies. Exceptions pass through untouched (the span records them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import azure.durable_functions as df

from shared.telemetry import operation_span

Result = TypeVar("Result")
OPERATION_KEYS = ("build_id", "rollout_id", "validation_id", "run_id", "operation_id")


def operation_of(payload: Any, fallback: str) -> str:
    """The operation an activity call belongs to: the first id the payload carries."""
    if isinstance(payload, Mapping):
        for key in OPERATION_KEYS:
            value = payload.get(key)
            if isinstance(value, str) and value:
                return value
        image, version = payload.get("image"), payload.get("version")
        if isinstance(image, str) and isinstance(version, str):
            return f"{image}/{version}"
    return fallback


def registered(
    bp: df.Blueprint, name: str
) -> Callable[[Callable[[Any], Result]], Callable[[Any], Result]]:
    """Register ``fn`` as the activity ``name``; the module keeps the plain function."""

    def wrap(fn: Callable[[Any], Result]) -> Callable[[Any], Result]:
        @functools.wraps(fn)
        def traced(payload: Any) -> Result:
            with operation_span(name, operation_of(payload, name), activity=name):
                return fn(payload)

        trigger = bp.activity_trigger(input_name="payload", activity=name)
        bp.function_name(name=name)(trigger(traced))
        return fn

    return wrap
