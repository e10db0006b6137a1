"""The build queue: its entity's state machine, and the real queue on the devhost in virtual time.

The hand-over tests act at every step of the engine (after each committed orchestration episode
or entity batch) while a queue hands over from one build to the next: a request raised there
must be built exactly once, and no request may be lost, whatever the interleaving.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from devhost.host import DevHost
from orchestrators import build_queue as q
from shared import names
from shared.domain.naming import build_resource_names

IMAGE = "img"


# -- the state machine --------------------------------------------------------------------------
def fresh() -> dict[str, Any]:
    return {**q.empty_state(), "image": IMAGE}


def enq(state: dict[str, Any], key: str, requester: str = "r") -> dict[str, Any]:
    return q.enqueue(state, {"key": key, "requester": requester, "at": "t"})


def test_the_first_request_becomes_the_runner_and_later_ones_queue() -> None:
    state = fresh()
    assert enq(state, "a", "ra") == {
        "outcome": "accepted",
        "build_id": "img-000001",
        "runner": True,
    }
    assert enq(state, "b", "rb") == {
        "outcome": "accepted",
        "build_id": "img-000002",
        "runner": False,
    }
    assert enq(state, "a", "ra2")["outcome"] == "duplicate"
    assert q.next_build(state, {"runner": "rb"}) == {"build": None, "reason": "the runner is ra"}
    first = q.next_build(state, {"runner": "ra", "outcome": None})["build"]
    assert first["build_id"] == "img-000001"
    assert q.next_build(state, {"runner": "ra"})["build"]["build_id"] == "img-000001"  # asked again
    done = {"build_id": "img-000001", "status": "staged", "version": "1.0.0"}
    second = q.next_build(state, {"runner": "ra", "outcome": done})["build"]
    assert second["build_id"] == "img-000002"
    assert enq(state, "a")["outcome"] == "duplicate"  # built: never again
    assert enq(state, "b")["build_id"] == "img-000002"  # running: the same build
    done2 = {"build_id": "img-000002", "status": "staged"}
    assert q.next_build(state, {"runner": "ra", "outcome": done2}) == {"build": None}
    assert state["runner"] is None
    assert enq(state, "c", "rc") == {
        "outcome": "accepted",
        "build_id": "img-000003",
        "runner": True,
    }


def test_a_failed_key_is_retried_at_most_three_times() -> None:
    state = fresh()
    for attempt in range(1, 4):
        answer = enq(state, "k", f"r{attempt}")
        assert answer["outcome"] == "accepted"
        build = q.next_build(state, {"runner": f"r{attempt}"})["build"]
        failed = {"build_id": build["build_id"], "status": "failed", "error": "boom"}
        assert q.next_build(state, {"runner": f"r{attempt}", "outcome": failed}) == {"build": None}
        assert state["keys"]["k"]["attempts"] == attempt
    refused = enq(state, "k", "r4")
    assert refused["outcome"] == "refused"
    assert "failed 3 times" in refused["reason"]
    assert state["seq"] == 3


def test_release_frees_a_lost_runner_and_counts_its_build_as_failed() -> None:
    state = fresh()
    enq(state, "a", "dead")
    enq(state, "b", "x")
    q.next_build(state, {"runner": "dead"})
    assert q.release(state, {"runner": "someone-else"}) == {"released": False}
    assert q.release(state, {"runner": "dead"}) == {"released": True, "pending": 1}
    assert state["keys"]["a"] == {"attempts": 1, "status": "failed", "build_id": "img-000001"}
    assert enq(state, "c", "new")["runner"] is True
    assert q.next_build(state, {"runner": "new"})["build"]["key"] == "b"


def test_keys_are_bounded_and_live_keys_are_never_forgotten() -> None:
    state = fresh()
    enq(state, "live", "r")
    for n in range(q.KEYS_KEPT + 10):
        state["keys"][f"old-{n}"] = {"attempts": 0, "status": "staged", "build_id": f"x{n}"}
    enq(state, "one-more", "r")
    assert len(state["keys"]) == q.KEYS_KEPT
    assert "live" in state["keys"]
    assert "old-0" not in state["keys"]


# -- the real queue on the devhost ------------------------------------------------------------
@contextmanager
def queue_host(tmp_path: Path) -> Iterator[DevHost]:
    from tests.orchestrators import queue_app

    with DevHost(queue_app.app, app_dir=tmp_path, settings={}, virtual_time=True) as host:
        yield host


def ask(host: DevHost, key: str) -> dict[str, Any]:
    request = urllib.request.Request(f"{host.url}/api/request/{IMAGE}/{key}", method="POST")
    with urllib.request.urlopen(request, timeout=30) as reply:
        answer: dict[str, Any] = json.loads(reply.read())
    return answer


def builds(host: DevHost) -> list[dict[str, Any]]:
    found, _ = host.engine.query(instance_id_prefix="build:", show_input=True)
    return found


def settle(host: DevHost) -> dict[str, Any]:
    """Run virtual time until nothing moves; the queue's final state."""
    host.clock.resume()
    deadline = time.monotonic() + 60
    while True:
        host.engine.wait_idle(60)
        if host.engine.participant.next_due() is None:
            break  # no timer left: every build ended
        assert time.monotonic() < deadline, "the queue never settled"
        time.sleep(0.005)
    exists, state = host.engine.read_entity(names.ENTITY_BUILD_QUEUE, IMAGE)
    assert exists
    assert state is not None
    value: dict[str, Any] = json.loads(state)
    return value


def assert_each_built_once(host: DevHost, keys: list[str]) -> None:
    done = builds(host)
    by_key: dict[str, list[str]] = {}
    for build in done:
        assert build["runtimeStatus"] == "Completed", build
        by_key.setdefault(build["input"]["request"]["key"], []).append(build["instanceId"])
    requests, _ = host.engine.query(instance_id_prefix="build-request:")
    _, state = host.engine.read_entity(names.ENTITY_BUILD_QUEUE, IMAGE)
    seen = [(r["instanceId"], r["runtimeStatus"], r["output"]) for r in requests]
    why = f"queue {state}; requests {seen}"
    assert {k: len(v) for k, v in by_key.items()} == {k: 1 for k in keys}, why
    assert {r["runtimeStatus"] for r in requests} == {"Completed"}


def handover(tmp_path: Path, at: int | None = None, *, every: int = 0) -> int:
    """Build 'a' then 'b' while requesting 'c' after engine step ``at`` (or after each of the
    first ``every`` steps) from the moment 'a' may end; check each key was built once. The
    number of steps seen.

    A step count beyond the run's last step requests 'c' once the queue is idle again.
    """
    with queue_host(tmp_path) as host:
        host.clock.pause()
        assert ask(host, "a")["outcome"] == "submitted"
        assert ask(host, "b")["outcome"] == "submitted"
        host.engine.wait_idle(30)  # 'a' runs, 'b' waits; the clock holds a's ten minutes
        steps = 0
        asked: list[str] = []

        def on_step(_instance: str) -> None:
            nonlocal steps
            steps += 1
            if steps <= every or steps == at:
                answer = ask(host, "c")
                asked.append(answer["outcome"])
                assert answer["outcome"] in ("submitted", "in progress"), (steps, answer)

        host.engine.on_step = on_step
        state = settle(host)
        host.engine.on_step = None
        keys = ["a", "b"]
        if at is not None or every:
            keys.append("c")
            if not asked:
                assert ask(host, "c")["outcome"] == "submitted"
            state = settle(host)
            assert asked.count("submitted") <= 1 or every
        assert_each_built_once(host, keys)
        assert (state["runner"], state["pending"], state["running"]) == (None, [], None)
        ids = [b["input"]["build_id"] for b in builds(host)]
        assert sorted(ids) == [names.sequenced_build_id(IMAGE, n) for n in range(1, len(keys) + 1)]
        return steps


def test_a_request_raised_at_any_step_of_the_hand_over_is_built_exactly_once(
    tmp_path: Path,
) -> None:
    total = handover(tmp_path / "plain")
    assert total >= 8  # a ends, the runner records it, continues, takes b, b runs and ends...
    for at in range(1, total + 2):
        handover(tmp_path / f"at-{at}", at)


def test_the_same_request_raised_at_every_step_builds_once(tmp_path: Path) -> None:
    # Each repeat adds steps of its own (its request, the queue noting it): bounded here.
    handover(tmp_path / "each", every=handover(tmp_path / "plain"))


def test_fifty_requests_at_one_instant_get_fifty_distinct_builds(tmp_path: Path) -> None:
    keys = [f"k{n:02d}" for n in range(50)]
    with queue_host(tmp_path) as host:
        host.clock.pause()
        for key in keys:
            assert ask(host, key)["outcome"] == "submitted"
        for key in keys[:5]:  # repeats at the same instant change nothing
            assert ask(host, key)["outcome"] in ("submitted", "in progress")
        state = settle(host)
        assert_each_built_once(host, keys)
        ids = [b["input"]["build_id"] for b in builds(host)]
        assert len(set(ids)) == 50
        assert state["seq"] == 50
        names_per_build = [build_resource_names(IMAGE, i).to_dict() for i in ids]
        for field in names_per_build[0]:
            assert len({n[field] for n in names_per_build}) == 50, field
        # One at a time: each build starts after the previous one ended.
        done = sorted(builds(host), key=lambda b: b["input"]["build_id"])
        for before, after in itertools.pairwise(done):
            assert after["createdTime"] >= before["lastUpdatedTime"]


def test_a_failing_key_is_built_three_times_then_refused(tmp_path: Path) -> None:
    with queue_host(tmp_path) as host:
        for attempt in range(3):
            assert ask(host, "fail-x")["outcome"] == "submitted"
            state = settle(host)
            assert state["keys"]["fail-x"] == {
                "attempts": attempt + 1,
                "status": "failed",
                "build_id": names.sequenced_build_id(IMAGE, attempt + 1),
            }
        ask(host, "fail-x")
        state = settle(host)
        assert state["recent"][-1]["dropped"].startswith("failed 3 times")
        assert len(builds(host)) == 3


def test_a_terminated_runner_is_released_by_the_next_request(tmp_path: Path) -> None:
    with queue_host(tmp_path) as host:
        host.clock.pause()
        ask(host, "a")
        ask(host, "b")
        host.engine.wait_idle(30)
        runner = names.build_request_instance_id(IMAGE, "a")
        host.engine.terminate(runner, "operator")
        host.engine.wait_idle(30)
        assert ask(host, "c")["outcome"] == "submitted"
        state = settle(host)
        assert state["runner"] is None
        assert state["keys"]["a"]["status"] == "failed"
        built = {
            b["input"]["request"]["key"] for b in builds(host) if b["runtimeStatus"] == "Completed"
        }
        # Terminating an orchestration leaves its sub-orchestrations running (as on Azure): the
        # build of 'a' ends, but its outcome had nobody to report it, so it counts as failed.
        assert built == {"a", "b", "c"}
        assert state["recent"][0]["error"] == "runner ended"


def test_the_lost_runner_asked_again_releases_itself_and_retries(tmp_path: Path) -> None:
    with queue_host(tmp_path) as host:
        host.clock.pause()
        ask(host, "a")
        host.engine.wait_idle(30)
        host.engine.terminate(names.build_request_instance_id(IMAGE, "a"), "operator")
        host.engine.terminate(names.build_instance_id(names.sequenced_build_id(IMAGE, 1)), "op")
        host.engine.wait_idle(30)
        assert ask(host, "a")["outcome"] == "submitted"
        state = settle(host)
        assert state["runner"] is None
        assert state["keys"]["a"] == {
            "attempts": 1,
            "status": "staged",
            "build_id": names.sequenced_build_id(IMAGE, 2),
        }


def test_build_ids_are_the_image_and_a_six_digit_sequence() -> None:
    assert names.sequenced_build_id("win11-office", 42) == "win11-office-000042"
    with pytest.raises(ValueError, match="starts at 1"):
        names.sequenced_build_id("x", 0)
    assert len(names.build_request_instance_id("i" * 40, "k" * 500)) <= 100
    assert names.build_request_instance_id("i", "a") != names.build_request_instance_id("i", "b")
