"""The emulator's Event Grid delivers resource events as Azure's does, as far as a subscriber sees.

Published when the operation completes (the LRO's end in host time), delivered seconds later
(seeded), in no guaranteed order, now and then twice, and - as a seeded fault - not at all.
The delivery mechanics run here on a fake host whose schedule the test drives, so each
property is checked on exact host times.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from emulator.events import (
    DUPLICATED_FLAG,
    LOST_FLAG,
    WRITE_SUCCESS,
    DeliveryModel,
    EventPublisher,
)
from emulator.faults import FaultInjector

T0 = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
SUB = "00000000-0000-0000-0000-000000000001"
RG = f"/subscriptions/{SUB}/resourceGroups/rg-image-factory/providers/Microsoft.Compute"
VM = f"{RG}/virtualMachines/vm-a"


class FakeHost:
    """What the publisher needs from the emulator, with a schedule the test runs."""

    tenant_id = "tenant"

    def __init__(self, seed: int = 7) -> None:
        self.t = T0
        self.scenario = SimpleNamespace(seed=seed)
        self.faults = FaultInjector(seed)
        self.scheduled: list[tuple[datetime, int, Callable[[], None]]] = []
        self._n = 0

    def now(self) -> datetime:
        return self.t

    def new_id(self) -> str:
        self._n += 1
        return f"id-{self._n:04d}"

    def work_enter(self) -> None:
        return None

    def work_leave(self) -> None:
        return None

    def schedule_call(self, delay: timedelta, fn: Callable[[], None], label: str) -> object:
        self._n += 1
        self.scheduled.append((self.t + delay, self._n, fn))
        return None

    def operation_context(self) -> dict[str, str]:
        return {}


class World:
    def __init__(self, seed: int = 7, model: DeliveryModel | None = None) -> None:
        self.host = FakeHost(seed)
        self.pub = EventPublisher(self.host)
        self.pub.reset()
        if model is not None:
            self.pub.model = model
        self.received: list[tuple[datetime, str]] = []  # (host time, event id)

        def post(url: str, body: bytes, headers: dict[str, str], method: str = "POST") -> Any:
            import json

            for event in json.loads(body):
                self.received.append((self.host.t, event["id"]))
            return 200, b"", {}

        self.pub._post = post  # type: ignore[method-assign]
        self.pub.subscribe(
            {
                "name": "app",
                "endpoint": "http://127.0.0.1:1/hook",
                "includedEventTypes": [WRITE_SUCCESS],
                "subjectBeginsWith": f"/subscriptions/{SUB}/resourcegroups/RG-IMAGE-FACTORY/",
            }
        )

    def deliver_queued(self) -> None:
        while not self.pub._queue.empty():
            job = self.pub._queue.get_nowait()
            if job is not None:
                self.pub._deliver(job)

    def run(self, until: timedelta = timedelta(hours=1)) -> None:
        """Run everything due up to T0 + until, in host-time order."""
        self.deliver_queued()
        while self.host.scheduled:
            self.host.scheduled.sort(key=lambda item: (item[0], item[1]))
            due, _, fn = self.host.scheduled[0]
            if due > T0 + until:
                return
            self.host.scheduled.pop(0)
            self.host.t = max(self.host.t, due)
            fn()
            self.deliver_queued()

    def publish_at(self, seconds: float, resource: str = VM) -> str:
        self.host.t = T0 + timedelta(seconds=seconds)
        return self.pub.resource_write(resource).id


def test_a_delivery_leaves_seconds_after_the_event_not_at_once() -> None:
    w = World()
    event_id = w.publish_at(0)
    w.deliver_queued()
    assert w.received == []  # nothing at the instant of publication
    w.run()
    ((at, _),) = [r for r in w.received if r[1] == event_id]
    assert timedelta(seconds=1) <= at - T0 <= timedelta(seconds=30)


def test_deliveries_come_in_no_guaranteed_order() -> None:
    w = World(model=DeliveryModel(duplicate_probability=0.0))
    published = [w.publish_at(i * 0.5, f"{VM}{i}") for i in range(40)]
    w.run()
    got = [event_id for _, event_id in w.received]
    assert sorted(got) == sorted(published)  # every one arrived, exactly once
    assert got != published  # but not in the order they were published


def test_a_lost_event_fault_drops_the_delivery_silently() -> None:
    w = World()
    w.host.faults.add(
        {
            "type": "flag",
            "kind": LOST_FLAG,
            "match": {"operation": "Microsoft.Compute/virtualMachines/write"},
        }
    )
    w.publish_at(0)
    w.run()
    assert w.received == []
    assert w.pub.stats.lost == 1
    assert w.pub.lost[0].subscription == "app"
    assert w.pub.events(WRITE_SUCCESS)  # published all the same: only the delivery was lost


def test_a_duplicated_event_arrives_twice_with_the_same_id() -> None:
    w = World(model=DeliveryModel(duplicate_probability=0.0))
    w.host.faults.add({"type": "flag", "kind": DUPLICATED_FLAG})
    event_id = w.publish_at(0)
    w.run()
    times = [at for at, got in w.received if got == event_id]
    assert len(times) == 2
    assert times[0] < times[1]


def test_the_default_model_duplicates_now_and_then_and_has_a_tail() -> None:
    import random

    model = DeliveryModel()
    rng = random.Random("test")
    delays = [model.delay(rng).total_seconds() for _ in range(2000)]
    copies = [model.duplicate(rng) for _ in range(2000)]
    assert min(delays) >= 1.0
    assert max(delays) <= 30.0
    assert 0.02 < sum(d > 5.0 for d in delays) / len(delays) < 0.10  # the 5 % tail
    assert 10 <= sum(c is not None for c in copies) <= 80  # about 2 %


def test_same_seed_same_delays_other_seed_other_delays() -> None:
    def times(seed: int) -> list[datetime]:
        w = World(seed)
        for i in range(10):
            w.publish_at(i, f"{VM}{i}")
        w.run()
        return [at for at, _ in w.received]

    assert times(1) == times(1)
    assert times(1) != times(2)


@pytest.mark.parametrize(
    ("subject", "delivered"),
    [
        (VM, True),
        (VM.replace("rg-image-factory", "rg-other"), False),
        (VM.replace(SUB, "99999999-9999-9999-9999-999999999999"), False),
    ],
)
def test_subject_prefix_filter_is_case_insensitive_as_event_grids(
    subject: str, delivered: bool
) -> None:
    w = World()
    w.publish_at(0, subject)
    w.run()
    assert bool(w.received) is delivered


def test_a_resource_event_is_published_when_the_operation_completes(emulator_env: Any) -> None:
    emulator_env.create_vm("ev1")
    emulator_env.wait_idle()
    emu = emulator_env.emu
    with emu.lock:
        (op,) = [
            o
            for o in emu.lro.operations.values()
            if o.op == "Microsoft.Compute/virtualMachines/write" and o.resource_id.endswith("/ev1")
        ]
    (event,) = [e for e in emu.events.events(WRITE_SUCCESS) if e.subject.endswith("/ev1")]
    assert op.end is not None
    assert event.event_time == op.end  # at the LRO's end ...
    assert event.event_time > op.start  # ... not when it was accepted
    assert event.data["operationName"] == "Microsoft.Compute/virtualMachines/write"
    assert event.data["resourceUri"] == event.subject
