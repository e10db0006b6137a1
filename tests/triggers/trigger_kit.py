"""Helpers for the trigger tests: the user functions under the SDK's decorators, a fake client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SUB = "11111111-1111-1111-1111-111111111111"
FOREIGN = "99999999-9999-9999-9999-999999999999"
TOPIC = f"/subscriptions/{SUB}/resourceGroups/rg-eg/providers/Microsoft.EventGrid/topics/factory"
MARKETPLACE = {
    "publisher": "MicrosoftWindowsDesktop",
    "offer": "windows-11",
    "sku": "win11-25h2-avd",
    "version": "26100.4061.250601",
    "location": "westeurope",
}


def user_function(builder: Any) -> Callable[..., Any]:
    """The function as written, under the blueprint's FunctionBuilder and durable-client wrapper.

    The durable decorator turns the binding's JSON string into a client and calls the original,
    which it keeps as ``__wrapped__``; the tests hand that original a fake client.
    """
    wrapped = builder._function._func
    return getattr(wrapped, "__wrapped__", wrapped)


@dataclass
class _Status:
    runtime_status: Any


@dataclass
class _Value:
    value: str


@dataclass
class _EntityState:
    entity_exists: bool = False
    entity_state: Any = None


@dataclass
class FakeClient:
    """Records what a trigger asks of the durable client; ``fail`` makes a call raise."""

    running: set[str] = field(default_factory=set)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    fail: dict[str, BaseException] = field(default_factory=dict)

    def _maybe_fail(self, name: str) -> None:
        if name in self.fail:
            raise self.fail[name]

    async def get_status(self, instance_id: str) -> _Status:
        self._maybe_fail("get_status")
        return _Status(_Value("Running") if instance_id in self.running else None)

    async def start_new(self, name: str, instance_id: str, payload: Any) -> str:
        self._maybe_fail("start_new")
        self.calls.append(("start_new", name, instance_id, payload))
        self.running.add(instance_id)
        return instance_id

    async def raise_event(self, instance_id: str, event: str, payload: Any) -> None:
        self._maybe_fail("raise_event")
        self.calls.append(("raise_event", instance_id, event, payload))

    async def read_entity_state(self, entity: Any) -> Any:
        self._maybe_fail("read_entity_state")
        return _EntityState()

    async def signal_entity(self, entity: Any, operation: str, payload: Any = None) -> None:
        self._maybe_fail("signal_entity")
        self.calls.append(("signal_entity", str(entity), operation, payload))

    def create_http_management_payload(self, instance_id: str) -> dict[str, str]:
        return {
            "statusQueryGetUri": f"http://host/runtime/webhooks/durabletask/instances/{instance_id}"
        }

    def raised(self) -> list[tuple[str, str, Any]]:
        return [(c[1], c[2], c[3]) for c in self.calls if c[0] == "raise_event"]

    def started(self) -> list[tuple[str, str, Any]]:
        """(orchestrator, instance id, input) of every start_new."""
        return [(c[1], c[2], c[3]) for c in self.calls if c[0] == "start_new"]


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)
