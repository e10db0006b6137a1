"""activities/_registry.py: activities register under their constant and run in their
operation's trace."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df
import pytest

from activities._registry import operation_of, registered


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"build_id": "win11-000001", "image": "win11"}, "win11-000001"),
        ({"rollout_id": "hp1-r7"}, "hp1-r7"),
        ({"image": "win11", "version": "1.2.3"}, "win11/1.2.3"),
        ({"build_id": ""}, "fallback"),
        ("not a dict", "fallback"),
    ],
)
def test_operation_of_names_the_operation(payload: Any, expected: str) -> None:
    assert operation_of(payload, "fallback") == expected


def test_registered_activity_is_indexed_and_calls_through() -> None:
    bp = df.Blueprint()
    seen: list[Any] = []

    @registered(bp, "probe_activity")
    def probe(payload: Any) -> dict[str, Any]:
        seen.append(payload)
        return {"ok": payload["build_id"]}

    app = df.DFApp()
    app.register_functions(bp)
    [function] = app.get_functions()
    assert function.get_function_name() == "probe_activity"
    binding = function.get_bindings()[0]
    assert (binding.type, binding.name) == ("activityTrigger", "payload")
    traced = function.get_user_function()
    assert traced({"build_id": "b1"}) == {"ok": "b1"}
    assert probe({"build_id": "b2"}) == {"ok": "b2"}
    assert seen == [{"build_id": "b1"}, {"build_id": "b2"}]


def test_exceptions_pass_through_the_span() -> None:
    bp = df.Blueprint()

    @registered(bp, "failing_activity")
    def failing(payload: Any) -> None:
        raise ValueError("boom")

    app = df.DFApp()
    app.register_functions(bp)
    with pytest.raises(ValueError, match="boom"):
        app.get_functions()[0].get_user_function()({"build_id": "b"})
